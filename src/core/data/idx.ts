/**
 * Reader for the IDX format of MNIST (and Fashion-MNIST, EMNIST, ...):
 *
 * ```
 * 0x00 0x00 <type byte> <number of dims N>
 * N big-endian uint32 dimension sizes
 * the data, row-major, product(dims) items
 * ```
 *
 * Only the unsigned-byte type (0x08) is supported: images and labels are
 * bytes, and the whole system keeps them as bytes. Files may be gzipped (as
 * the datasets are distributed); they are recognised by a `.gz` name or by
 * the gzip magic bytes.
 */
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { gunzip, gunzipSync } from "node:zlib";

/** A dataset file is missing, malformed or inconsistent. The message names the file. */
export class DataError extends Error {
  override name = "DataError";
}

/** The content of one IDX file: its dimension sizes and its bytes. */
export interface IdxArray {
  /** Dimension sizes, outermost first (e.g. `[60000, 28, 28]`). */
  dims: number[];
  /** product(dims) bytes, row-major. A view into the file's bytes, not a copy. */
  data: Uint8Array;
}

/** Largest number of items accepted in one file (a 2 GiB Uint8Array). */
export const MAX_IDX_ITEMS = 2 ** 31;

/** Names of the IDX type bytes, so that a refusal says what the file holds. */
const IDX_TYPES: Record<number, string> = {
  8: "unsigned byte",
  9: "signed byte",
  11: "int16",
  12: "int32",
  13: "float32",
  14: "float64",
};

const UBYTE = 0x08;
const gunzipAsync = promisify(gunzip);
// A corrupt or hostile .gz must not inflate without bound: the largest valid
// IDX file is the item bound plus the largest possible header.
const GUNZIP_LIMIT = { maxOutputLength: MAX_IDX_ITEMS + 4 + 4 * 255 };

function isGzipData(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

function needsGunzip(bytes: Uint8Array, name: string): boolean {
  if (isGzipData(bytes)) return true;
  if (name.endsWith(".gz")) {
    throw new DataError(`${name}: named .gz but is not gzip data (starts with ${hexStart(bytes)})`);
  }
  return false;
}

function hexStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return "nothing: the file is empty";
  return `0x${Buffer.from(bytes.subarray(0, 4)).toString("hex")}`;
}

function gunzipError(name: string, err: unknown): DataError {
  const why = err instanceof Error ? err.message : String(err);
  return new DataError(`${name}: corrupt gzip data: ${why}`);
}

/**
 * Parses the bytes of one IDX file (gunzipping them first if they are gzip
 * data). `data` of the result is a view into `bytes` (or into the gunzipped
 * buffer): nothing is copied.
 *
 * @param bytes the file's content
 * @param name the file's name or path, used in every error message
 * @param expectedDims if given, the number of dimensions the file must have
 *   (1 for labels, 3 for images)
 * @throws DataError naming the file and what is wrong with it
 */
export function parseIdx(bytes: Uint8Array, name: string, expectedDims?: number): IdxArray {
  if (needsGunzip(bytes, name)) {
    let raw: Uint8Array;
    try {
      raw = gunzipSync(bytes, GUNZIP_LIMIT);
    } catch (err) {
      throw gunzipError(name, err);
    }
    return parseRawIdx(raw, name, expectedDims);
  }
  return parseRawIdx(bytes, name, expectedDims);
}

/**
 * Reads and parses one IDX file, gunzipping it (off the main thread) if it
 * is gzipped.
 *
 * @param path the file to read; it names the file in every error message
 * @param expectedDims if given, the number of dimensions the file must have
 * @throws DataError if the file cannot be read or is malformed
 */
export async function readIdxFile(path: string, expectedDims?: number): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new DataError(`${path}: cannot read: ${why}`);
  }
  if (needsGunzip(bytes, path)) {
    try {
      bytes = await gunzipAsync(bytes, GUNZIP_LIMIT);
    } catch (err) {
      throw gunzipError(path, err);
    }
  }
  return parseRawIdx(bytes, path, expectedDims);
}

/** Parses uncompressed IDX bytes; see {@link parseIdx}. */
function parseRawIdx(bytes: Uint8Array, name: string, expectedDims?: number): IdxArray {
  if (bytes.length < 4) {
    throw new DataError(`${name}: truncated: ${bytes.length} bytes, shorter than the 4-byte IDX magic`);
  }
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new DataError(
      `${name}: bad magic: an IDX file starts with 0x0000, this one with ${hexStart(bytes)} (not an IDX file?)`,
    );
  }
  const type = bytes[2];
  if (type !== UBYTE) {
    const typeName = IDX_TYPES[type] ?? "unknown type";
    throw new DataError(
      `${name}: unsupported IDX data type 0x${hex2(type)} (${typeName}); only 0x08 (unsigned byte) is supported`,
    );
  }
  const nDims = bytes[3];
  if (nDims === 0) throw new DataError(`${name}: the header declares 0 dimensions`);
  if (expectedDims !== undefined && nDims !== expectedDims) {
    throw new DataError(`${name}: expected ${expectedDims} dimension(s), the header declares ${nDims}`);
  }
  const headerLength = 4 + 4 * nDims;
  if (bytes.length < headerLength) {
    throw new DataError(
      `${name}: truncated header: ${nDims} dimension(s) need ${headerLength} bytes, the file has ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerLength);
  const dims: number[] = [];
  let items = 1;
  for (let i = 0; i < nDims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    if (d === 0) throw new DataError(`${name}: dimension ${i} is 0 (dims ${formatDims([...dims, d])})`);
    dims.push(d);
    items *= d;
    // Checked at each step so that the product stays an exact integer.
    if (items > MAX_IDX_ITEMS) {
      throw new DataError(
        `${name}: dimensions ${formatDims(dims)} exceed the limit of ${MAX_IDX_ITEMS} items`,
      );
    }
  }
  const dataLength = bytes.length - headerLength;
  if (dataLength < items) {
    throw new DataError(
      `${name}: truncated: header says ${items} items (dims ${formatDims(dims)}), file has ${dataLength} bytes of data`,
    );
  }
  if (dataLength > items) {
    throw new DataError(
      `${name}: ${dataLength - items} trailing bytes: header says ${items} items (dims ${formatDims(dims)}), file has ${dataLength} bytes of data`,
    );
  }
  // A plain Uint8Array view (not a Buffer subarray): consumers get one type.
  const data = new Uint8Array(bytes.buffer, bytes.byteOffset + headerLength, items);
  return { dims, data };
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, "0");
}

function formatDims(dims: number[]): string {
  return dims.join("x");
}
