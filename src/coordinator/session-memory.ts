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
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
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
  resultFile,
  weightsFile,
} from "../shared/step-memory.js";

/** A session's shared-memory directory, owned by its coordinator. */
export class SessionMemory {
  /** The last version whose weights file is in place (-1: none yet). */
  private written = -1;
  /** Where result bodies are read to: 8-byte aligned, reused (valid until the next read). */
  private body = Buffer.allocUnsafeSlow(0);

  /** Writing weights failed once: the data port carries them from then on. */
  private failed = false;

  private constructor(
    /** The directory's path (workers find it in the run spec). */
    readonly dir: string,
    /** What a worker's HELLO must show to use it. */
    readonly proof: string,
    private readonly log: Logger,
  ) {}

  /**
   * Makes the session's directory under `base` (`--shm-dir`), first removing
   * the directories that dead coordinators of this host left. Returns
   * undefined, after saying why in the log, when `base` is not a directory
   * this process can write: every worker then uses the data port alone.
   */
  static open(base: string, session: string, log: Logger): SessionMemory | undefined {
    try {
      if (!statSync(base).isDirectory()) throw new Error("not a directory");
      removeDeadSessions(base);
      const dir = join(base, memoryDirName(hostname(), process.pid, session));
      mkdirSync(dir, { mode: 0o700 });
      const proof = randomBytes(16).toString("hex");
      writeFileSync(proofFile(dir), proof, { mode: 0o600 });
      return new SessionMemory(dir, proof, log);
    } catch (e) {
      log.info(
        { shmDir: base, err: (e as Error).message },
        "no shared memory for workers on this host (--shm-dir): weights and results go over the data port",
      );
      return undefined;
    }
  }

  /**
   * Puts `version`'s weights in place for workers on this host (once per
   * version: later calls do nothing), and removes the previous version's,
   * whose step is over. Returns false when they could not be written (the
   * directory is full, or gone): the caller sends them over the data port,
   * and so does every later step (said once in the log).
   */
  publishWeights(version: number, weights: Uint8Array): boolean {
    if (this.failed) return false;
    if (version === this.written) return true;
    const path = weightsFile(this.dir, version);
    try {
      // Written whole, then renamed: a reader sees the complete file or none.
      writeFileSync(`${path}.tmp`, weights);
      renameSync(`${path}.tmp`, path);
      if (this.written >= 0) unlinkSync(weightsFile(this.dir, this.written));
    } catch (e) {
      this.failed = true;
      rmSync(`${path}.tmp`, { force: true });
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
   * The RESULT body that worker `id` left as its `seq`-th result file, `bytes`
   * long (at most `maxBytes`), read into an aligned buffer valid until the
   * next call; the file is removed. Throws, naming the file and what is
   * wrong, when it is missing or not `bytes` long.
   */
  takeResult(id: string, seq: number, bytes: number, maxBytes: number): Buffer {
    const path = resultFile(this.dir, id, seq);
    if (bytes > maxBytes)
      throw new Error(`result file ${path} is said to hold ${bytes} bytes, more than ${maxBytes}`);
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      if (size !== bytes) throw new Error(`result file ${path} has ${size} bytes, its frame says ${bytes}`);
      if (this.body.length < bytes) this.body = Buffer.allocUnsafeSlow(Math.max(bytes, 1024));
      const got = readSync(fd, this.body, 0, bytes, 0);
      if (got !== bytes) throw new Error(`result file ${path}: read ${got} of ${bytes} bytes`);
    } finally {
      closeSync(fd);
      unlinkSync(path);
    }
    return this.body.subarray(0, bytes);
  }

  /** Removes the directory and everything in it (the session is over). */
  close(): void {
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
