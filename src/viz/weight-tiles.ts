/**
 * The first hidden layer drawn as tiles, one per neuron, showing the weights
 * from every input pixel to it, laid out as the input image (28x28 for
 * MNIST), as 3Blue1Brown's videos draw them. Under each tile a strip shows
 * the neuron's bias. `gradfleet weights` paints it into a PNG
 * (weights-image.ts); the live page paints it into a canvas, with this very
 * code: the server sends dist/src/viz/weight-tiles.js to the browser as
 * /viz/weight-tiles.js. So this module imports nothing and touches nothing
 * but its arguments.
 *
 * Colour map (diverging): negative blue, zero black, positive red; the
 * brightness is the magnitude. Scales: each tile is scaled symmetrically by
 * its own largest |weight| (so every neuron's pattern is visible, whatever
 * its overall size); the bias strips share one scale, the largest |bias| of
 * the layer (so biases can be compared between neurons).
 *
 * Grid: ceil(sqrt(n)) columns, rows as needed, filled row by row in neuron
 * order (neuron 0 top left), `2 * scale` pixels of background around each
 * cell.
 */

/** An RGB colour, 0..255 a channel. */
export type Rgb = readonly [number, number, number];

/** Background between tiles: mid grey, so that black (zero) tiles still show their edges. */
export const BACKGROUND: Rgb = [128, 128, 128];
const POSITIVE: Rgb = [255, 64, 40];
const NEGATIVE: Rgb = [48, 128, 255];

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
 * A tile's [rows, cols] for `n` inputs: the square when `n` is one, else the
 * nearest rectangle of ceil(sqrt(n)) columns that holds them (its last row
 * partly empty).
 */
export function tileShapeOf(n: number): [number, number] {
  const side = Math.round(Math.sqrt(n));
  if (side * side === n) return [side, side];
  const cols = Math.ceil(Math.sqrt(n));
  return [Math.ceil(n / cols), cols];
}

/** Where everything of a grid of tiles goes, in screen pixels. */
export interface TileGrid {
  /** Tiles (neurons) drawn, and the inputs (weights) of each. */
  neurons: number;
  inputs: number;
  /** One tile in weights: [rows, cols], rows * cols >= inputs. */
  tileShape: [number, number];
  /** Screen pixels per weight. */
  scale: number;
  /** Tiles per row and rows of tiles. */
  columns: number;
  rows: number;
  /** Background around every cell. */
  pad: number;
  /** Between a tile and its bias strip, and the strip's height. */
  stripGap: number;
  stripHeight: number;
  /** One tile's size. */
  tileWidth: number;
  tileHeight: number;
  /** A tile, its strip and the padding after them: the step from one neuron to the next. */
  cellWidth: number;
  cellHeight: number;
  /** The whole picture. */
  width: number;
  height: number;
}

/** The grid of `neurons` tiles of `inputs` weights, each tile `tileShape` weights of `scale` pixels. */
export function tileGrid(
  neurons: number,
  inputs: number,
  tileShape: [number, number],
  scale: number,
): TileGrid {
  const [tileRows, tileCols] = tileShape;
  const columns = Math.ceil(Math.sqrt(neurons));
  const rows = Math.ceil(neurons / columns);
  const pad = 2 * scale;
  const stripGap = scale;
  const stripHeight = 2 * scale;
  const tileWidth = tileCols * scale;
  const tileHeight = tileRows * scale;
  const cellWidth = tileWidth + pad;
  const cellHeight = tileHeight + stripGap + stripHeight + pad;
  return {
    neurons,
    inputs,
    tileShape: [tileRows, tileCols],
    scale,
    columns,
    rows,
    pad,
    stripGap,
    stripHeight,
    tileWidth,
    tileHeight,
    cellWidth,
    cellHeight,
    width: pad + columns * cellWidth,
    height: pad + rows * cellHeight,
  };
}

/** The top left corner of neuron `j`'s tile. */
export function tileOrigin(g: TileGrid, j: number): [number, number] {
  return [g.pad + (j % g.columns) * g.cellWidth, g.pad + Math.floor(j / g.columns) * g.cellHeight];
}

/** The neuron whose cell (tile, strip and the padding after them) holds the point (x, y), or -1. */
export function tileAt(g: TileGrid, x: number, y: number): number {
  const cx = x - g.pad;
  const cy = y - g.pad;
  if (cx < 0 || cy < 0) return -1;
  const col = Math.floor(cx / g.cellWidth);
  const j = Math.floor(cy / g.cellHeight) * g.columns + col;
  return col < g.columns && j < g.neurons ? j : -1;
}

/**
 * Paints the grid into `px`: `g.width * g.height` pixels of `channels`
 * bytes, row-major (3: RGB; 4: RGBA, made opaque, as a canvas's ImageData).
 * `weight(j, k)` is neuron j's weight from input k, `bias(j)` its bias.
 *
 * @returns every tile's scale: its neuron's largest |weight|.
 */
export function paintTiles(
  g: TileGrid,
  weight: (j: number, k: number) => number,
  bias: (j: number) => number,
  px: Uint8Array | Uint8ClampedArray,
  channels: 3 | 4,
): number[] {
  const fill = (x: number, y: number, w: number, h: number, c: Rgb): void => {
    for (let yy = y; yy < y + h; yy++) {
      for (let o = (yy * g.width + x) * channels, end = o + w * channels; o < end; o += channels) {
        px[o] = c[0];
        px[o + 1] = c[1];
        px[o + 2] = c[2];
        if (channels === 4) px[o + 3] = 255;
      }
    }
  };
  fill(0, 0, g.width, g.height, BACKGROUND);
  const { neurons: n, inputs, scale } = g;
  const tileCols = g.tileShape[1];
  let biasMax = 0;
  for (let j = 0; j < n; j++) biasMax = Math.max(biasMax, Math.abs(bias(j)));
  const maxima: number[] = [];
  for (let j = 0; j < n; j++) {
    const [x0, y0] = tileOrigin(g, j);
    let wMax = 0;
    for (let k = 0; k < inputs; k++) wMax = Math.max(wMax, Math.abs(weight(j, k)));
    maxima.push(wMax);
    for (let k = 0; k < inputs; k++) {
      const t = wMax > 0 ? weight(j, k) / wMax : 0;
      fill(
        x0 + (k % tileCols) * scale,
        y0 + Math.floor(k / tileCols) * scale,
        scale,
        scale,
        divergingColour(t),
      );
    }
    const tb = biasMax > 0 ? bias(j) / biasMax : 0;
    fill(x0, y0 + g.tileHeight + g.stripGap, g.tileWidth, g.stripHeight, divergingColour(tb));
  }
  return maxima;
}
