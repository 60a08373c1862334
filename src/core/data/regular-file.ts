/**
 * Reading an input file the user named (`--model`, a PNG for `predict`, an
 * IDX file, a checkpoint) without trusting what it is: `/dev/zero` never
 * ends, a FIFO blocks the reader until someone writes to it, and a file can
 * be larger than anything its format allows. Only regular files are read,
 * and at most a stated number of bytes.
 */
import { constants, type Stats } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

/** A file that is not a regular file, cannot be opened, or is larger than allowed; the message names it. */
export class InputFileError extends Error {
  override name = "InputFileError";
}

/**
 * Opens `path` for reading, refusing anything but a regular file.
 *
 * O_NONBLOCK: opening a FIFO for reading otherwise waits (in a libuv thread
 * that is then lost) until a writer opens it; on a regular file it changes
 * nothing. The type is checked on the opened descriptor, so a file swapped
 * between a check and the open cannot slip through.
 *
 * @param what what the file is, for messages ("the model file")
 * @throws InputFileError naming the file and what it is instead
 */
export async function openRegularFile(
  path: string,
  what: string,
): Promise<{ file: FileHandle; size: number }> {
  let file: FileHandle;
  try {
    file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new InputFileError(`${path}: cannot read ${what}: ${describeOpenError(e)}`);
  }
  const st = await file.stat();
  if (!st.isFile()) {
    await file.close().catch(() => {});
    throw new InputFileError(`${path}: cannot read ${what}: ${kindOf(st)}, not a regular file`);
  }
  return { file, size: st.size };
}

/**
 * Reads a whole regular file of at most `maxBytes` bytes.
 *
 * @param what what the file is, for messages ("the model file")
 * @param maxBytes the largest file its format allows; a larger one is refused unread
 * @throws InputFileError naming the file: not a regular file, unreadable, or too large
 */
export async function readRegularFile(path: string, what: string, maxBytes: number): Promise<Buffer> {
  const { file, size } = await openRegularFile(path, what);
  try {
    if (size > maxBytes) {
      throw new InputFileError(`${path}: ${what} has ${size} bytes; at most ${maxBytes} are accepted for it`);
    }
    // The size from fstat, not "until the end": a file that grows while it is read is cut there.
    const out = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const { bytesRead } = await file.read(out, at, size - at, at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return at === size ? out : out.subarray(0, at);
  } catch (e) {
    if (e instanceof InputFileError) throw e;
    throw new InputFileError(`${path}: cannot read ${what}: ${describeOpenError(e)}`);
  } finally {
    await file.close().catch(() => {});
  }
}

function describeOpenError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EISDIR") return "it is a directory";
  if (code === "EACCES") return "permission denied";
  return code ?? String((e as Error).message ?? e);
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return "it is a directory";
  if (st.isFIFO()) return "it is a FIFO (named pipe)";
  if (st.isCharacterDevice()) return "it is a character device";
  if (st.isBlockDevice()) return "it is a block device";
  if (st.isSocket()) return "it is a socket";
  return "it is a special file";
}
