import type { FileHandle } from 'node:fs/promises';

const NEWLINE = 0x0a;
const BLOCK_BYTES = 64 * 1024;

/**
 * The byte offset where the last `lines` lines of a file of `size` bytes begin: just after the
 * `lines`-th newline from the end, not counting a newline that ends the file (it ends the last
 * line; a last line without one counts as a line too). 0 when the file has no more lines than
 * that. Reads backwards one block at a time, so memory stays at one block whatever the file.
 */
export async function tailOffset(handle: FileHandle, size: number, lines: number): Promise<number> {
  if (size <= 0) return 0;
  if (lines <= 0) return size;
  const block = Buffer.allocUnsafe(Math.min(BLOCK_BYTES, size));
  let remaining = lines;
  let end = size;
  let atFileEnd = true;
  while (end > 0) {
    const start = Math.max(0, end - block.length);
    const { bytesRead } = await handle.read(block, 0, end - start, start);
    let index = bytesRead - 1;
    if (atFileEnd && index >= 0 && block[index] === NEWLINE) index--;
    atFileEnd = false;
    for (; index >= 0; index--) {
      if (block[index] === NEWLINE && --remaining === 0) return start + index + 1;
    }
    end = start;
  }
  return 0;
}
