/**
 * A strict reader and writer of the safetensors format: an 8-byte
 * little-endian header length, a JSON header mapping tensor names to
 * `{dtype, shape, data_offsets}` (plus an optional `__metadata__` map of
 * strings), then the raw little-endian tensor bytes. Only F32 tensors are
 * used here. The reader checks every offset and size, so a truncated or
 * corrupt file is refused with a message instead of producing garbage.
 */

/** A named float32 tensor. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/** A decoded safetensors file. */
export interface SafeTensors {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

/** Raised when bytes are not a valid safetensors file; names the file. */
export class SafeTensorsError extends Error {
  override name = "SafeTensorsError";
}

/** Largest JSON header accepted. */
export const MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024;
const MAX_HEADER = MAX_SAFETENSORS_HEADER;

/** Serialises tensors (in the given order) and string metadata. */
export function encodeSafeTensors(tensors: [string, Tensor][], metadata: Record<string, string>): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.length * 4;
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned (allowed by the format).
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " ";
  const head = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + head.length + off);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let pos = 8 + head.length;
  for (const [, t] of tensors) {
    for (let i = 0; i < t.data.length; i++, pos += 4) out.writeFloatLE(t.data[i], pos);
  }
  return out;
}

/** Parses and validates a safetensors buffer; `name` is used in error messages. */
export function decodeSafeTensors(buf: Uint8Array, name: string): SafeTensors {
  const fail = (why: string): never => {
    throw new SafeTensorsError(`${name}: not a valid model file: ${why}`);
  };
  if (buf.length < 8) fail(`only ${buf.length} bytes, too short for a header`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headLen = Number(view.getBigUint64(0, true));
  if (headLen < 2 || headLen > MAX_HEADER) fail(`header length ${headLen} is out of range`);
  if (8 + headLen > buf.length) fail(`truncated: header of ${headLen} bytes, file has ${buf.length - 8}`);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, headLen).toString("utf8"));
  } catch (e) {
    fail(`header is not JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("header is not an object");
  const dataStart = 8 + headLen;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, Tensor>();
  let metadata: Record<string, string> = {};
  let covered = 0;
  for (const [key, value] of Object.entries(header as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (typeof value !== "object" || value === null) fail("__metadata__ is not an object");
      metadata = Object.fromEntries(
        Object.entries(value as Record<string, unknown>).map(([k, v]) => {
          if (typeof v !== "string") fail(`metadata ${k} is not a string`);
          return [k, v as string];
        }),
      );
      continue;
    }
    const t = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (t?.dtype !== "F32") fail(`tensor ${key}: dtype ${String(t?.dtype)} is not F32`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(`tensor ${key}: bad shape`);
    }
    const offs = t.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(`tensor ${key}: bad data_offsets`);
    }
    const [a, b] = offs as number[];
    const count = (t.shape as number[]).reduce((x, y) => x * y, 1);
    if (b < a || b - a !== count * 4) fail(`tensor ${key}: offsets [${a}, ${b}] do not match its shape`);
    if (b > dataLen) fail(`truncated: tensor ${key} ends at byte ${b}, data has ${dataLen}`);
    covered += b - a;
    const data = new Float32Array(count);
    const dv = new DataView(buf.buffer, buf.byteOffset + dataStart + a, b - a);
    for (let i = 0; i < count; i++) data[i] = dv.getFloat32(i * 4, true);
    tensors.set(key, { shape: t.shape as number[], data });
  }
  if (covered !== dataLen) fail(`${dataLen - covered} bytes of data belong to no tensor`);
  return { tensors, metadata };
}
