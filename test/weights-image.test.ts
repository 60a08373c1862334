import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PNG } from "pngjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initParams } from "../src/core/init.js";
import { type Model, saveModel } from "../src/core/model-file.js";
import { layoutOf, type ModelSpec } from "../src/core/spec.js";
import { paintTiles, tileAt, tileGrid, tileOrigin, tileShapeOf } from "../src/viz/weight-tiles.js";
import { BACKGROUND, divergingColour, renderWeights, weightsPng } from "../src/viz/weights-image.js";
import { cliInProcess } from "./helpers/in-process-cli.js";

const SPEC: ModelSpec = {
  layers: [784, 16, 16, 10],
  hidden: "sigmoid",
  output: "sigmoid",
  cost: "quadratic",
};

let tmp: string;

/** RGB of pixel (x, y) of a decoded PNG. */
function at(png: PNG, x: number, y: number): number[] {
  const o = (y * png.width + x) * 4;
  return [png.data[o], png.data[o + 1], png.data[o + 2]];
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "gradfleet-weights-"));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("gradfleet weights", () => {
  it("writes a valid PNG of the expected size, the same bytes on two runs", async () => {
    const modelPath = join(tmp, "model.safetensors");
    await saveModel(modelPath, { spec: SPEC, params: initParams(SPEC, 7), info: {} });
    const outs = [join(tmp, "a.png"), join(tmp, "b.png")];
    for (const out of outs) {
      const run = await cliInProcess(["weights", "--model", modelPath, "--out", out]);
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(run.stdout).toBe(`wrote ${out}: 16 tiles of 28x28 weights, 4 per row, 488x536 pixels\n`);
    }
    const [a, b] = await Promise.all(outs.map((f) => readFile(f)));
    expect(a.equals(b)).toBe(true);

    // 4 x 4 tiles of 28*4 = 112 px, 8 px padding, a 4 px gap and an 8 px bias strip under each.
    const png = PNG.sync.read(a);
    expect([png.width, png.height]).toEqual([8 + 4 * (112 + 8), 8 + 4 * (112 + 4 + 8 + 8)]);
    expect(at(png, 0, 0)).toEqual([...BACKGROUND]);
  });

  it("draws weight k of neuron j at row k / 28, column k % 28 of tile j, with its bias below", () => {
    const layout = layoutOf(SPEC.layers);
    const L = layout.layers[0];
    const params = new Float32Array(layout.size);
    for (let j = 0; j < L.nOut; j++) {
      // One strong positive weight on input k = 30 * j (a diagonal walk), one
      // half-size negative weight on the last input, zero elsewhere.
      params[L.w + 30 * j * L.nOut + j] = 2;
      params[L.w + 783 * L.nOut + j] = -1;
      params[L.b + j] = j - 8; // -8 .. 7: the largest |bias| is 8
    }
    const model: Model = { spec: SPEC, params, info: {} };
    const png = PNG.sync.read(weightsPng(model));
    const img = renderWeights(model);
    expect([img.columns, img.rows, img.tileWidth, img.tileHeight]).toEqual([4, 4, 112, 112]);

    for (let j = 0; j < 16; j++) {
      const x0 = 8 + (j % 4) * 120;
      const y0 = 8 + Math.floor(j / 4) * 132;
      const k = 30 * j;
      const px = (kk: number, dx = 1, dy = 2) =>
        at(png, x0 + (kk % 28) * 4 + dx, y0 + Math.floor(kk / 28) * 4 + dy);
      expect(px(k), `tile ${j} weight ${k}`).toEqual(divergingColour(1));
      expect(px(783), `tile ${j} weight 783`).toEqual(divergingColour(-0.5));
      expect(px(k + 1), `tile ${j} weight ${k + 1}`).toEqual([0, 0, 0]);
      // The bias strip: 4 px under the tile, 8 px tall, the tile's width.
      const bias = divergingColour((j - 8) / 8);
      expect(at(png, x0, y0 + 112 + 4)).toEqual(bias);
      expect(at(png, x0 + 111, y0 + 112 + 4 + 7)).toEqual(bias);
      expect(at(png, x0, y0 + 112 + 3)).toEqual([...BACKGROUND]);
    }
    expect(divergingColour(1)[0]).toBeGreaterThan(200); // positive is red
    expect(divergingColour(-1)[2]).toBeGreaterThan(200); // negative is blue
    expect(divergingColour(0)).toEqual([0, 0, 0]);
  });

  it("refuses a model whose input is not a square image, and a missing --out", async () => {
    const spec: ModelSpec = { layers: [10, 3, 2], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" };
    const modelPath = join(tmp, "odd.safetensors");
    await saveModel(modelPath, { spec, params: initParams(spec, 1), info: {} });
    const run = await cliInProcess(["weights", "--model", modelPath, "--out", join(tmp, "odd.png")]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      new RegExp(`^gradfleet: ${modelPath}: the input layer has 10 values, which is not a square image`),
    );
    const noOut = await cliInProcess(["weights", "--model", modelPath]);
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toMatch(/--out: required/);
  });
});

describe("the weight tiles (the live page draws with them too)", () => {
  it("paints RGBA as RGB with opaque alpha, and finds the neuron under a point of its cell", () => {
    // 10 inputs, not a square: tiles of 3 rows of 4 (the page's fallback), the last row half empty.
    expect(tileShapeOf(10)).toEqual([3, 4]);
    expect(tileShapeOf(784)).toEqual([28, 28]);
    const g = tileGrid(7, 10, tileShapeOf(10), 2);
    expect([g.columns, g.rows, g.width, g.height]).toEqual([3, 3, 4 + 3 * 12, 4 + 3 * 16]);
    const weight = (j: number, k: number) => (k - 4) * (j + 1);
    const bias = (j: number) => j - 3;
    const rgb = new Uint8Array(g.width * g.height * 3);
    const rgba = new Uint8ClampedArray(g.width * g.height * 4);
    const maxima = paintTiles(g, weight, bias, rgb, 3);
    expect(paintTiles(g, weight, bias, rgba, 4)).toEqual(maxima);
    expect(maxima).toEqual([5, 10, 15, 20, 25, 30, 35]);
    for (let p = 0; p < g.width * g.height; p++) {
      expect([...rgba.subarray(p * 4, p * 4 + 4)]).toEqual([...rgb.subarray(p * 3, p * 3 + 3), 255]);
    }
    for (let j = 0; j < 7; j++) {
      const [x, y] = tileOrigin(g, j);
      expect(tileAt(g, x, y)).toBe(j);
      expect(tileAt(g, x + g.cellWidth - 1, y + g.cellHeight - 1)).toBe(j);
    }
    // The padding before the first cell, past the last column, and the empty cells of the last row.
    expect(tileAt(g, 0, 0)).toBe(-1);
    expect(tileAt(g, g.width, g.pad)).toBe(-1);
    expect(tileAt(g, g.pad + g.cellWidth, g.pad + 2 * g.cellHeight)).toBe(-1);
  });
});
