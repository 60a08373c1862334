/**
 * `gradfleet weights`: a PNG of the first hidden layer, one tile per neuron
 * (its weights from every input pixel, laid out as the input image) and a
 * strip for its bias. The colours, scales and layout are weight-tiles.ts's,
 * which the live page draws with too. The same model gives the same pixels,
 * and {@link encodeRgbPng} pins the encoder, so the same bytes.
 */
import type { Model } from "../core/model-file.js";
import { layoutOf } from "../core/spec.js";
import { encodeRgbPng } from "./png.js";
import { BACKGROUND, divergingColour, paintTiles, tileGrid } from "./weight-tiles.js";

export { BACKGROUND, divergingColour };

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
 * of tiles (see weight-tiles.ts for the colours, scales and layout).
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
  const g = tileGrid(L.nOut, L.nIn, [tileRows, tileCols], scale);
  const rgb = new Uint8Array(g.width * g.height * 3);
  const p = model.params;
  const n = L.nOut;
  // Input-major layout: the weight from input k to neuron j is W[k * nOut + j].
  const weight = (j: number, k: number) => p[L.w + k * n + j];
  const bias = (j: number) => p[L.b + j];
  paintTiles(g, weight, bias, rgb, 3);
  return {
    width: g.width,
    height: g.height,
    rgb,
    columns: g.columns,
    rows: g.rows,
    tileWidth: g.tileWidth,
    tileHeight: g.tileHeight,
    tileShape: g.tileShape,
    neurons: n,
  };
}

/** {@link renderWeights} encoded as PNG bytes (deterministic for the same model). */
export function weightsPng(model: Model, opts: WeightsImageOptions = {}): Buffer {
  const img = renderWeights(model, opts);
  return encodeRgbPng(img.width, img.height, img.rgb);
}
