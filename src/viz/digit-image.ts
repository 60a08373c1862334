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
 *
 * The scaling and centring is centre-digit.ts, which the live page's drawing
 * box runs too: this module reads the PNG and finds its ink.
 */
import { centreDigit, type InkImage } from "./centre-digit.js";
import { ImageError, type RgbaImage, readPng } from "./png.js";

export { centreDigit, ImageError, type InkImage };

/** Contrast (0..1) between the strongest ink and the background below which the image counts as blank. */
const MIN_CONTRAST = 0.1;

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
