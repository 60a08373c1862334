/**
 * PNG in and out through pngjs (pure JS, no native addon), with errors that
 * name the file and say what is wrong instead of pngjs's stream jargon, and
 * an encoder whose options are pinned so the same pixels give the same bytes.
 */

import { PNG } from "pngjs";
import { InputFileError, readRegularFile } from "../core/data/regular-file.js";

/** A PNG that cannot be read: not a PNG, truncated, corrupt or too large. */
export class ImageError extends Error {
  override name = "ImageError";
}

/** Decoded pixels: 8-bit RGBA, row-major, `width * height * 4` bytes. */
export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** The 8 bytes every PNG file starts with. */
export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

/**
 * Largest image decoded, in pixels (4096 x 4096, 64 MB of RGBA): a small
 * compressed file can claim a huge size, and pngjs would allocate it all
 * before noticing. More than any photo of a digit needs.
 */
export const MAX_PNG_PIXELS = 4096 * 4096;

/**
 * Longest side: a 1 x 16,000,000 image is few pixels but one huge row (every
 * pixel is on the border the background is measured on, and scaling it down
 * weighs millions of source pixels per output pixel).
 */
export const MAX_PNG_SIDE = 16_384;

/**
 * Largest inflated image data (the filtered scanlines), in bytes: what a
 * decoder must inflate, hold and unfilter, and 16-bit samples or extra
 * channels cost several times the pixel count. 64 MiB is a 4096 x 4096 RGBA
 * image at 8 bits per sample.
 */
export const MAX_PNG_DECODED_BYTES = 64 * 1024 * 1024;

/** Largest PNG file read (a valid image under the limits above compresses to less). */
export const MAX_PNG_FILE_BYTES = 128 * 1024 * 1024;

/** Samples per pixel of each PNG colour type. */
const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/**
 * Decodes PNG bytes of any colour type and bit depth (grayscale, palette,
 * RGB, with or without alpha, 1 to 16 bits, interlaced or not) to 8-bit RGBA.
 * `name` (usually the file path) starts every error message.
 *
 * @throws {ImageError} when the bytes are not a PNG, end early, or are corrupt.
 */
export function decodePng(bytes: Uint8Array, name: string): RgbaImage {
  if (bytes.length < PNG_SIGNATURE.length || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new ImageError(`${name}: not a PNG file (it does not start with the PNG signature)`);
  }
  // IHDR must come first: 4-byte length, "IHDR", width, height (big-endian).
  if (bytes.length < 33) {
    throw new ImageError(`${name}: truncated PNG (${bytes.length} bytes; the header alone needs 33)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunkType = String.fromCharCode(...bytes.subarray(12, 16));
  if (chunkType !== "IHDR") {
    throw new ImageError(
      `${name}: not a valid PNG: the first chunk is ${JSON.stringify(chunkType)}, not IHDR`,
    );
  }
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  if (width === 0 || height === 0)
    throw new ImageError(`${name}: not a valid PNG: it is ${width}x${height} pixels`);
  if (width * height > MAX_PNG_PIXELS) {
    throw new ImageError(
      `${name}: the image is ${width}x${height} pixels; at most ${MAX_PNG_PIXELS} pixels are accepted`,
    );
  }
  if (Math.max(width, height) > MAX_PNG_SIDE) {
    throw new ImageError(
      `${name}: the image is ${width}x${height} pixels; at most ${MAX_PNG_SIDE} pixels on a side are accepted`,
    );
  }
  checkDecodedBytes(bytes[24], bytes[25], width, height, name);
  checkChunks(bytes, view, name);
  let png: PNG;
  try {
    png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new ImageError(`${name}: not a valid PNG: ${(e as Error).message ?? e}`);
  }
  return {
    width: png.width,
    height: png.height,
    data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length),
  };
}

/**
 * Refuses an image whose decoded data would exceed {@link MAX_PNG_DECODED_BYTES}:
 * the cost of decoding is the inflated scanlines (bit depth times channels),
 * not the pixel count alone.
 */
function checkDecodedBytes(
  depth: number,
  colourType: number,
  width: number,
  height: number,
  name: string,
): void {
  const channels = CHANNELS[colourType];
  if (channels === undefined || ![1, 2, 4, 8, 16].includes(depth)) {
    throw new ImageError(`${name}: not a valid PNG: colour type ${colourType} with bit depth ${depth}`);
  }
  // One filter byte per row, then the packed samples.
  const decoded = height * (1 + Math.ceil((width * channels * depth) / 8));
  if (decoded > MAX_PNG_DECODED_BYTES) {
    throw new ImageError(
      `${name}: the image is ${width}x${height} pixels of ${channels} channel(s) at ${depth} bits, ${decoded} bytes decoded; at most ${MAX_PNG_DECODED_BYTES} are accepted`,
    );
  }
}

/**
 * Walks the chunk list up to IEND, so that a file cut short is reported as
 * truncated (pngjs only says that "read requests" were left waiting).
 */
function checkChunks(bytes: Uint8Array, view: DataView, name: string): void {
  let at = PNG_SIGNATURE.length;
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const end = at + 12 + length;
    if (end > bytes.length) {
      throw new ImageError(
        `${name}: truncated PNG (its ${JSON.stringify(type)} chunk needs ${end - bytes.length} more bytes than the file has)`,
      );
    }
    if (type === "IEND") return;
    at = end;
  }
  throw new ImageError(`${name}: truncated PNG (the file ends before its last chunk, IEND)`);
}

/**
 * Reads and decodes a PNG file.
 * @throws {ImageError} when the file cannot be read or is not a valid PNG.
 */
export async function readPng(path: string): Promise<RgbaImage> {
  let bytes: Buffer;
  try {
    // A regular file only: /dev/zero never ends and a FIFO never answers.
    bytes = await readRegularFile(path, "the image", MAX_PNG_FILE_BYTES);
  } catch (e) {
    throw e instanceof InputFileError ? new ImageError(e.message) : e;
  }
  return decodePng(bytes, path);
}

/**
 * Encodes 8-bit RGB pixels (`width * height * 3` bytes) as a PNG. Every
 * encoder option is pinned (filter, deflate level, strategy, chunk size),
 * so the same pixels give the same bytes with the same zlib.
 */
export function encodeRgbPng(width: number, height: number, rgb: Uint8Array): Buffer {
  if (rgb.length !== width * height * 3) {
    throw new Error(
      `encodeRgbPng: ${rgb.length} bytes for ${width}x${height} RGB, expected ${width * height * 3}`,
    );
  }
  const png = new PNG({ width, height, colorType: 2, inputColorType: 2, inputHasAlpha: false, bitDepth: 8 });
  png.data = Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength);
  return PNG.sync.write(png, {
    colorType: 2,
    inputColorType: 2,
    inputHasAlpha: false,
    bitDepth: 8,
    filterType: 4, // Paeth: one fixed filter, no per-row heuristics.
    deflateLevel: 9,
    deflateStrategy: 0, // Z_DEFAULT_STRATEGY
    deflateChunkSize: 32 * 1024,
  });
}
