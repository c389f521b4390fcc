import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { VmProcessClient } from '../client/vm-process-client.js';
import { packageRoot } from '../package-paths.js';
import { ExitCode } from './exit-codes.js';
import { describeFailure, type FailureContext } from './failure.js';
import { clientOptions, collect, collectEventKind, DEFAULT_ADDRESS, EVENT_KIND_NAMES, type GlobalOptions, normaliseAddress, parseCount, parseSequence } from './options.js';
import type { EventKind } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { Output } from './output.js';
import { getCommand, listCommand, signalCommand, startCommand, type StartFlags, stopCommand, waitCommand } from './process-commands.js';
import { eventsCommand, logsCommand, watchCommand } from './stream-commands.js';
import { countersCommand, infoCommand, pauseCommand, resizeCommand, resumeCommand, snapshotCommand } from './vm-commands.js';

const HELP_AFTER = `
Address: --address, else VMPROCD_ADDRESS, else ${DEFAULT_ADDRESS}.
Durations: 500ms, 5s, 2m, 1h30m.

Exit codes (every command):
  0  done (wait: the VMM exited with code 0)
  1  the call failed: the daemon answered with an error or could not be reached
  2  usage error: unknown command or flag, missing or malformed argument (nothing was sent)
  3  wait only: the VMM ended otherwise (non-zero code, signal, failed start, lost)

Examples:
  vmprocctl start sb-1 --kernel /srv/vmlinux --rootfs /srv/rootfs.ext4 --netns sb-1 --label team=a
  vmprocctl start sb-2 --kernel /srv/vmlinux --rootfs /srv/rootfs.ext4 --netns sb-2 \
    --vcpus 2 --memory 512 --cmdline "console=ttyS0" --net id=net0,tap=tap0
  vmprocctl snapshot sb-2 /srv/vmprocd/snapshots/sb-2-1 --then resume
  vmprocctl list --state running --label team=a
  vmprocctl watch --json | jq -c 'select(.reason != "EXIT_REASON_STOPPED")'
  vmprocctl events --sandbox sb-2 --kind paused --kind guest_panic
  vmprocctl stop sb-1 --grace 5s
`;

export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

type CommandBody = (client: VmProcessClient, out: Output) => Promise<ExitCode>;

/** Runs one vmprocctl invocation (`argv` without node and the script) and returns its exit code. */
export async function runCli(argv: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let exitCode: number = ExitCode.OK;
  const context: { -readonly [K in keyof FailureContext]: FailureContext[K] } = { command: '', address: DEFAULT_ADDRESS };
  let client: VmProcessClient | undefined;

  /** Wraps a command: global options, the client, and the body's exit code. */
  const run = (name: string, sandboxId: string | undefined, command: Command, body: CommandBody) => {
    const globals = command.optsWithGlobals<GlobalOptions>();
    context.command = name;
    context.address = normaliseAddress(globals.address);
    if (sandboxId !== undefined) context.sandboxId = sandboxId;
    context.tls = globals.tlsCa !== undefined;
    const options = clientOptions(globals);
    client = new VmProcessClient(context.address, options);
    return body(client, new Output(globals.json === true, io.stdout, io.stderr)).then((code) => {
      exitCode = code;
    });
  };

  const program = new Command('vmprocctl')
    .description('Control vmprocd, the Cloud Hypervisor VMM supervisor, over gRPC.')
    .version(packageVersion(), '-V, --version')
    .addOption(new Option('--address <target>', 'vmprocd address: unix:///PATH, a socket path, or HOST:PORT').env('VMPROCD_ADDRESS').default(DEFAULT_ADDRESS))
    .option('--timeout <duration>', 'deadline of each call (default 30s; start adds its ready timeout, stop its grace period; wait: none unless given)')
    .option('--json', 'print protobuf JSON, as buf curl and grpcurl do (watch: one object per line)')
    .option('--tls-ca <file>', "PEM CA that signed the daemon's certificate (enables TLS)")
    .option('--tls-cert <file>', 'PEM client certificate, for a daemon that requires one')
    .option('--tls-key <file>', 'PEM key of --tls-cert')
    .option('--tls-server-name <name>', "name to check the daemon's certificate against (for a unix socket, or another name)")
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('after', HELP_AFTER)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      outputError: (text, write) => write(`vmprocctl: ${text.replace(/^error: /, '')}`),
    })
    .showHelpAfterError('(add --help for usage)');

  program
    .command('start')
    .description('launch a VMM (fresh boot or snapshot restore) and wait until it is ready')
    .argument('<sandbox-id>', 'unique among live processes: letters, digits, _ . - (at most 63)')
    .addOption(new Option('--mode <mode>', 'boot a kernel, or restore a snapshot (default: restore with --restore-source, else boot)').choices(['boot', 'restore']))
    .option('--kernel <path>', 'guest kernel (boot mode only)')
    .requiredOption('--rootfs <path>', 'root file system image')
    .requiredOption('--netns <name>', 'network namespace the VMM runs in (see: ip netns list)')
    .option('--socket <path>', "VMM API socket (default: the daemon's <run-dir>/<sandbox-id>.sock)")
    .option('--sandbox-dir <dir>', "where the VMM sees its kernel and rootfs (default: the daemon's --sandbox-dir)")
    .option('--ready-timeout <duration>', 'how long the VMM may take to be ready, restore included (daemon default 5s)')
    .option('--restore-source <url>', 'snapshot directory as file:///DIR (restore mode)')
    .addOption(new Option('--restore-mode <mode>', 'how guest memory is restored (default: the VMM\'s, copy)').choices(['copy', 'on-demand']))
    .option('--resume', 'resume the VM after the restore (otherwise it stays paused)')
    .option('--prefault', 'prefault guest memory at restore (not with on-demand)')
    .option('--label <key=value>', 'a label, echoed in list and exits (repeatable)', collect)
    .option('--vcpus <n>', 'create and boot a VM with this many vCPUs (with --memory)')
    .option('--max-vcpus <n>', 'vCPUs a resize may go up to (default --vcpus)')
    .option('--memory <mib>', 'the VM\'s memory in MiB (with --vcpus)')
    .option('--max-memory <mib>', 'memory a resize may go up to, in MiB (default --memory)')
    .option('--cmdline <text>', 'the kernel command line, e.g. "console=ttyS0"')
    .option('--initramfs <path>', 'an initramfs for the VM')
    .option('--rootfs-readonly', 'the rootfs disk is read-only')
    .option('--disk <id=ID,path=PATH[,readonly]>', 'one more disk (repeatable; in restore mode: the snapshot\'s extra disks)', collect)
    .option('--net <id=ID,tap=TAP[,mac=MAC]>', 'a network interface on a TAP in the netns (repeatable)', collect)
    .addOption(new Option('--serial <where>', 'the guest\'s serial console: into the VMM\'s log (default), or off').choices(['log', 'off']))
    .option('--vsock-cid <cid>', 'a vsock device with this guest CID (3 or more)')
    .option('--pvpanic', 'a pvpanic device, for the guest to report a panic')
    .action((sandboxId: string, flags: StartFlags, command: Command) =>
      run('start', sandboxId, command, (c, out) => startCommand(c, out, sandboxId, flags)));

  program
    .command('pause')
    .description('pause the VM (its vCPUs stop; memory and devices stay)')
    .argument('<sandbox-id>')
    .action((sandboxId: string, _flags: unknown, command: Command) => run('pause', sandboxId, command, (c, out) => pauseCommand(c, out, sandboxId)));

  program
    .command('resume')
    .description('resume a paused VM')
    .argument('<sandbox-id>')
    .action((sandboxId: string, _flags: unknown, command: Command) => run('resume', sandboxId, command, (c, out) => resumeCommand(c, out, sandboxId)));

  program
    .command('snapshot')
    .description('snapshot the VM into a new directory under an image root (a restore source)')
    .argument('<sandbox-id>')
    .argument('<destination>', 'the directory to create, as file:///DIR or /DIR')
    .addOption(new Option('--then <what>', 'afterwards: resume the VM (a checkpoint), keep it paused, or stop the VMM (hibernate)').choices(['resume', 'pause', 'stop']).makeOptionMandatory())
    .action((sandboxId: string, destination: string, flags: { then: string }, command: Command) =>
      run('snapshot', sandboxId, command, (c, out) => snapshotCommand(c, out, sandboxId, destination, flags)));

  program
    .command('info')
    .description('show the VM: state, vCPUs, memory, devices (--json: also Cloud Hypervisor\'s own JSON)')
    .argument('<sandbox-id>')
    .action((sandboxId: string, _flags: unknown, command: Command) => run('info', sandboxId, command, (c, out) => infoCommand(c, out, sandboxId)));

  program
    .command('counters')
    .description("show the VM's per-device counters")
    .argument('<sandbox-id>')
    .action((sandboxId: string, _flags: unknown, command: Command) => run('counters', sandboxId, command, (c, out) => countersCommand(c, out, sandboxId)));

  program
    .command('resize')
    .description("change the VM's vCPUs, memory or balloon")
    .argument('<sandbox-id>')
    .option('--vcpus <n>', 'vCPUs wanted (up to the VM\'s max vCPUs)')
    .option('--memory <mib>', 'memory wanted, in MiB (up to its max memory)')
    .option('--balloon <mib>', 'the balloon\'s size, in MiB')
    .action((sandboxId: string, flags: { vcpus?: string; memory?: string; balloon?: string }, command: Command) =>
      run('resize', sandboxId, command, (c, out) => resizeCommand(c, out, sandboxId, flags)));

  program
    .command('stop')
    .description('SIGTERM the VMM, SIGKILL it after the grace period, and return once it has exited')
    .argument('<sandbox-id>')
    .option('--grace <duration>', 'time between SIGTERM and SIGKILL (daemon default 10s; 0 kills at once)')
    .action((sandboxId: string, flags: { grace?: string }, command: Command) =>
      run('stop', sandboxId, command, (c, out) => stopCommand(c, out, sandboxId, flags)));

  program
    .command('signal')
    .description("send a signal to the VMM's process group")
    .argument('<sandbox-id>')
    .argument('<signal>', 'a name, with or without SIG: TERM, KILL, USR1, SIGCONT')
    .action((sandboxId: string, signal: string, _flags: unknown, command: Command) =>
      run('signal', sandboxId, command, (c, out) => signalCommand(c, out, sandboxId, signal)));

  program
    .command('get')
    .description('show one process, its exit included')
    .argument('<sandbox-id>')
    .action((sandboxId: string, _flags: unknown, command: Command) =>
      run('get', sandboxId, command, (c, out) => getCommand(c, out, sandboxId)));

  program
    .command('list')
    .description('list processes (with --json, also the latest exit sequence, to watch from)')
    .option('--state <state>', 'only starting, running, stopping or exited (repeatable, or comma-separated)', collect)
    .option('--label <key=value>', 'only processes with this label (repeatable: all must match)', collect)
    .action((flags: { state?: string[]; label?: string[] }, command: Command) =>
      run('list', undefined, command, (c, out) => listCommand(c, out, flags)));

  program
    .command('wait')
    .description('block until the process has exited; exit 0 if it exited with code 0, else 3')
    .argument('<sandbox-id>')
    .action((sandboxId: string, _flags: unknown, command: Command) =>
      run('wait', sandboxId, command, (c, out) => waitCommand(c, out, sandboxId, command.optsWithGlobals<GlobalOptions>().timeout)));

  program
    .command('watch')
    .description('print every exit as it happens, surviving daemon restarts without a gap or duplicate')
    .option('--after <sequence>', 'first replay retained exits after this sequence (default: only new exits)', parseSequence)
    .option('--sandbox <sandbox-id>', 'only exits of this sandbox (repeatable)', collect)
    .action((flags: { after?: bigint; sandbox?: string[] }, command: Command) =>
      run('watch', undefined, command, (c, out) => watchCommand(c, out, flags)));

  program
    .command('events')
    .description('print every lifecycle event (started, ready, paused, snapshotted, guest panic, exited...) as it happens, surviving daemon restarts')
    .option('--after <sequence>', 'first replay retained events after this sequence (default: only new events)', parseSequence)
    .option('--sandbox <sandbox-id>', 'only events of this sandbox (repeatable)', collect)
    .option('--kind <kind>', `only events of this kind (repeatable): ${EVENT_KIND_NAMES.join(', ')}`, collectEventKind)
    .option('--progress', 'also print the progress markers a filtered stream gets')
    .action((flags: { after?: bigint; sandbox?: string[]; kind?: EventKind[]; progress?: boolean }, command: Command) =>
      run('events', undefined, command, (c, out) => eventsCommand(c, out, flags)));

  program
    .command('logs')
    .description("print the VMM's output (stdout and stderr)")
    .argument('<sandbox-id>')
    .option('--tail <lines>', 'start this many lines before the end', parseCount)
    .option('-f, --follow', 'keep printing what the VMM writes until it exits')
    .option('--raw', 'print the bytes as they are even on a terminal (control characters are escaped there otherwise)')
    .action((sandboxId: string, flags: { tail?: number; follow?: boolean; raw?: boolean }, command: Command) =>
      run('logs', sandboxId, command, (c, out) => logsCommand(c, out, sandboxId, flags)));

  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version asked for are a success; help shown for want of a command is a usage error.
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' ? ExitCode.OK : ExitCode.USAGE;
    }
    const failure = describeFailure(error, context);
    io.stderr.write(failure.text);
    return failure.exitCode;
  } finally {
    client?.close();
  }
  return exitCode;
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
