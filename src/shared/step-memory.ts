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
 * answer (a 29-byte STEP header, a 13-byte RESULT_FILE frame), so who holds
 * what, deadlines and faults are the data port's as before.
 *
 * The directory, `<base>/gradfleet-<host>-<pid>-<session>` (mode 0700: only
 * the coordinator's user), holds:
 * - `proof`: random text, written once. A worker that can read it sends it in
 *   its HELLO: that proves it sees this directory (same host, same mount),
 *   which the run spec alone (readable from anywhere through Redis) cannot.
 * - `w-<version>`: the weights of a version (paramCount float32, little
 *   endian), written whole under a temporary name and renamed into place
 *   before any STEP of that version is sent, never changed after; the
 *   previous version's file is removed then, since its step is over. A
 *   worker that finds a version's file gone holds a stale order and skips it.
 * - `r-<id>-<seq>`: a RESULT body of the worker whose HELLO gave `id`, its
 *   `seq`-th; the coordinator reads it when the RESULT_FILE frame naming it
 *   arrives, and removes it.
 */
import { join } from "node:path";

/** Directory names start with this (and the coordinator's host name and pid, so a later one can remove a dead one's). */
export const MEMORY_DIR_PREFIX = "gradfleet-";

/** A worker's result-file id: 16 hex digits (checked, since the coordinator builds a path from it). */
export const MEMORY_ID = /^[0-9a-f]{16}$/;

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
  const m = /^gradfleet-(.+)-(\d+)-[0-9a-f]{16}$/.exec(name);
  return m ? { host: m[1], pid: Number(m[2]) } : undefined;
}

/** The proof file of a session directory. */
export function proofFile(dir: string): string {
  return join(dir, "proof");
}

/** The weights file of `version`. */
export function weightsFile(dir: string, version: number): string {
  return join(dir, `w-${version}`);
}

/** The `seq`-th result file of the worker whose id is `id` (see {@link MEMORY_ID}). */
export function resultFile(dir: string, id: string, seq: number): string {
  return join(dir, `r-${id}-${seq}`);
}
