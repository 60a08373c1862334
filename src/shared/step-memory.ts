/**
 * The layout of a session's shared-memory directory, in one place: where
 * workers on the coordinator's host take each version's weights and leave
 * their results, instead of the data port (`--shm-dir`, see
 * docs/design-notes.md, "Shared memory on the coordinator's host").
 *
 * A 437 KB frame through a loopback socket costs each side a few hundred µs of
 * CPU (copies into and out of the kernel's socket buffers in 64 KB pieces,
 * wake-ups, the reader's reassembly); the same bytes through a file in tmpfs
 * cost one copy each way. The socket still carries every order and every
 * answer (a STEP header, a 13-byte RESULT_FILE frame), so who holds what,
 * deadlines and faults are the data port's as before.
 *
 * The directory, `<base>/gradfleet-<host>-<pid>-<session>` (mode 0700: only
 * the coordinator's user), holds fixed files, each kept open by the processes
 * that use it and rewritten in place (a new file per step costs about four
 * times the CPU: page allocation, open, rename, unlink):
 * - `proof`: random text, written once. A worker that can read it sends it in
 *   its HELLO: that proves it sees this directory (same host, same mount),
 *   which the run spec alone (readable from anywhere through Redis) cannot.
 * - `w-0`, `w-1`: the weights of the even and odd versions, each an 8-byte
 *   stamp (the version, u32 LE, then 4 zero bytes) and paramCount float32.
 *   Version v is written into `w-(v mod 2)` before any STEP of v is sent, and
 *   that file is next rewritten for v + 2, which starts only once step v + 1
 *   is over. So a worker reading for the step in hand always finds its
 *   version; one reading for an older step (its range went to another worker)
 *   may find another stamp, and skips the order, or, racing the writer, read
 *   a mix, and then its result is for a version the coordinator has left
 *   behind and is dropped as stale. No lock is needed.
 * - `r-<id>-0`, `r-<id>-1`: the RESULT bodies of the worker whose HELLO gave
 *   `id`, its n-th result in `r-<id>-(n mod 2)`. The coordinator reads it
 *   when the RESULT_FILE frame naming n arrives, and says in each STEP
 *   header how many of the worker's results it has read; a worker rewrites a
 *   file only once the result in it has been read, and otherwise sends the
 *   result over the socket.
 */
import { join } from "node:path";

/** Directory names start with this (and the coordinator's host name and pid, so a later one can remove a dead one's). */
export const MEMORY_DIR_PREFIX = "gradfleet-";

/** A worker's result-file id: 16 hex digits (checked, since the coordinator builds a path from it). */
export const MEMORY_ID = /^[0-9a-f]{16}$/;

/** Bytes before the weights in a weights file: the version's stamp. */
export const WEIGHTS_STAMP_BYTES = 8;

/** Weights files, used in turn by version (see the header: a file is rewritten only once its step is over). */
export const WEIGHTS_FILES = 2;

/** The weights file (0 or 1) of `version`. */
export function weightsSlot(version: number): number {
  return version % WEIGHTS_FILES;
}

/** Result files per worker, used in turn. */
export const RESULT_SLOTS = 2;

/** A host name as a directory name holds it. */
export function hostPart(host: string): string {
  return host.replace(/[^A-Za-z0-9.-]/g, "_");
}

/** The session directory's name under `base`. */
export function memoryDirName(host: string, pid: number, session: string): string {
  return `${MEMORY_DIR_PREFIX}${hostPart(host)}-${pid}-${session}`;
}

/** The host (as {@link hostPart} has it) and pid a directory name of {@link memoryDirName} holds, or undefined for another name. */
export function parseMemoryDirName(name: string): { host: string; pid: number } | undefined {
  const m = new RegExp(`^${MEMORY_DIR_PREFIX}(.+)-(\\d+)-[0-9a-f]{16}$`).exec(name);
  return m ? { host: m[1], pid: Number(m[2]) } : undefined;
}

/** The proof file of a session directory. */
export function proofFile(dir: string): string {
  return join(dir, "proof");
}

/** The file `version`'s weights are written to. */
export function weightsFile(dir: string, version: number): string {
  return join(dir, `w-${weightsSlot(version)}`);
}

/** The file of the `seq`-th result of the worker whose id is `id` (see {@link MEMORY_ID}). */
export function resultFile(dir: string, id: string, seq: number): string {
  return join(dir, `r-${id}-${seq % RESULT_SLOTS}`);
}
