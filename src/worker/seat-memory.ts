/**
 * A worker's side of a session's shared-memory directory (layout and why:
 * shared/step-memory.ts): when it can read the session's proof, its HELLO
 * says so, and the coordinator then sends it STEP frames without the
 * weights (read here from the version's file) and takes its results from
 * files it leaves. Files stay open for the session.
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readFileSync, readvSync, writeSync } from "node:fs";
import {
  proofFile,
  RESULT_SLOTS,
  resultFile,
  WEIGHTS_STAMP_BYTES,
  weightsFile,
  weightsSlot,
} from "../shared/step-memory.js";

/** A seat's use of the session's shared memory. */
export class SeatMemory {
  /** Names this worker's result files (see shared/step-memory.ts). */
  readonly id = randomBytes(8).toString("hex");
  /** The number of the next result left here. */
  private seq = 0;
  /** How many of this worker's results the coordinator has read (from the STEP headers). */
  private read = 0;
  private readonly weightsFds: (number | undefined)[] = [];
  private readonly resultFds: (number | undefined)[] = [];
  private readonly stamp = Buffer.alloc(WEIGHTS_STAMP_BYTES);
  /** Writing a result failed once (and was said in the log). */
  failedOnce = false;

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
   * when the file holds another version: the coordinator has moved past this
   * one, and the order that named it is stale. Throws when the file cannot
   * be read or is too short.
   */
  readWeights(version: number, into: Float32Array): boolean {
    const slot = weightsSlot(version);
    // The file's path only to open it or to name it (a path.join per step
    // showed in a worker's profile).
    this.weightsFds[slot] ??= openSync(weightsFile(this.dir, version), "r");
    const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
    const got = readvSync(this.weightsFds[slot], [this.stamp, bytes], 0);
    if (got !== WEIGHTS_STAMP_BYTES + bytes.length) {
      throw new Error(
        `weights file ${weightsFile(this.dir, version)} has ${got} bytes, expected ${WEIGHTS_STAMP_BYTES + bytes.length}`,
      );
    }
    return this.stamp.readUInt32LE(0) === version;
  }

  /** The coordinator has read `n` of this worker's results (a STEP header says so). */
  noteRead(n: number): void {
    this.read = Math.max(this.read, n);
  }

  /**
   * Leaves a RESULT body in the next result file and returns its number, for
   * the RESULT_FILE frame; undefined when that file still holds a result the
   * coordinator has not read (the caller sends this one over the socket).
   */
  writeResult(body: Uint8Array): number | undefined {
    const seq = this.seq;
    // The file's previous result, seq - RESULT_SLOTS, must have been read.
    if (seq - RESULT_SLOTS >= this.read) return undefined;
    const slot = seq % RESULT_SLOTS;
    this.resultFds[slot] ??= openSync(resultFile(this.dir, this.id, seq), "w", 0o600);
    const n = writeSync(this.resultFds[slot], body, 0, body.length, 0);
    if (n !== body.length) throw new Error(`wrote ${n} of ${body.length} bytes of a result file`);
    this.seq++;
    return seq;
  }

  /** Closes the files (the seat is over). */
  close(): void {
    for (const fd of [...this.weightsFds, ...this.resultFds]) if (fd !== undefined) closeSync(fd);
    this.weightsFds.length = 0;
    this.resultFds.length = 0;
  }
}
