import { once } from 'node:events';
import { type DescMessage, type MessageShape, toJson } from '@bufbuild/protobuf';

/**
 * Where commands print. Writes wait for the pipe to drain, so a slow reader (`| less`) slows a
 * stream down instead of growing memory.
 */
export class Output {
  constructor(
    readonly json: boolean,
    readonly stdout: NodeJS.WritableStream = process.stdout,
    readonly stderr: NodeJS.WritableStream = process.stderr,
  ) {}

  /** Whether stdout is a terminal (where text from guests and requests is shown escaped). */
  get isTerminal(): boolean {
    return (this.stdout as { isTTY?: boolean }).isTTY === true;
  }

  async write(text: string | Uint8Array): Promise<void> {
    if (!this.stdout.write(text)) await once(this.stdout, 'drain');
  }

  /** A response as protobuf JSON (what `buf curl` and grpcurl print): indented, or one line for streams. */
  async message<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, oneLine = false): Promise<void> {
    const json = toJson(schema, message);
    await this.write(`${oneLine ? JSON.stringify(json) : JSON.stringify(json, null, 2)}\n`);
  }

  warn(text: string): void {
    this.stderr.write(text);
  }
}
