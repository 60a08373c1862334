/**
 * The coordinator's side of a session's shared-memory directory (layout and
 * why: shared/step-memory.ts): it makes the directory and its proof, writes
 * each version's weights once for every worker on this host, reads the
 * results they leave, and removes the directory when the session ends (and
 * those of this host's coordinators that died without removing theirs).
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writevSync,
} from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { isAlive } from "../core/write-atomic.js";
import type { Logger } from "../shared/log.js";
import {
  hostPart,
  memoryDirName,
  parseMemoryDirName,
  proofFile,
  RESULT_SLOTS,
  resultFile,
  WEIGHTS_FILES,
  WEIGHTS_STAMP_BYTES,
  weightsFile,
  weightsSlot,
} from "../shared/step-memory.js";

/** A session's shared-memory directory, owned by its coordinator. */
export class SessionMemory {
  /** The last version whose weights are in place (-1: none yet). */
  private written = -1;
  /** Writing weights failed once: the data port carries them from then on. */
  private failed = false;
  /** The two weights files, open for writing. */
  private readonly weightsFds: number[];
  /** A version's stamp, written before its weights. */
  private readonly stamp = Buffer.alloc(WEIGHTS_STAMP_BYTES);
  /** Each worker's result files, open for reading once first used (by result-file id). */
  private readonly resultFds = new Map<string, number[]>();
  /** Where result bodies are read to: 8-byte aligned, reused (valid until the next read). */
  private body = Buffer.allocUnsafeSlow(0);

  private constructor(
    /** The directory's path (workers find it in the run spec). */
    readonly dir: string,
    /** What a worker's HELLO must show to use it. */
    readonly proof: string,
    private readonly log: Logger,
  ) {
    this.weightsFds = [];
    try {
      for (let v = 0; v < WEIGHTS_FILES; v++) this.weightsFds.push(openSync(weightsFile(dir, v), "w", 0o600));
    } catch (e) {
      for (const fd of this.weightsFds) closeSync(fd);
      throw e;
    }
  }

  /**
   * Makes the session's directory under `base` (`--shm-dir`), first removing
   * the directories that dead coordinators of this host left. Returns
   * undefined, after saying why in the log, when `base` is not a directory
   * this process can write: every worker then uses the data port alone.
   */
  static open(base: string, session: string, log: Logger): SessionMemory | undefined {
    let dir: string | undefined;
    try {
      if (!statSync(base).isDirectory()) throw new Error("not a directory");
      removeDeadSessions(base);
      dir = join(base, memoryDirName(hostname(), process.pid, session));
      mkdirSync(dir, { mode: 0o700 });
      const proof = randomBytes(16).toString("hex");
      writeFileSync(proofFile(dir), proof, { mode: 0o600 });
      return new SessionMemory(dir, proof, log);
    } catch (e) {
      if (dir) rmSync(dir, { recursive: true, force: true });
      log.info(
        { shmDir: base, err: (e as Error).message },
        "no shared memory for workers on this host (--shm-dir): weights and results go over the data port",
      );
      return undefined;
    }
  }

  /**
   * Puts `version`'s weights in place for workers on this host (once per
   * version: later calls do nothing). Returns false when they could not be
   * written (the directory is full, say): the caller sends them over the
   * data port, and so does every later step (said once in the log).
   */
  publishWeights(version: number, weights: Uint8Array): boolean {
    if (this.failed) return false;
    if (version === this.written) return true;
    try {
      this.stamp.writeUInt32LE(version, 0);
      const bytes = WEIGHTS_STAMP_BYTES + weights.length;
      const n = writevSync(this.weightsFds[weightsSlot(version)], [this.stamp, weights], 0);
      if (n !== bytes) throw new Error(`wrote ${n} of ${bytes} bytes`);
    } catch (e) {
      this.failed = true;
      this.log.warn(
        { shmDir: this.dir, err: (e as Error).message },
        "cannot write the weights to shared memory (--shm-dir); from now on they go over the data port",
      );
      return false;
    }
    this.written = version;
    return true;
  }

  /**
   * The RESULT body that worker `id` left as its `seq`-th result, `bytes`
   * long (at most `maxBytes`), read into an aligned buffer valid until the
   * next call. Throws, naming the file and what is wrong, when it cannot be
   * read or is shorter than `bytes`.
   */
  takeResult(id: string, seq: number, bytes: number, maxBytes: number): Buffer {
    // The path is only needed to open the file once, and to name it in an error.
    const path = () => resultFile(this.dir, id, seq);
    if (bytes > maxBytes)
      throw new Error(`result file ${path()} is said to hold ${bytes} bytes, more than ${maxBytes}`);
    let fds = this.resultFds.get(id);
    if (!fds) {
      fds = [];
      this.resultFds.set(id, fds);
    }
    const slot = seq % RESULT_SLOTS;
    fds[slot] ??= openSync(path(), "r");
    if (this.body.length < bytes) this.body = Buffer.allocUnsafeSlow(Math.max(bytes, 1024));
    const got = readSync(fds[slot], this.body, 0, bytes, 0);
    if (got !== bytes) throw new Error(`result file ${path()} has ${got} bytes, its frame says ${bytes}`);
    return this.body.subarray(0, bytes);
  }

  /** Closes and removes the result files of worker `id` (it left: a worker that comes back has a new id). */
  forget(id: string): void {
    for (const fd of this.resultFds.get(id) ?? []) if (fd !== undefined) closeSync(fd);
    this.resultFds.delete(id);
    for (let slot = 0; slot < RESULT_SLOTS; slot++) rmSync(resultFile(this.dir, id, slot), { force: true });
  }

  /** Closes every file and removes the directory (the session is over). */
  close(): void {
    for (const id of [...this.resultFds.keys()]) this.forget(id);
    for (const fd of this.weightsFds) closeSync(fd);
    this.weightsFds.length = 0;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Removes the session directories under `base` of this host's coordinators
 * that no longer run (killed before they could remove theirs). Those of
 * other hosts sharing the directory, and of live processes, are kept.
 */
export function removeDeadSessions(base: string): void {
  const host = hostPart(hostname());
  for (const name of readdirSync(base)) {
    const owner = parseMemoryDirName(name);
    if (!owner || owner.host !== host || owner.pid === process.pid || isAlive(owner.pid)) continue;
    rmSync(join(base, name), { recursive: true, force: true });
  }
}
