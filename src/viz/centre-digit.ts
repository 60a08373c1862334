/**
 * MNIST's centring of a digit: the ink's bounding box scaled into a 20x20
 * box (of 28) by area averaging, placed with its centre of mass at the
 * centre of the field. Used by `gradfleet predict` (through digit-image.ts)
 * and, compiled as it is, by the live page's drawing box (the server sends
 * dist/src/viz/centre-digit.js to the browser as /viz/centre-digit.js).
 *
 * So this module imports nothing and touches nothing but its arguments: the
 * browser loads it as it stands, with no bundler and no Node.
 */

/** Ink below this (0..1, after background removal) does not count towards the bounding box. */
export const BOX_THRESHOLD = 0.1;

/** Ink intensities: `width * height` values in [0, 1], 1 = full ink. */
export interface InkImage {
  width: number;
  height: number;
  ink: Float64Array;
}

/**
 * Scales and centres ink the MNIST way: bounding box (ink > 0.1) fitted into
 * a `box x box` square keeping the aspect ratio, by area averaging; then put
 * in a `side x side` field with the centre of mass at the centre (shifted by
 * whole pixels, as MNIST was; the shift is clamped so no ink leaves the field).
 *
 * @returns `side * side` bytes, 0 = background, 255 = full ink (all 0 when no ink passes the threshold).
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

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}
