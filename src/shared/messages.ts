/**
 * Message formats between coordinator and workers, in one place:
 *
 * - shard job and lane job data (BullMQ stores it as JSON: only small
 *   integers and ids, never tensors), validated with a strict schema by the
 *   worker;
 * - the weights announcement published on `keys.versionChannel`:
 *   `<session>:<version>:` followed by the raw float32 weights;
 * - the result frame a worker writes under `keys.result(v, s)`: a msgpack
 *   array `[tag, session, version, shard, workerId, cost, count, seconds, grad]`
 *   whose last element is the raw little-endian float32 gradient sum
 *   (encoded by hand, decoded by msgpackr after the scan below);
 * - the notices pushed on `keys.notices` to wake the coordinator: a result's
 *   notice carries the result frame itself (see SUBMIT_RESULT), a refusal's
 *   is text.
 *
 * Decoding a result never runs code nor builds prototypes from the data:
 * before msgpackr sees the bytes, {@link scanResultFrame} walks them token by
 * token and accepts only a 9-element array of strings, numbers and one binary
 * blob, so no msgpack extension (records, structured clone, ...) is reached.
 */
import { Packr } from "msgpackr";
import { z } from "zod";

export const RESULT_TAG = "gf-result/1";

/** Upper bound on positions and sizes in job data (a rogue job cannot ask for more). */
const MAX_INDEX = 2 ** 31 - 1;

/** Strict schema of a shard job's data. */
export const shardJobSchema = z
  .object({
    session: z.string().regex(/^[0-9a-f]{16}$/),
    version: z.number().int().min(0).max(MAX_INDEX),
    epoch: z.number().int().min(0).max(MAX_INDEX),
    step: z.number().int().min(0).max(MAX_INDEX),
    shard: z.number().int().min(0).max(4095),
    /** Permutation positions [start, end) of the epoch. */
    start: z.number().int().min(0).max(MAX_INDEX),
    end: z.number().int().min(1).max(MAX_INDEX),
  })
  .strict()
  .refine((j) => j.end > j.start, { message: "end must be greater than start", path: ["end"] });

/** A shard job: compute the gradient sum of positions [start, end) of epoch `epoch`'s permutation. */
export type ShardJob = z.infer<typeof shardJobSchema>;

/** BullMQ job id of a shard attempt (unique per attempt, so a re-enqueue is a new job). */
export function shardJobId(job: ShardJob, attempt: number): string {
  return `${job.session}-${job.version}-${job.shard}-${attempt}`;
}

/**
 * Strict schema of a lane job's data: a seat in a session until weights
 * version `to` (exclusive); `from` is where its range starts. The worker
 * computes, for each version from the current one on, whatever shards it
 * claims (see CLAIM_SHARD); it never names a shard itself, so a lane cannot
 * steer a worker to samples outside the plan.
 */
export const laneJobSchema = z
  .object({
    session: z.string().regex(/^[0-9a-f]{16}$/),
    from: z.number().int().min(0).max(MAX_INDEX),
    to: z.number().int().min(1).max(MAX_INDEX),
  })
  .strict()
  .refine((j) => j.to > j.from, { message: "to must be greater than from", path: ["to"] });

/** A lane job: claim and compute shards of weights versions [from, to). */
export type LaneJob = z.infer<typeof laneJobSchema>;

/**
 * BullMQ job id of lane `lane` of range `range` (versions from
 * range·LANE_STEPS): fixed, so adding a lane that exists adds nothing.
 * `renewal` (a version whose deadline passed) names an extra lane added then.
 */
export function laneJobId(session: string, range: number, lane: number, renewal?: number): string {
  return `${session}-lane-${range}-${lane}${renewal === undefined ? "" : `-r${renewal}`}`;
}

/** A weights announcement: the weights of `version` in session `session`. */
export interface WeightsAnnouncement {
  session: string;
  version: number;
  /** Raw little-endian float32 bytes: a view into the message. */
  bytes: Uint8Array;
}

const ANNOUNCEMENT_HEAD = /^([0-9a-f]{16}):(\d{1,10}):/;

/** Formats the weights announcement of `version` (header + raw float32 bytes). */
export function encodeWeightsAnnouncement(session: string, version: number, params: Float32Array): Buffer {
  const head = Buffer.from(`${session}:${version}:`, "latin1");
  const out = Buffer.allocUnsafe(head.length + params.byteLength);
  head.copy(out, 0);
  out.set(new Uint8Array(params.buffer, params.byteOffset, params.byteLength), head.length);
  return out;
}

/**
 * Parses a weights announcement; undefined when malformed. The byte count
 * is for the caller to check against the run's parameter count.
 */
export function parseWeightsAnnouncement(b: Uint8Array): WeightsAnnouncement | undefined {
  const head = Buffer.from(b.buffer, b.byteOffset, Math.min(b.byteLength, 32)).toString("latin1");
  const m = ANNOUNCEMENT_HEAD.exec(head);
  if (!m) return undefined;
  return { session: m[1], version: Number(m[2]), bytes: b.subarray(m[0].length) };
}

/** A decoded result frame. */
export interface ResultFrame {
  session: string;
  version: number;
  shard: number;
  workerId: string;
  cost: number;
  count: number;
  /** Seconds the worker spent computing the shard. */
  computeSeconds: number;
  /** The gradient sum, parameter layout. */
  grad: Float32Array;
}

// Plain msgpack: no records, no structured clone, float64 numbers kept exact.
const packr = new Packr({ useRecords: false, structuredClone: false, moreTypes: false, useFloat32: 0 });

/**
 * Encodes a result frame into a new buffer. Plain msgpack, written by hand
 * rather than by msgpackr: the gradient is copied once, straight into place.
 */
export function encodeResult(r: ResultFrame): Buffer {
  return encodeResultInto(r, Buffer.allocUnsafe(resultFrameSize(r)));
}

/** Bytes that {@link encodeResult} needs for `r`. */
export function resultFrameSize(r: ResultFrame): number {
  return (
    1 +
    strSize(RESULT_TAG) +
    strSize(r.session) +
    numberSize(r.version) +
    numberSize(r.shard) +
    strSize(r.workerId) +
    9 +
    numberSize(r.count) +
    9 +
    binSize(r.grad.byteLength)
  );
}

/**
 * Encodes a result frame into `out` (at least {@link resultFrameSize} bytes,
 * e.g. a buffer reused from job to job) and returns the view of it that
 * holds the frame.
 */
export function encodeResultInto(r: ResultFrame, out: Buffer): Buffer {
  const size = resultFrameSize(r);
  if (out.length < size)
    throw new RangeError(`encodeResultInto: the frame needs ${size} bytes, out has ${out.length}`);
  let p = 0;
  out[p++] = 0x99; // fixarray of 9
  p = writeStr(out, p, RESULT_TAG);
  p = writeStr(out, p, r.session);
  p = writeNumber(out, p, r.version);
  p = writeNumber(out, p, r.shard);
  p = writeStr(out, p, r.workerId);
  p = writeFloat(out, p, r.cost);
  p = writeNumber(out, p, r.count);
  p = writeFloat(out, p, r.computeSeconds);
  const n = r.grad.byteLength;
  if (n < 0x100) {
    out[p++] = 0xc4;
    out[p++] = n;
  } else if (n < 0x10000) {
    out[p++] = 0xc5;
    p = out.writeUInt16BE(n, p);
  } else {
    out[p++] = 0xc6;
    p = out.writeUInt32BE(n, p);
  }
  out.set(new Uint8Array(r.grad.buffer, r.grad.byteOffset, n), p);
  return out.subarray(0, p + n);
}

function strSize(s: string): number {
  const n = Buffer.byteLength(s);
  return n + (n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5);
}

function binSize(n: number): number {
  return n + (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5);
}

function writeStr(out: Buffer, p: number, s: string): number {
  const n = Buffer.byteLength(s);
  if (n < 32) out[p++] = 0xa0 | n;
  else if (n < 0x100) {
    out[p++] = 0xd9;
    out[p++] = n;
  } else if (n < 0x10000) {
    out[p++] = 0xda;
    p = out.writeUInt16BE(n, p);
  } else {
    out[p++] = 0xdb;
    p = out.writeUInt32BE(n, p);
  }
  return p + out.write(s, p, "utf8");
}

function isUint32(x: number): boolean {
  return Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
}

function numberSize(x: number): number {
  return isUint32(x) ? 5 : 9;
}

/** A non-negative integer as a uint32, anything else as a float64. */
function writeNumber(out: Buffer, p: number, x: number): number {
  if (!isUint32(x)) return writeFloat(out, p, x);
  out[p++] = 0xce;
  return out.writeUInt32BE(x, p);
}

function writeFloat(out: Buffer, p: number, x: number): number {
  out[p++] = 0xcb;
  return out.writeDoubleBE(x, p);
}

/** Why a result was refused; also the `reason` label of the rejection metric. */
export type RejectReason = "decode" | "bad_length" | "non_finite" | "spec_mismatch" | "wrong_shard";

/** Raised by {@link decodeResult}; `reason` classifies it. */
export class ResultError extends Error {
  override name = "ResultError";
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Decodes and checks a result frame: shape, tag, gradient length (must be
 * `paramCount` floats) and finiteness. It does not check the session,
 * version or shard against expectations: the caller does.
 *
 * The gradient is copied into `out` when given (a buffer reused from step to
 * step: no allocation per result; on a refusal it holds garbage), else into
 * a new Float32Array.
 */
export function decodeResult(bytes: Uint8Array, paramCount: number, out?: Float32Array): ResultFrame {
  const why = scanResultFrame(bytes);
  if (why) throw new ResultError("decode", `result does not decode: ${why}`);
  let v: unknown[];
  try {
    v = packr.unpack(bytes) as unknown[];
  } catch (e) {
    throw new ResultError("decode", `result does not decode: ${(e as Error).message}`);
  }
  const [tag, session, version, shard, workerId, cost, count, seconds, grad] = v;
  if (
    tag !== RESULT_TAG ||
    typeof session !== "string" ||
    !Number.isInteger(version) ||
    !Number.isInteger(shard) ||
    typeof workerId !== "string" ||
    typeof cost !== "number" ||
    !Number.isInteger(count) ||
    typeof seconds !== "number" ||
    !(grad instanceof Uint8Array)
  ) {
    throw new ResultError("decode", "result does not decode: fields have the wrong types");
  }
  if (grad.byteLength !== paramCount * 4) {
    throw new ResultError(
      "bad_length",
      `gradient has ${grad.byteLength} bytes, the model needs ${paramCount * 4} (${paramCount} float32)`,
    );
  }
  if (out && out.length !== paramCount) {
    throw new RangeError(`decodeResult: out has ${out.length} floats, the model needs ${paramCount}`);
  }
  // Copy into an aligned buffer (the blob may sit at any offset of the frame).
  const g = out ?? new Float32Array(paramCount);
  new Uint8Array(g.buffer, g.byteOffset, g.byteLength).set(grad);
  if (!Number.isFinite(cost)) throw new ResultError("non_finite", "cost is not finite");
  for (let i = 0; i < g.length; i++) {
    if (!Number.isFinite(g[i])) throw new ResultError("non_finite", `gradient value ${i} is ${g[i]}`);
  }
  return {
    session,
    version: version as number,
    shard: shard as number,
    workerId: workerId.slice(0, 128),
    cost,
    count: count as number,
    computeSeconds: Number.isFinite(seconds) ? Math.max(0, seconds) : 0,
    grad: g,
  };
}

/**
 * Walks the bytes of a result frame and returns why they are not one (or
 * undefined when they are): a fixarray of 9 whose items are nil, bools,
 * ints, floats, strings or binary blobs. Anything else (maps, extensions,
 * nested arrays, trailing bytes) is refused.
 */
export function scanResultFrame(b: Uint8Array): string | undefined {
  if (b.length === 0) return "empty";
  if (b[0] !== 0x99) return "not a 9-element array";
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 1;
  for (let item = 0; item < 9; item++) {
    if (p >= b.length) return "truncated";
    const t = b[p++];
    let skip = 0;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) skip = 0;
    else if (t >= 0xa0 && t <= 0xbf) skip = t & 0x1f;
    else if (t === 0xcc || t === 0xd0) skip = 1;
    else if (t === 0xcd || t === 0xd1) skip = 2;
    else if (t === 0xce || t === 0xd2 || t === 0xca) skip = 4;
    else if (t === 0xcf || t === 0xd3 || t === 0xcb) skip = 8;
    else if (t === 0xd9 || t === 0xc4) {
      if (p + 1 > b.length) return "truncated";
      skip = b[p];
      p += 1;
    } else if (t === 0xda || t === 0xc5) {
      if (p + 2 > b.length) return "truncated";
      skip = dv.getUint16(p);
      p += 2;
    } else if (t === 0xdb || t === 0xc6) {
      if (p + 4 > b.length) return "truncated";
      skip = dv.getUint32(p);
      p += 4;
    } else return `unexpected msgpack type 0x${t.toString(16)} at byte ${p - 1}`;
    p += skip;
  }
  if (p > b.length) return "truncated";
  if (p < b.length) return `${b.length - p} trailing bytes`;
  return undefined;
}

/**
 * A notice on `keys.notices`:
 * - `<version>:<shard>:frame:<result frame bytes>` — pushed by the submit
 *   script with the result it accepted (`frame` holds those bytes);
 * - `<version>:<shard>:ok` — a result is stored under its key (read it there);
 * - `<version>:<shard>:refused:<reason>[:<worker id>]` — a worker refused
 *   the shard (the worker id, up to 128 characters without spaces, tells the
 *   coordinator whether every live worker refuses the run).
 */
export interface Notice {
  version: number;
  shard: number;
  kind: "ok" | "refused";
  reason?: string;
  /** The refusing worker, when a refusal names it. */
  workerId?: string;
  /** The result frame, when the notice carries it. */
  frame?: Uint8Array;
}

const FRAME_NOTICE = /^(\d{1,10}):(\d{1,4}):frame:/;
/** Longer than any text notice (digits, colons, a 32-letter reason, a 128-character worker id). */
const MAX_TEXT_NOTICE = 200;

/**
 * Parses a notice as popped from the list (bytes: a frame notice is binary);
 * undefined for anything malformed (a rogue client's noise). The frame is a
 * view into `b`, not checked here: it is a result like any other, for
 * {@link decodeResult}.
 */
export function parseNoticeBytes(b: Uint8Array): Notice | undefined {
  const head = Buffer.from(b.buffer, b.byteOffset, Math.min(b.byteLength, 24)).toString("latin1");
  const m = FRAME_NOTICE.exec(head);
  if (m) {
    return { version: Number(m[1]), shard: Number(m[2]), kind: "ok", frame: b.subarray(m[0].length) };
  }
  if (b.byteLength > MAX_TEXT_NOTICE) return undefined;
  return parseNotice(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1"));
}

/** Formats a refusal notice (results' ok notices are pushed by the submit script). */
export function refusedNotice(version: number, shard: number, reason: string, workerId?: string): string {
  const r = reason.replace(/[^a-z_]/g, "_").slice(0, 32);
  const w = workerId === undefined ? "" : `:${workerId.replace(/\s/g, "_").slice(0, 128)}`;
  return `${version}:${shard}:refused:${r}${w}`;
}

/** Parses a notice; undefined for anything malformed (a rogue client's noise). */
export function parseNotice(s: string): Notice | undefined {
  const m = /^(\d{1,10}):(\d{1,4}):(ok|refused)(?::([a-z_]{1,32})(?::(\S{1,128}))?)?$/.exec(s);
  if (!m) return undefined;
  return {
    version: Number(m[1]),
    shard: Number(m[2]),
    kind: m[3] as Notice["kind"],
    reason: m[4],
    ...(m[5] === undefined ? {} : { workerId: m[5] }),
  };
}

/**
 * Refusal reasons that mean "this worker cannot serve this run at all"
 * (other data, a spec it cannot take): refusing again will not change.
 */
export const CANNOT_SERVE_REASONS: ReadonlySet<string> = new Set(["data_mismatch", "spec_mismatch"]);
