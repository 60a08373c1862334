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
 * A RESULT of a range that starts at shard 0 carries the float64 running sum
 * of its shards (the coordinator's own first additions, done in the same
 * order: the same bits); a range that starts later carries each shard's
 * float32 gradient, which the coordinator adds after the prefix in shard
 * order. So the sum is the same whoever computed what.
 */

/** Frame types. */
export const FrameType = {
  /** Worker → coordinator, first frame: JSON {@link Hello}. */
  hello: 1,
  /** Coordinator → worker: compute a range of shards of one version. */
  step: 2,
  /** Worker → coordinator: the gradients of a range. */
  result: 3,
  /** Either way, last frame: JSON {@link Bye}, then the sender closes. */
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
}

const STEP_HEADER = 24;

/**
 * The first bytes of a STEP frame for `order`, to be followed on the wire by
 * the weights' `paramCount · 4` bytes (sent as they are: no copy per worker).
 */
export function encodeStepHeader(order: StepOrder, paramCount: number): Buffer {
  const out = Buffer.allocUnsafe(5 + STEP_HEADER);
  out.writeUInt32LE(1 + STEP_HEADER + paramCount * 4, 0);
  out.writeUInt8(FrameType.step, 4);
  out.writeUInt32LE(order.version, 5);
  out.writeUInt32LE(order.epoch, 9);
  out.writeUInt32LE(order.step, 13);
  out.writeUInt32LE(order.lo, 17);
  out.writeUInt32LE(order.hi, 21);
  out.writeUInt32LE(0, 25);
  return out;
}

/** Reads a STEP body (aligned, see FrameReader); the weights are a view into it. */
export function decodeStep(body: Buffer, paramCount: number): { order: StepOrder; params: Float32Array } {
  if (body.length !== STEP_HEADER + paramCount * 4) {
    throw new Error(`step frame has ${body.length} bytes, expected ${STEP_HEADER + paramCount * 4}`);
  }
  const order: StepOrder = {
    version: body.readUInt32LE(0),
    epoch: body.readUInt32LE(4),
    step: body.readUInt32LE(8),
    lo: body.readUInt32LE(12),
    hi: body.readUInt32LE(16),
  };
  const params = new Float32Array(body.buffer, body.byteOffset + STEP_HEADER, paramCount);
  return { order, params };
}

/** A RESULT frame's contents. */
export interface RangeResult {
  version: number;
  lo: number;
  hi: number;
  /** Seconds the worker spent computing the range. */
  computeSeconds: number;
  /**
   * lo = 0: one entry, the running sums over the range (costs from 0 in shard
   * order; counts). lo > 0: one entry per shard.
   */
  counts: Uint32Array;
  costs: Float64Array;
  /** lo = 0: Float64Array of paramCount running sums; else Float32Array of (hi-lo)·paramCount. */
  grads: Float64Array | Float32Array;
}

const RESULT_HEADER = 24;

/** Entries of a range's result: one running sum for a prefix, else one per shard. */
export function resultEntries(lo: number, hi: number): number {
  return lo === 0 ? 1 : hi - lo;
}

function resultLayout(lo: number, hi: number, paramCount: number) {
  const m = resultEntries(lo, hi);
  const counts = RESULT_HEADER;
  const costs = counts + Math.ceil((4 * m) / 8) * 8;
  const grads = costs + 8 * m;
  const gradBytes = lo === 0 ? 8 * paramCount : 4 * paramCount * m;
  return { m, counts, costs, grads, body: grads + gradBytes };
}

/** Bytes of a RESULT frame (prefix included). */
export function resultFrameBytes(lo: number, hi: number, paramCount: number): number {
  return 5 + resultLayout(lo, hi, paramCount).body;
}

/**
 * A RESULT frame laid out in `out` (at least resultFrameBytes, and with
 * `out.byteOffset + 5` a multiple of 8) for the worker to fill in place: the
 * kernel writes gradients straight into the views, and `frame` is what to send.
 */
export function resultFrameIn(
  out: Buffer,
  version: number,
  lo: number,
  hi: number,
  paramCount: number,
): {
  frame: Buffer;
  counts: Uint32Array;
  costs: Float64Array;
  grads: Float64Array | Float32Array;
  setSeconds(s: number): void;
} {
  const l = resultLayout(lo, hi, paramCount);
  const base = out.byteOffset + 5;
  if (base % 8 !== 0) throw new Error("result buffer must leave the body 8-byte aligned");
  out.writeUInt32LE(l.body + 1, 0);
  out.writeUInt8(FrameType.result, 4);
  out.writeUInt32LE(version, 5);
  out.writeUInt32LE(lo, 9);
  out.writeUInt32LE(hi, 13);
  out.writeUInt32LE(0, 17);
  return {
    frame: out.subarray(0, 5 + l.body),
    ...resultViews(out.buffer, base, l, lo, paramCount),
    setSeconds: (s) => out.writeDoubleLE(s, 21),
  };
}

/**
 * Reads a RESULT body (aligned, see FrameReader); the arrays are views into
 * it. Throws, naming what is wrong, for a body that is not a well-formed
 * result for `paramCount` parameters.
 */
export function decodeResult(body: Buffer, paramCount: number): RangeResult {
  if (body.length < RESULT_HEADER) throw new Error(`result frame of ${body.length} bytes is too short`);
  const version = body.readUInt32LE(0);
  const lo = body.readUInt32LE(4);
  const hi = body.readUInt32LE(8);
  if (hi <= lo || hi - lo > 1 << 16) throw new Error(`result frame names shards [${lo}, ${hi})`);
  const l = resultLayout(lo, hi, paramCount);
  if (body.length !== l.body) {
    throw new Error(`result frame of shards [${lo}, ${hi}) has ${body.length} bytes, expected ${l.body}`);
  }
  return {
    version,
    lo,
    hi,
    computeSeconds: body.readDoubleLE(16),
    ...resultViews(body.buffer, body.byteOffset, l, lo, paramCount),
  };
}

/** The typed views of a RESULT body that starts at byte `base` of `ab`. */
function resultViews(
  ab: ArrayBufferLike,
  base: number,
  l: ReturnType<typeof resultLayout>,
  lo: number,
  paramCount: number,
) {
  return {
    counts: new Uint32Array(ab, base + l.counts, l.m),
    costs: new Float64Array(ab, base + l.costs, l.m),
    grads:
      lo === 0
        ? new Float64Array(ab, base + l.grads, paramCount)
        : new Float32Array(ab, base + l.grads, paramCount * l.m),
  };
}

/** A JSON frame (HELLO, BYE). */
export function encodeJson(type: number, value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value), "utf8");
  const out = Buffer.allocUnsafe(5 + json.length);
  out.writeUInt32LE(json.length + 1, 0);
  out.writeUInt8(type, 4);
  json.copy(out, 5);
  return out;
}

/** Parses a JSON body; throws when it is not a JSON object. */
export function decodeJson(body: Buffer): Record<string, unknown> {
  const v: unknown = JSON.parse(body.toString("utf8"));
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("frame is not a JSON object");
  return v as Record<string, unknown>;
}

/**
 * Cuts a byte stream into frames. Each frame's body is copied into a buffer
 * of its own ArrayBuffer (8-byte aligned, reused from frame to frame: a body
 * is valid until the next frame is handled), so typed views need no copy.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private body = Buffer.allocUnsafeSlow(0);

  /** @param onFrame called synchronously for each complete frame */
  constructor(
    private readonly onFrame: (type: number, body: Buffer) => void,
    private readonly maxBytes = MAX_FRAME_BYTES,
  ) {}

  /** Feeds received bytes; throws on a frame larger than allowed. */
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.buffered < 4) return;
      const head = this.peek(4);
      const len = head.readUInt32LE(0);
      if (len < 1 || len > this.maxBytes) throw new Error(`frame of ${len} bytes is out of bounds`);
      if (this.buffered < 4 + len) return;
      this.skip(4);
      const type = this.take(1)[0];
      const n = len - 1;
      if (this.body.buffer.byteLength < n) this.body = Buffer.allocUnsafeSlow(Math.max(n, 1024));
      const body = Buffer.from(this.body.buffer, 0, n);
      this.copyOut(body);
      this.onFrame(type, body);
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    return Buffer.concat(this.chunks, Math.min(this.buffered, 64));
  }

  private skip(n: number): void {
    this.take(n);
  }

  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out);
    return out;
  }

  /** Moves the next out.length buffered bytes into `out`. */
  private copyOut(out: Buffer): void {
    let off = 0;
    while (off < out.length) {
      const c = this.chunks[0];
      const k = Math.min(c.length, out.length - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= out.length;
  }
}
