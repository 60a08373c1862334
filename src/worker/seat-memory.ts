/**
 * A worker's side of a session's shared-memory directory (layout and why:
 * shared/step-memory.ts): when it can read the session's proof, its HELLO
 * says so, and the coordinator then sends it STEP frames without the
 * weights (read here from the version's file) and takes its results from
 * files it leaves.
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { proofFile, resultFile, weightsFile } from "../shared/step-memory.js";

/** A seat's use of the session's shared memory. */
export class SeatMemory {
  /** Names this worker's result files (see shared/step-memory.ts). */
  readonly id = randomBytes(8).toString("hex");
  private seq = 0;

  private constructor(
    private readonly dir: string,
    /** The proof's text, for the HELLO. */
    readonly proof: string,
  ) {}

  /** The seat's shared memory, or undefined when the session has none or this worker cannot read it (another host). */
  static tryOpen(dir: string | undefined): SeatMemory | undefined {
    if (!dir) return undefined;
    try {
      return new SeatMemory(dir, readFileSync(proofFile(dir), "utf8"));
    } catch {
      return undefined;
    }
  }

  /**
   * Reads `version`'s weights into `into` (paramCount float32). Returns false
   * when the file is gone: the coordinator has moved past that version, and
   * the order that named it is stale. Throws on any other failure, or a
   * file of the wrong size.
   */
  readWeights(version: number, into: Float32Array): boolean {
    const path = weightsFile(this.dir, version);
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw e;
    }
    try {
      const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
      const got = readSync(fd, bytes, 0, bytes.length, 0);
      if (got !== bytes.length)
        throw new Error(`weights file ${path} has ${got} bytes, expected ${bytes.length}`);
    } finally {
      closeSync(fd);
    }
    return true;
  }

  /** Leaves a RESULT body in the next result file; returns its number, for the RESULT_FILE frame. */
  writeResult(body: Uint8Array): number {
    const seq = this.seq++;
    writeFileSync(resultFile(this.dir, this.id, seq), body);
    return seq;
  }
}
