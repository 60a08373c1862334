/**
 * The checks of an IDX file's header and length (see idx.ts for the format):
 * magic, type, dimensions and the number of items against what the file can
 * hold, each refusal a DataError that names the file and what is wrong.
 */

/** A dataset file is missing, malformed or inconsistent. The message names the file. */
export class DataError extends Error {
  override name = "DataError";
}

/** The content of one IDX file: its dimension sizes and its bytes. */
export interface IdxArray {
  /** Dimension sizes, outermost first (e.g. `[60000, 28, 28]`). */
  dims: number[];
  /**
   * product(dims) bytes, row-major: from `parseIdx` (idx.ts) a view into the
   * bytes parsed, from `readIdxFile` the array its `allocate` made.
   */
  data: Uint8Array;
}

/**
 * Largest number of items accepted in one file: just under 2 GiB. Exclusive
 * of 2^31 on purpose: one read of 2^31 bytes does not fit the 32-bit signed
 * length that Node's file reads assert on (the process aborts).
 */
export const MAX_IDX_ITEMS = 2 ** 31 - 1;

/** Names of the IDX type bytes, so that a refusal says what the file holds. */
const IDX_TYPES: Record<number, string> = {
  8: "unsigned byte",
  9: "signed byte",
  11: "int16",
  12: "int32",
  13: "float32",
  14: "float64",
};

/** The only type supported: unsigned byte. */
const UBYTE = 0x08;

/** What a file starts with, for a refusal: its first 4 bytes in hex, or that it is empty. */
export function hexStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return "nothing: the file is empty";
  return `0x${Buffer.from(bytes.subarray(0, 4)).toString("hex")}`;
}

/** Checks the first 4 bytes (magic, type, number of dimensions); returns the number of dimensions. */
export function checkPrefix(bytes: Uint8Array, name: string, expectedDims: number | undefined): number {
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
  return nDims;
}

/** Reads the dimension sizes of a complete header; checks each and their product. */
export function readDims(header: Uint8Array, nDims: number, name: string): { dims: number[]; items: number } {
  const view = new DataView(header.buffer, header.byteOffset, 4 + 4 * nDims);
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
  return { dims, items };
}

/**
 * A header may not claim more items than its file can hold: a plain file
 * its size, a gzipped one what its size can inflate to. Said before the
 * data is allocated (up to 2 GiB) and read or inflated.
 */
export function checkClaim(
  headerLength: number,
  items: number,
  dims: number[],
  bound: { bytes: number; gzipSize?: number },
  name: string,
): void {
  if (headerLength + items <= bound.bytes) return;
  if (bound.gzipSize === undefined) checkDataLength(bound.bytes - headerLength, items, dims, name);
  throw new DataError(
    `${name}: header says ${items} items (dims ${formatDims(dims)}), more than a gzip file of ${bound.gzipSize} bytes can hold (at most ${bound.bytes} bytes inflated)`,
  );
}

/** The data must be exactly the header's number of items. */
export function checkDataLength(dataLength: number, items: number, dims: number[], name: string): void {
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
}

/** The error for a file shorter than the 4-byte magic. */
export function truncatedMagic(name: string, length: number): DataError {
  return new DataError(`${name}: truncated: ${length} bytes, shorter than the 4-byte IDX magic`);
}

/** The error for a file that ends inside its header. */
export function truncatedHeader(
  name: string,
  nDims: number,
  headerLength: number,
  length: number,
): DataError {
  return new DataError(
    `${name}: truncated header: ${nDims} dimension(s) need ${headerLength} bytes, the file has ${length}`,
  );
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, "0");
}

function formatDims(dims: number[]): string {
  return dims.join("x");
}
