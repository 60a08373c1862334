/**
 * Any PNG of a digit in, an MNIST-style input out: the way LeCun et al. made
 * MNIST. The digit (light ink on a dark field, as MNIST stores it) is cut to
 * its bounding box, scaled to fit a 20x20 box preserving its aspect ratio
 * (area averaging, so thin strokes become grey rather than vanish), and
 * placed in a 28x28 field so that its centre of mass is at the centre.
 *
 * A hand-drawn PNG is usually the opposite, dark ink on white paper: the
 * polarity is detected from the image's border (the background) and the
 * image inverted when the background is light. Other sizes than 28x28
 * (any square `side x side` input) scale the 20-of-28 box in proportion.
 */
import { ImageError, type RgbaImage, readPng } from "./png.js";

export { ImageError };

/** Ink below this (0..1, after background removal) does not count towards the bounding box. */
const BOX_THRESHOLD = 0.1;
/** Contrast (0..1) between the strongest ink and the background below which the image counts as blank. */
const MIN_CONTRAST = 0.1;

/** Ink intensities: `width * height` values in [0, 1], 1 = full ink. */
export interface InkImage {
  width: number;
  height: number;
  ink: Float64Array;
}

/** How {@link inkOf} read the image, for messages. */
export interface InkInfo {
  /** The background was light (dark ink on light paper) and the image was inverted. */
  inverted: boolean;
  /** The background was transparent and alpha (coverage) was taken as the ink. */
  alphaAsInk: boolean;
}

/**
 * The ink of an RGBA image in [0, 1], MNIST polarity (ink bright), with the
 * background level subtracted and the strongest ink scaled to 1.
 *
 * - Opaque background: the colours are composited over white, turned into
 *   luminance (Rec. 601), and inverted when the border (the outermost ring
 *   of pixels, which a centred digit does not touch) is light on average.
 * - Transparent background (mean border alpha below one half, as a canvas
 *   drawing exported as PNG often is): the alpha channel is the ink, whatever
 *   the stroke colour, since over white a white stroke would vanish.
 *
 * @throws {ImageError} when the image holds no ink (one flat level), naming `name`.
 */
export function inkOf(img: RgbaImage, name: string): { image: InkImage; info: InkInfo } {
  const { width, height, data } = img;
  const n = width * height;
  const border = borderIndices(width, height);
  let borderAlpha = 0;
  for (const p of border) borderAlpha += data[p * 4 + 3] / 255;
  borderAlpha /= border.length;
  const alphaAsInk = borderAlpha < 0.5;

  const ink = new Float64Array(n);
  for (let p = 0; p < n; p++) {
    const o = p * 4;
    const a = data[o + 3] / 255;
    if (alphaAsInk) {
      ink[p] = a;
    } else {
      const luma = (0.299 * data[o] + 0.587 * data[o + 1] + 0.114 * data[o + 2]) / 255;
      ink[p] = luma * a + (1 - a); // over white
    }
  }
  let inverted = false;
  if (!alphaAsInk) {
    let borderMean = 0;
    for (const p of border) borderMean += ink[p];
    borderMean /= border.length;
    inverted = borderMean > 0.5;
    if (inverted) for (let p = 0; p < n; p++) ink[p] = 1 - ink[p];
  }

  // The background is the border's median, so a stroke that touches the
  // border does not shift it, and grey paper becomes black.
  const background = median(border.map((p) => ink[p]));
  let peak = 0;
  for (let p = 0; p < n; p++) if (ink[p] > peak) peak = ink[p];
  if (peak - background < MIN_CONTRAST) {
    throw new ImageError(
      `${name}: no digit found: the image is one flat level (contrast ${(peak - background).toFixed(3)}, needs ${MIN_CONTRAST})`,
    );
  }
  const span = peak - background;
  for (let p = 0; p < n; p++) ink[p] = Math.min(1, Math.max(0, (ink[p] - background) / span));
  return { image: { width, height, ink }, info: { inverted, alphaAsInk } };
}

/**
 * Scales and centres ink the MNIST way: bounding box (ink > 0.1) fitted into
 * a `box x box` square keeping the aspect ratio, by area averaging; then put
 * in a `side x side` field with the centre of mass at the centre (shifted by
 * whole pixels, as MNIST was; the shift is clamped so no ink leaves the field).
 *
 * @returns `side * side` bytes, 0 = background, 255 = full ink.
 */
export function centreDigit(src: InkImage, side = 28, box = Math.round((side * 20) / 28)): Uint8Array {
  const { width, height, ink } = src;
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink[y * width + x] > BOX_THRESHOLD) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  const out = new Uint8Array(side * side);
  if (x1 < 0) return out;
  const bw = x1 - x0 + 1;
  const bh = y1 - y0 + 1;
  const scale = box / Math.max(bw, bh);
  const tw = Math.max(1, Math.min(box, Math.round(bw * scale)));
  const th = Math.max(1, Math.min(box, Math.round(bh * scale)));
  const small = resampleArea(ink, width, x0, y0, bw, bh, tw, th);

  // Centre of mass, in pixel-centre coordinates of the small image.
  let mass = 0;
  let mx = 0;
  let my = 0;
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      const v = small[y * tw + x];
      mass += v;
      mx += v * (x + 0.5);
      my += v * (y + 0.5);
    }
  }
  const cx = mass > 0 ? mx / mass : tw / 2;
  const cy = mass > 0 ? my / mass : th / 2;
  const ox = clamp(Math.round(side / 2 - cx), 0, side - tw);
  const oy = clamp(Math.round(side / 2 - cy), 0, side - th);
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      out[(oy + y) * side + ox + x] = Math.round(small[y * tw + x] * 255);
    }
  }
  return out;
}

/**
 * Turns a decoded PNG into a network input of `side * side` bytes (MNIST's
 * 28x28 by default). `name` (the file) appears in errors.
 */
export function digitFromImage(
  img: RgbaImage,
  name: string,
  side = 28,
): { pixels: Uint8Array; info: InkInfo } {
  const { image, info } = inkOf(img, name);
  return { pixels: centreDigit(image, side), info };
}

/**
 * Reads a PNG file and turns it into a network input of `side * side` bytes.
 * @throws {ImageError} naming the file when it is not a readable PNG or holds no digit.
 */
export async function readDigitImage(
  path: string,
  side = 28,
): Promise<{ pixels: Uint8Array; info: InkInfo }> {
  return digitFromImage(await readPng(path), path, side);
}

/**
 * Area-average resampling of the `bw x bh` window at (x0, y0) of `src`
 * (row stride `stride`) to `tw x th`: every output pixel is the mean of the
 * source area it covers, partial pixels weighted by their overlap. Separable:
 * rows first, then columns.
 */
function resampleArea(
  src: Float64Array,
  stride: number,
  x0: number,
  y0: number,
  bw: number,
  bh: number,
  tw: number,
  th: number,
): Float64Array {
  const xs = areaWeights(bw, tw);
  const ys = areaWeights(bh, th);
  const mid = new Float64Array(bh * tw);
  for (let y = 0; y < bh; y++) {
    const row = (y0 + y) * stride + x0;
    for (let x = 0; x < tw; x++) {
      let s = 0;
      for (const [i, w] of xs[x]) s += src[row + i] * w;
      mid[y * tw + x] = s;
    }
  }
  const out = new Float64Array(th * tw);
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      let s = 0;
      for (const [i, w] of ys[y]) s += mid[i * tw + x] * w;
      out[y * tw + x] = s;
    }
  }
  return out;
}

/** For each of `m` output cells over `n` input cells: (input index, weight) pairs summing to 1. */
function areaWeights(n: number, m: number): [number, number][][] {
  const step = n / m;
  const result: [number, number][][] = [];
  for (let o = 0; o < m; o++) {
    const a = o * step;
    const b = (o + 1) * step;
    const pairs: [number, number][] = [];
    for (let i = Math.floor(a); i < Math.min(n, Math.ceil(b)); i++) {
      const overlap = Math.min(b, i + 1) - Math.max(a, i);
      if (overlap > 0) pairs.push([i, overlap / step]);
    }
    result.push(pairs);
  }
  return result;
}

/** Indices of the outermost ring of pixels (each once). */
function borderIndices(width: number, height: number): number[] {
  const out: number[] = [];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (y === 0 || y === height - 1 || x === 0 || x === width - 1) out.push(y * width + x);
    }
  }
  return out;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}
