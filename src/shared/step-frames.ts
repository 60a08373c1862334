/**
 * The direct step channel's wire format, in one place (`--dispatch direct`,
 * see docs/design-notes.md, "Direct steps").
 *
 * A worker seated by BullMQ dials the coordinator's data port (its address
 * and a per-session token are in the run spec) and keeps the connection for
 * the session. Per step the coordinator sends each worker one STEP frame
 * (the weights and the contiguous range of shards it is to compute) and the
 * worker answers with one RESULT frame: a step costs two frames per worker
 * and no Redis command at all.
 *
 * Every frame is `u32 LE length | u8 type | body` (length counts type and
 * body). Binary bodies keep their typed arrays at offsets that are multiples
 * of 8 within the body, so a receiver that copies the body into an aligned
 * buffer reads them through views, with no per-value decoding.
 *
 * A worker on the coordinator's host that proves in its HELLO that it sees the
 * session's shared-memory directory (shared/step-memory.ts) gets STEP frames
 * without the weights (it reads them from the version's file there) and
 * answers with a RESULT_FILE frame naming the file it left the RESULT body in:
 * the same bytes, without two socket copies of each on both sides.
 *
 * A RESULT carries one float32 gradient per node of the step's shard tree
 * that tiles the worker's range (core/shard-tree.ts, blocksOf: one node for a
 * range that is a node, a few otherwise), added up by the worker; the
 * coordinator adds the nodes up the rest of the tree. Every addition is the
 * tree's, so the sum is the same whoever computed what.
 */

import { Packr } from "msgpackr";

/** Frame types. */
export const FrameType = {
  /** Worker → coordinator, first frame: {@link Hello} (msgpack). */
  hello: 1,
  /** Coordinator → worker: compute a range of shards of one version. */
  step: 2,
  /** Worker → coordinator: the gradients of a range. */
  result: 3,
  /** Worker → coordinator: a RESULT body left in the session's shared memory ({@link ResultFileRef}). */
  resultFile: 4,
  /** Either way, last frame: {@link Bye} (msgpack), then the sender closes. */
  bye: 9,
} as const;

/** Largest frame accepted (type + body): a bound on what a peer can make us buffer. */
export const MAX_FRAME_BYTES = 1 << 30;

/** A worker's first words on a connection. */
export interface Hello {
  /** The session's token from the run spec: only readers of the run's keys may join. */
  token: string;
  session: string;
  workerId: string;
  /** Set when the worker cannot serve the session: it says why and leaves. */
  refusal?: { reason: string; message: string };
  /**
   * Set when the worker read the session's shared-memory proof (see
   * shared/step-memory.ts): the proof's text, and the id its result files are
   * named by (16 hex digits).
   */
  memory?: { proof: string; id: string };
}

/** Why a peer ends the connection. */
export interface Bye {
  reason: string;
}

/** What a STEP frame asks for. */
export interface StepOrder {
  version: number;
  epoch: number;
  step: number;
  /** Shards [lo, hi) of the step's non-empty shards. */
  lo: number;
  hi: number;
  /** The weights are not in the frame but in the version's file in shared memory (see shared/step-memory.ts). */
  inMemory: boolean;
}

const STEP_HEADER = 32;
/** Bit of a STEP header's flags word: the weights are in shared memory. */
const WEIGHTS_IN_MEMORY = 1;

/**
 * The first bytes of a STEP frame for `order`, to be followed on the wire by
 * the weights' `paramCount · 4` bytes (sent as they are: no copy per worker),
 * unless `order.inMemory` (then the header is the whole frame).
 * `resultsRead`: how many of this worker's result files the coordinator has
 * read so far (see shared/step-memory.ts; 0 for a worker without them).
 */
export function encodeStepHeader(order: StepOrder, paramCount: number, resultsRead = 0): Buffer {
  const out = Buffer.allocUnsafe(5 + STEP_HEADER);
  out.writeUInt32LE(1 + STEP_HEADER + (order.inMemory ? 0 : paramCount * 4), 0);
  out.writeUInt8(FrameType.step, 4);
  out.writeUInt32LE(order.version, 5);
  out.writeUInt32LE(order.epoch, 9);
  out.writeUInt32LE(order.step, 13);
  out.writeUInt32LE(order.lo, 17);
  out.writeUInt32LE(order.hi, 21);
  out.writeUInt32LE(order.inMemory ? WEIGHTS_IN_MEMORY : 0, 25);
  out.writeUInt32LE(resultsRead, 29);
  out.writeUInt32LE(0, 33);
  return out;
}

/**
 * Reads a STEP body (aligned, see FrameReader); the weights are a view into
 * it, or undefined when they are in shared memory (`order.inMemory`).
 */
export function decodeStep(
  body: Buffer,
  paramCount: number,
): { order: StepOrder; params?: Float32Array; resultsRead: number } {
  const flags = body.length >= STEP_HEADER ? body.readUInt32LE(20) : 0;
  if (flags & ~WEIGHTS_IN_MEMORY) throw new Error(`step frame has unknown flags ${flags}`);
  const inMemory = flags === WEIGHTS_IN_MEMORY;
  const want = STEP_HEADER + (inMemory ? 0 : paramCount * 4);
  if (body.length !== want) {
    throw new Error(`step frame has ${body.length} bytes, expected ${want}`);
  }
  const order: StepOrder = {
    version: body.readUInt32LE(0),
    epoch: body.readUInt32LE(4),
    step: body.readUInt32LE(8),
    lo: body.readUInt32LE(12),
    hi: body.readUInt32LE(16),
    inMemory,
  };
  const resultsRead = body.readUInt32LE(24);
  if (inMemory) return { order, resultsRead };
  const params = new Float32Array(body.buffer, body.byteOffset + STEP_HEADER, paramCount);
  return { order, params, resultsRead };
}

/** A RESULT_FILE frame: which of its sender's result files holds the RESULT body, and its length. */
export interface ResultFileRef {
  /** The result's number among the sender's result files (see shared/step-memory.ts, resultFile). */
  seq: number;
  bytes: number;
}

/** A RESULT_FILE frame (the whole frame). */
export function encodeResultFile(ref: ResultFileRef): Buffer {
  const out = Buffer.allocUnsafe(5 + 8);
  out.writeUInt32LE(1 + 8, 0);
  out.writeUInt8(FrameType.resultFile, 4);
  out.writeUInt32LE(ref.seq, 5);
  out.writeUInt32LE(ref.bytes, 9);
  return out;
}

/** Reads a RESULT_FILE body; throws on one of the wrong size. */
export function decodeResultFile(body: Buffer): ResultFileRef {
  if (body.length !== 8) throw new Error(`result-file frame has ${body.length} bytes, expected 8`);
  return { seq: body.readUInt32LE(0), bytes: body.readUInt32LE(4) };
}

/** A RESULT frame's contents. */
export interface RangeResult {
  version: number;
  lo: number;
  hi: number;
  /** Seconds the worker spent computing the range. */
  computeSeconds: number;
  /** Per block (node of the shard tree tiling [lo, hi), in order): examples and tree sum of costs. */
  counts: Uint32Array;
  costs: Float64Array;
  /** The blocks' float32 gradients, one after another (blocks · paramCount). */
  grads: Float32Array;
}

const RESULT_HEADER = 24;
/** At most this many blocks in one RESULT (a range of up to 2^16 shards has fewer). */
const MAX_BLOCKS = 64;

function resultLayout(blocks: number, paramCount: number) {
  const counts = RESULT_HEADER;
  const costs = counts + Math.ceil((4 * blocks) / 8) * 8;
  const grads = costs + 8 * blocks;
  return { m: blocks, counts, costs, grads, body: grads + 4 * paramCount * blocks };
}

/** Bytes of a RESULT frame of `blocks` gradients. */
export function resultFrameBytes(blocks: number, paramCount: number): number {
  return 5 + resultLayout(blocks, paramCount).body;
}

/**
 * A RESULT frame of `blocks` gradients laid out in `out` (at least
 * resultFrameBytes, and with `out.byteOffset + 5` a multiple of 8) for the
 * worker to fill in place: the kernel writes gradients straight into the
 * views, and `frame` is what to send.
 */
export function resultFrameIn(
  out: Buffer,
  version: number,
  lo: number,
  hi: number,
  blocks: number,
  paramCount: number,
): {
  frame: Buffer;
  counts: Uint32Array;
  costs: Float64Array;
  grads: Float32Array;
  setSeconds(s: number): void;
} {
  const l = resultLayout(blocks, paramCount);
  const base = out.byteOffset + 5;
  if (base % 8 !== 0) throw new Error("result buffer must leave the body 8-byte aligned");
  out.writeUInt32LE(l.body + 1, 0);
  out.writeUInt8(FrameType.result, 4);
  out.writeUInt32LE(version, 5);
  out.writeUInt32LE(lo, 9);
  out.writeUInt32LE(hi, 13);
  out.writeUInt32LE(blocks, 17);
  return {
    frame: out.subarray(0, 5 + l.body),
    ...resultViews(out.buffer, base, l, paramCount),
    setSeconds: (s) => out.writeDoubleLE(s, 21),
  };
}

/**
 * Reads a RESULT body (aligned, see FrameReader); the arrays are views into
 * it. Throws, naming what is wrong, for a body that is not a well-formed
 * result for `paramCount` parameters. (Whether its blocks are the ones its
 * range should have is the receiver's check: it knows the step.)
 */
export function decodeResult(body: Buffer, paramCount: number): RangeResult {
  if (body.length < RESULT_HEADER) throw new Error(`result frame of ${body.length} bytes is too short`);
  const version = body.readUInt32LE(0);
  const lo = body.readUInt32LE(4);
  const hi = body.readUInt32LE(8);
  const blocks = body.readUInt32LE(12);
  if (hi <= lo || hi - lo > 1 << 16) throw new Error(`result frame names shards [${lo}, ${hi})`);
  if (blocks < 1 || blocks > Math.min(hi - lo, MAX_BLOCKS)) {
    throw new Error(`result frame of shards [${lo}, ${hi}) names ${blocks} blocks`);
  }
  const l = resultLayout(blocks, paramCount);
  if (body.length !== l.body) {
    throw new Error(`result frame of shards [${lo}, ${hi}) has ${body.length} bytes, expected ${l.body}`);
  }
  return {
    version,
    lo,
    hi,
    computeSeconds: body.readDoubleLE(16),
    ...resultViews(body.buffer, body.byteOffset, l, paramCount),
  };
}

/** The typed views of a RESULT body that starts at byte `base` of `ab`. */
function resultViews(
  ab: ArrayBufferLike,
  base: number,
  l: ReturnType<typeof resultLayout>,
  paramCount: number,
) {
  return {
    counts: new Uint32Array(ab, base + l.counts, l.m),
    costs: new Float64Array(ab, base + l.costs, l.m),
    grads: new Float32Array(ab, base + l.grads, paramCount * l.m),
  };
}

/**
 * msgpack for the control frames' fields: plain maps of strings and numbers
 * (no records or extensions, so a peer needs no shared state and a frame
 * from a stranger decodes to nothing richer than an object).
 */
const controlCodec = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** A control frame (HELLO, BYE): its fields packed with msgpack. */
export function encodeControl(type: number, value: object): Buffer {
  const packed = controlCodec.pack(value);
  const out = Buffer.allocUnsafe(5 + packed.length);
  out.writeUInt32LE(packed.length + 1, 0);
  out.writeUInt8(type, 4);
  packed.copy(out, 5);
  return out;
}

/** A control frame's fields; throws when the body is not one msgpack map. */
export function decodeControl(body: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = controlCodec.unpack(body);
  } catch (e) {
    throw new Error(`control frame does not decode: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) {
    throw new Error("control frame is not a map of fields");
  }
  return v as Record<string, unknown>;
}

/**
 * Cuts a byte stream into frames. Each byte is copied once, as it arrives,
 * into the frame's body: a buffer of its own ArrayBuffer (8-byte aligned,
 * reused from frame to frame: a body is valid until the next frame is
 * handled), so typed views need no copy, and nothing of a pushed chunk is
 * kept (the caller may reuse it: a socket's `onread` buffer).
 */
export class FrameReader {
  /** The 5-byte head (length, type) of the frame being read, and how much of it is in. */
  private readonly head = Buffer.alloc(5);
  private headIn = 0;
  private body = Buffer.allocUnsafeSlow(0);
  /** The frame being read: its type, body length and the body bytes in so far (-1: reading the head). */
  private type = 0;
  private want = -1;
  private bodyIn = 0;

  /** @param onFrame called synchronously for each complete frame */
  constructor(
    private readonly onFrame: (type: number, body: Buffer) => void,
    private readonly maxBytes = MAX_FRAME_BYTES,
  ) {}

  /** Feeds received bytes; throws on a frame larger than allowed. */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.want < 0) {
        const k = Math.min(5 - this.headIn, chunk.length - at);
        this.head.set(chunk.subarray(at, at + k), this.headIn);
        this.headIn += k;
        at += k;
        if (this.headIn < 4) return;
        const len = this.head.readUInt32LE(0);
        if (len < 1 || len > this.maxBytes) throw new Error(`frame of ${len} bytes is out of bounds`);
        if (this.headIn < 5) return;
        this.type = this.head[4];
        this.want = len - 1;
        this.bodyIn = 0;
        if (this.body.buffer.byteLength < this.want) {
          this.body = Buffer.allocUnsafeSlow(Math.max(this.want, 1024));
        }
      }
      const k = Math.min(this.want - this.bodyIn, chunk.length - at);
      if (k > 0) {
        this.body.set(chunk.subarray(at, at + k), this.bodyIn);
        this.bodyIn += k;
        at += k;
      }
      if (this.bodyIn === this.want) {
        const body = Buffer.from(this.body.buffer, 0, this.want);
        this.want = -1;
        this.headIn = 0;
        this.onFrame(this.type, body);
      }
    }
  }
}
