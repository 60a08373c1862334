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
import {
  checkClaim,
  checkDataLength,
  checkPrefix,
  DataError,
  hexStart,
  type IdxArray,
  MAX_IDX_ITEMS,
  readDims,
  truncatedHeader,
  truncatedMagic,
} from "./idx-header.js";
import { openRegularFile } from "./regular-file.js";

export { DataError, type IdxArray, MAX_IDX_ITEMS };

/**
 * Deflate expands at most about 1032:1 (a run of one byte). A gzipped
 * header that claims more items than its file could inflate to is refused
 * before anything is allocated or inflated.
 */
const MAX_DEFLATE_RATIO = 1032;

/** The most bytes one read asks for (far below the 2^31 a single read may not reach). */
const READ_CHUNK = 1 << 30;

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
