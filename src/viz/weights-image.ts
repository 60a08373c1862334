/**
 * A picture of the first hidden layer: one tile per neuron showing the
 * weights from every input pixel to it, laid out as the input image
 * (28x28 for MNIST), as 3Blue1Brown's videos draw them. Under each tile a
 * strip shows the neuron's bias.
 *
 * Colour map (diverging): negative blue, zero black, positive red; the
 * brightness is the magnitude. Scales: each tile is scaled symmetrically by
 * its own largest |weight| (so every neuron's pattern is visible, whatever
 * its overall size); the bias strips share one scale, the largest |bias| of
 * the layer (so biases can be compared between neurons).
 *
 * Grid: ceil(sqrt(n)) columns, rows as needed, filled row by row in neuron
 * order (neuron 0 top left). The same model gives the same pixels, and
 * {@link encodeRgbPng} pins the encoder, so the same bytes.
 */
import type { Model } from "../core/model-file.js";
import { layoutOf } from "../core/spec.js";
import { encodeRgbPng } from "./png.js";

/** Options of {@link renderWeights}. */
export interface WeightsImageOptions {
  /** Screen pixels per weight (default 4). */
  scale?: number;
  /**
   * Shape of a tile, [rows, cols] with rows * cols = the number of inputs.
   * Default: the square side x side when the input count is a square.
   */
  tileShape?: [number, number];
}

/** An RGB raster, `width * height * 3` bytes, row-major. */
export interface RgbImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

/** The rendered grid and its geometry, for tests and callers that draw over it. */
export interface WeightsImage extends RgbImage {
  /** Tiles per row and number of rows of tiles. */
  columns: number;
  rows: number;
  /** One tile's size in screen pixels. */
  tileWidth: number;
  tileHeight: number;
  /** One tile's size in weights (input rows and columns). */
  tileShape: [number, number];
  /** Neurons drawn (the first hidden layer's size). */
  neurons: number;
}

/** Background between tiles: mid grey, so that black (zero) tiles still show their edges. */
export const BACKGROUND: readonly [number, number, number] = [128, 128, 128];
const POSITIVE: readonly [number, number, number] = [255, 64, 40];
const NEGATIVE: readonly [number, number, number] = [48, 128, 255];

/**
 * The diverging colour of `t` in [-1, 1] (clamped): -1 blue, 0 black, +1 red.
 */
export function divergingColour(t: number): [number, number, number] {
  const v = Number.isFinite(t) ? Math.max(-1, Math.min(1, t)) : 0;
  const c = v >= 0 ? POSITIVE : NEGATIVE;
  const s = Math.abs(v);
  return [Math.round(c[0] * s), Math.round(c[1] * s), Math.round(c[2] * s)];
}

/**
 * The tile shape of an input of `n` values: the square side x side.
 * @throws {Error} when `n` is not a perfect square, saying what to pass instead.
 */
export function squareTileShape(n: number): [number, number] {
  const side = Math.round(Math.sqrt(n));
  if (side * side !== n) {
    throw new Error(
      `the input layer has ${n} values, which is not a square image (rows x cols with rows = cols), so its weights cannot be drawn as square tiles`,
    );
  }
  return [side, side];
}

/**
 * Renders the first hidden layer's weights and biases of `model` as a grid
 * of tiles (see the module comment for the colours, scales and layout).
 */
export function renderWeights(model: Model, opts: WeightsImageOptions = {}): WeightsImage {
  const scale = opts.scale ?? 4;
  if (!Number.isInteger(scale) || scale < 1 || scale > 64) {
    throw new Error(`scale: ${scale} is not a whole number from 1 to 64`);
  }
  const layout = layoutOf(model.spec.layers);
  if (model.params.length !== layout.size) {
    throw new Error(`the model has ${model.params.length} parameters, its spec needs ${layout.size}`);
  }
  const L = layout.layers[0];
  const [tileRows, tileCols] = opts.tileShape ?? squareTileShape(L.nIn);
  if (tileRows * tileCols !== L.nIn) {
    throw new Error(`tileShape: ${tileRows}x${tileCols} is not the ${L.nIn} inputs of the first layer`);
  }
  const n = L.nOut;
  const columns = Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / columns);
  const pad = 2 * scale;
  const stripGap = scale;
  const stripHeight = 2 * scale;
  const tileWidth = tileCols * scale;
  const tileHeight = tileRows * scale;
  const cellWidth = tileWidth + pad;
  const cellHeight = tileHeight + stripGap + stripHeight + pad;
  const width = pad + columns * cellWidth;
  const height = pad + rows * cellHeight;

  const rgb = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) rgb.set(BACKGROUND, p * 3);
  const fill = (x: number, y: number, w: number, h: number, c: readonly number[]) => {
    for (let yy = y; yy < y + h; yy++) {
      for (let xx = x; xx < x + w; xx++) rgb.set(c, (yy * width + xx) * 3);
    }
  };

  const p = model.params;
  let biasMax = 0;
  for (let j = 0; j < n; j++) biasMax = Math.max(biasMax, Math.abs(p[L.b + j]));
  for (let j = 0; j < n; j++) {
    const x0 = pad + (j % columns) * cellWidth;
    const y0 = pad + Math.floor(j / columns) * cellHeight;
    // Input-major layout: the weight from input k to neuron j is W[k * nOut + j].
    let wMax = 0;
    for (let k = 0; k < L.nIn; k++) wMax = Math.max(wMax, Math.abs(p[L.w + k * n + j]));
    for (let k = 0; k < L.nIn; k++) {
      const t = wMax > 0 ? p[L.w + k * n + j] / wMax : 0;
      const r = Math.floor(k / tileCols);
      const c = k % tileCols;
      fill(x0 + c * scale, y0 + r * scale, scale, scale, divergingColour(t));
    }
    const tb = biasMax > 0 ? p[L.b + j] / biasMax : 0;
    fill(x0, y0 + tileHeight + stripGap, tileWidth, stripHeight, divergingColour(tb));
  }
  return {
    width,
    height,
    rgb,
    columns,
    rows,
    tileWidth,
    tileHeight,
    tileShape: [tileRows, tileCols],
    neurons: n,
  };
}

/** {@link renderWeights} encoded as PNG bytes (deterministic for the same model). */
export function weightsPng(model: Model, opts: WeightsImageOptions = {}): Buffer {
  const img = renderWeights(model, opts);
  return encodeRgbPng(img.width, img.height, img.rgb);
}
