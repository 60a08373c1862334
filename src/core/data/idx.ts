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
import type { FileHandle } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { createGunzip, gunzipSync, constants as zlibConstants } from "node:zlib";
import { openRegularFile } from "./regular-file.js";

/** A dataset file is missing, malformed or inconsistent. The message names the file. */
export class DataError extends Error {
  override name = "DataError";
}

/** The content of one IDX file: its dimension sizes and its bytes. */
export interface IdxArray {
  /** Dimension sizes, outermost first (e.g. `[60000, 28, 28]`). */
  dims: number[];
  /**
   * product(dims) bytes, row-major: from {@link parseIdx} a view into the
   * bytes parsed, from {@link readIdxFile} the array its `allocate` made.
   */
  data: Uint8Array;
}

/**
 * Largest number of items accepted in one file: just under 2 GiB. Exclusive
 * of 2^31 on purpose: one read of 2^31 bytes does not fit the 32-bit signed
 * length that Node's file reads assert on (the process aborts).
 */
export const MAX_IDX_ITEMS = 2 ** 31 - 1;

/**
 * Deflate expands at most about 1032:1 (a run of one byte). A gzipped
 * header that claims more items than its file could inflate to is refused
 * before anything is allocated or inflated.
 */
const MAX_DEFLATE_RATIO = 1032;

/** The most bytes one read asks for (far below the 2^31 a single read may not reach). */
const READ_CHUNK = 1 << 30;

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

/** Makes the array an IDX file's data is read into, given its length in bytes. */
export type AllocateBytes = (bytes: number) => Uint8Array;

const newBytes: AllocateBytes = (bytes) => new Uint8Array(bytes);

/**
 * Reads and parses one IDX file, gunzipping it (off the main thread) if it
 * is gzipped. The data goes straight into its final array as the file is
 * read or inflated: the file's bytes are never held whole a second time.
 *
 * @param path the file to read; it names the file in every error message
 * @param expectedDims if given, the number of dimensions the file must have
 * @param allocate makes the array of the data (`data` of the result, whole);
 *   a new Uint8Array by default
 * @throws DataError if the file cannot be read or is malformed
 */
export async function readIdxFile(
  path: string,
  expectedDims?: number,
  allocate: AllocateBytes = newBytes,
): Promise<IdxArray> {
  const { file, size } = await openIdx(path);
  try {
    const gzip = await isGzipFile(file, path);
    const into = new IdxAssembler(path, expectedDims, allocate, claimBound(size, gzip));
    if (gzip) await inflateFile(file, path, into);
    else await readFileInto(file, path, into);
    return into.finish();
  } finally {
    await file.close().catch(() => {});
  }
}

/**
 * The dimensions an IDX file's header declares, checked as {@link readIdxFile}
 * checks them (including against what the file's size can hold), without
 * reading or inflating the data: so that files that disagree (images and
 * labels, train and test) are refused before gigabytes are read.
 *
 * @returns the dimensions, or undefined when a gzipped header does not come
 *   out of the first {@link HEADER_PEEK_BYTES} of the file (then the full
 *   read checks it)
 * @throws DataError naming the file and what is wrong with its header
 */
export async function readIdxHeader(path: string, expectedDims?: number): Promise<number[] | undefined> {
  const { file, size } = await openIdx(path);
  try {
    const gzip = await isGzipFile(file, path);
    const peek = Buffer.alloc(Math.min(size, HEADER_PEEK_BYTES));
    const { bytesRead } = await file.read(peek, 0, peek.length, 0).catch((err: unknown) => {
      throw cannotRead(path, err);
    });
    let head: Uint8Array = peek.subarray(0, bytesRead);
    if (gzip) {
      try {
        // Sync flush: inflate what there is of a stream cut short, without calling it corrupt.
        head = gunzipSync(head, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
      } catch {
        return undefined; // corrupt from the start: the full read says how
      }
    }
    const into = new IdxAssembler(path, expectedDims, () => new Uint8Array(0), claimBound(size, gzip));
    into.push(head.subarray(0, Math.min(head.length, 4 + 4 * 255)));
    if (into.headerDims) return into.headerDims;
    if (!gzip) into.finish(); // a plain file that ends inside its header: say so now
    return undefined;
  } finally {
    await file.close().catch(() => {});
  }
}

/** Compressed bytes inflated to find a gzipped header (at most ~16 MB out, by the deflate ratio). */
const HEADER_PEEK_BYTES = 16 * 1024;

/** Opens an IDX file: a regular file only (a FIFO would block, a device never ends). */
async function openIdx(path: string): Promise<{ file: FileHandle; size: number }> {
  try {
    return await openRegularFile(path, "the file");
  } catch (err) {
    throw new DataError((err as Error).message);
  }
}

/** Whether the file holds gzip data (by its magic, or refused when named .gz without it). */
async function isGzipFile(file: FileHandle, path: string): Promise<boolean> {
  // The gzip magic is 2 bytes; 4 show what the file starts with when it is not gzip after all.
  const start = new Uint8Array(4);
  const { bytesRead } = await file.read(start, 0, 4, 0).catch((err: unknown) => {
    throw cannotRead(path, err);
  });
  return needsGunzip(start.subarray(0, bytesRead), path);
}

/** What a file of `size` bytes can hold (header and data): itself, or what its gzip data can inflate to. */
function claimBound(size: number, gzip: boolean): { bytes: number; gzipSize?: number } {
  return gzip ? { bytes: size * MAX_DEFLATE_RATIO, gzipSize: size } : { bytes: size };
}

/** Reads an uncompressed file straight into the assembler's arrays. */
async function readFileInto(file: FileHandle, path: string, into: IdxAssembler): Promise<void> {
  let position = 0;
  try {
    for (;;) {
      const space = into.space();
      if (space.length === 0) break;
      const length = Math.min(space.length, READ_CHUNK);
      const { bytesRead } = await file.read(space, 0, length, position);
      if (bytesRead === 0) return; // end of file: finish tells what is missing
      position += bytesRead;
      into.received(bytesRead);
    }
    // Header and data are complete: whatever follows is counted, not read.
    into.trailing(Math.max(0, (await file.stat()).size - position));
  } catch (err) {
    throw err instanceof DataError ? err : cannotRead(path, err);
  }
}

/** Inflates a gzipped file chunk by chunk into the assembler's arrays. */
async function inflateFile(file: FileHandle, path: string, into: IdxAssembler): Promise<void> {
  // Large chunks: fewer (short-lived) chunk buffers for the same bytes.
  const gunzip = createGunzip({ chunkSize: INFLATE_CHUNK });
  const source = file.createReadStream({ start: 0, autoClose: false, highWaterMark: INFLATE_CHUNK });
  let inflated = 0;
  try {
    await pipeline(source, gunzip, async (chunks: AsyncIterable<Buffer>) => {
      for await (const chunk of chunks) {
        inflated += chunk.length;
        // As gunzip's maxOutputLength: a corrupt or hostile .gz must not inflate without bound.
        if (inflated > GUNZIP_LIMIT.maxOutputLength) {
          throw gunzipError(path, new Error(`inflates to over ${GUNZIP_LIMIT.maxOutputLength} bytes`));
        }
        into.push(chunk);
      }
    });
  } catch (err) {
    if (err instanceof DataError) throw err;
    // zlib's errors carry a Z_* code; anything else came from reading the file.
    const code = (err as { code?: unknown }).code;
    throw typeof code === "string" && code.startsWith("Z_") ? gunzipError(path, err) : cannotRead(path, err);
  }
}

/** Chunk size of reading and inflating a gzipped file. */
const INFLATE_CHUNK = 1 << 20;

function cannotRead(path: string, err: unknown): DataError {
  const why = err instanceof Error ? err.message : String(err);
  return new DataError(`${path}: cannot read: ${why}`);
}

/**
 * Builds an {@link IdxArray} from a file's bytes as they come: the header
 * into a small buffer, then, once the header is checked, the data straight
 * into the array `allocate` makes. Bytes past the data are only counted.
 * The checks and messages are {@link parseIdx}'s.
 */
class IdxAssembler {
  /** Room for the largest header (4 + 4 * 255 bytes). */
  private readonly header = new Uint8Array(4 + 4 * 255);
  /** Header bytes needed so far: 4 until the number of dimensions is known. */
  private headerLength = 4;
  /** Bytes received into the header and the data. */
  private got = 0;
  private nDims = 0;
  private dims: number[] = [];
  private items = 0;
  private data: Uint8Array | undefined;
  private extra = 0;

  /**
   * @param bound what the file can hold at most (header and data), from its
   *   size: a header claiming more is refused before the data is allocated
   */
  constructor(
    private readonly name: string,
    private readonly expectedDims: number | undefined,
    private readonly allocate: AllocateBytes,
    private readonly bound: { bytes: number; gzipSize?: number } = { bytes: Number.POSITIVE_INFINITY },
  ) {}

  /** The header's dimensions once it is complete and checked. */
  get headerDims(): number[] | undefined {
    return this.data ? this.dims : undefined;
  }

  /** Where the next bytes go: the rest of the header or of the data; empty once both are complete. */
  space(): Uint8Array {
    if (!this.data) return this.header.subarray(this.got, this.headerLength);
    return this.data.subarray(this.got - this.headerLength);
  }

  /** `n` bytes were written at the start of {@link space}. */
  received(n: number): void {
    this.got += n;
    if (this.data || this.got < this.headerLength) return;
    if (this.headerLength === 4) {
      this.nDims = checkPrefix(this.header, this.name, this.expectedDims);
      this.headerLength = 4 + 4 * this.nDims;
    } else {
      ({ dims: this.dims, items: this.items } = readDims(this.header, this.nDims, this.name));
      checkClaim(this.headerLength, this.items, this.dims, this.bound, this.name);
      this.data = this.allocate(this.items);
    }
  }

  /** `n` bytes followed the data. */
  trailing(n: number): void {
    this.extra += n;
  }

  /** Takes the next bytes of the file, wherever they belong. */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      const space = this.space();
      if (space.length === 0) {
        this.trailing(chunk.length - at);
        return;
      }
      const n = Math.min(space.length, chunk.length - at);
      space.set(chunk.subarray(at, at + n));
      this.received(n);
      at += n;
    }
  }

  /** The parsed file, once every byte has been received. */
  finish(): IdxArray {
    if (this.got < 4) throw truncatedMagic(this.name, this.got);
    if (!this.data) throw truncatedHeader(this.name, this.nDims, this.headerLength, this.got);
    checkDataLength(this.got - this.headerLength + this.extra, this.items, this.dims, this.name);
    return { dims: this.dims, data: this.data };
  }
}

/** Parses uncompressed IDX bytes; see {@link parseIdx}. */
function parseRawIdx(bytes: Uint8Array, name: string, expectedDims?: number): IdxArray {
  if (bytes.length < 4) throw truncatedMagic(name, bytes.length);
  const nDims = checkPrefix(bytes, name, expectedDims);
  const headerLength = 4 + 4 * nDims;
  if (bytes.length < headerLength) throw truncatedHeader(name, nDims, headerLength, bytes.length);
  const { dims, items } = readDims(bytes, nDims, name);
  checkDataLength(bytes.length - headerLength, items, dims, name);
  // A plain Uint8Array view (not a Buffer subarray): consumers get one type.
  const data = new Uint8Array(bytes.buffer, bytes.byteOffset + headerLength, items);
  return { dims, data };
}

/** Checks the first 4 bytes (magic, type, number of dimensions); returns the number of dimensions. */
function checkPrefix(bytes: Uint8Array, name: string, expectedDims: number | undefined): number {
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
function readDims(header: Uint8Array, nDims: number, name: string): { dims: number[]; items: number } {
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
function checkClaim(
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
function checkDataLength(dataLength: number, items: number, dims: number[], name: string): void {
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

function truncatedMagic(name: string, length: number): DataError {
  return new DataError(`${name}: truncated: ${length} bytes, shorter than the 4-byte IDX magic`);
}

function truncatedHeader(name: string, nDims: number, headerLength: number, length: number): DataError {
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
