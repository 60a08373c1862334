import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PNG } from "pngjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { predict } from "../src/cli/predict-command.js";
import { type DataBundle, type Dataset, loadDataset } from "../src/core/data/index.js";
import { LocalExecutor } from "../src/core/local-executor.js";
import { type Model, saveModel } from "../src/core/model-file.js";
import { Network } from "../src/core/network.js";
import { referenceForward } from "../src/core/reference.js";
import type { RunConfig } from "../src/core/run-config.js";
import { runTraining } from "../src/core/trainer.js";
import { centreDigit, digitFromImage, ImageError, inkOf, readDigitImage } from "../src/viz/digit-image.js";
import { decodePng, type RgbaImage } from "../src/viz/png.js";
import { cliInProcess } from "./helpers/in-process-cli.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/digit-7.png", import.meta.url));

let tmp: string;
let data: DataBundle;
let model: Model;
let modelPath: string;

/** The first `n` examples of a split, as a dataset of their own. */
function head(d: Dataset, n: number): Dataset {
  return { ...d, n, images: d.images.subarray(0, n * d.pixels), labels: d.labels.subarray(0, n) };
}

/** Example i of a split, as a dataset of one. */
function one(d: Dataset, i: number): Dataset {
  return {
    ...d,
    n: 1,
    images: d.images.subarray(i * d.pixels, (i + 1) * d.pixels),
    labels: d.labels.subarray(i, i + 1),
  };
}

function encode(img: RgbaImage, colorType: 0 | 2 | 4 | 6, bitDepth: 8 | 16 = 8): Buffer {
  const png = new PNG({ width: img.width, height: img.height });
  // pngjs takes 16-bit input for 16-bit output (native-endian samples).
  png.data =
    bitDepth === 16 ? Buffer.from(Uint16Array.from(img.data, (v) => v * 257).buffer) : Buffer.from(img.data);
  return PNG.sync.write(png, { colorType, bitDepth, inputColorType: 6, inputHasAlpha: true });
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "gradfleet-predict-"));
  // A small model trained here, in-process: 10k examples, 3 epochs (~89% on the test set).
  data = await loadDataset({ trainLimit: 10_000 });
  const cfg: RunConfig = {
    spec: { layers: [784, 16, 16, 10], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" },
    optimizer: { name: "sgd", lr: 1.5, momentum: 0, weightDecay: 0 },
    epochs: 3,
    batch: 32,
    shards: 1,
    seed: 1,
    kernel: "ref",
  };
  const result = await runTraining(cfg, data, new LocalExecutor(cfg, data));
  expect(result.test.accuracy).toBeGreaterThan(0.85);
  model = { spec: cfg.spec, params: result.state.params, info: {} };
  modelPath = join(tmp, "model.safetensors");
  await saveModel(modelPath, model);
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("predict on the test set (--index)", () => {
  it("agrees with evaluate on test images 0..99, example by example", async () => {
    const indices = Array.from({ length: 100 }, (_, i) => i);
    const run = await cliInProcess(["predict", "--model", modelPath, "--index", indices.join(","), "--json"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split("\n");
    expect(lines).toHaveLength(100);
    const preds = lines.map((l) => JSON.parse(l));

    const net = new Network(model.spec);
    let correct = 0;
    for (const i of indices) {
      const p = preds[i];
      expect(p.source).toBe(`test[${i}]`);
      expect(p.index).toBe(i);
      expect(p.label).toBe(data.test.labels[i]);
      expect(p.outputs).toHaveLength(10);
      expect(p.predicted).toBe(p.outputs.indexOf(Math.max(...p.outputs)));
      // evaluate on this one example says whether its arg-max is the label.
      const right = net.evaluate(model.params, one(data.test, i)).correct === 1;
      expect(p.predicted === p.label, `test[${i}]`).toBe(right);
      if (right) correct++;
    }

    // ... and the evaluate command over the same 100 images counts the same.
    const ev = await cliInProcess(["evaluate", "--model", modelPath, "--test-limit", "100", "--json"]);
    expect(ev.code).toBe(0);
    expect(JSON.parse(ev.stdout).correct).toBe(correct);
    expect(net.evaluate(model.params, head(data.test, 100)).correct).toBe(correct);
    expect(correct).toBeGreaterThan(80);
  });

  it("gives the outputs of an independent per-example forward pass", () => {
    const inputs = [3, 42, 99].map((i) => ({
      source: `test[${i}]`,
      pixels: data.test.images.subarray(i * 784, (i + 1) * 784),
    }));
    const preds = predict(model, inputs);
    inputs.forEach((input, r) => {
      const { acts } = referenceForward(
        model.spec,
        model.params,
        Array.from(input.pixels, (v) => v / 255),
      );
      const want = acts[acts.length - 1];
      preds[r].outputs.forEach((v, j) => {
        expect(v).toBeCloseTo(want[j], 9);
      });
    });
  });

  it("prints one text line per example with its label", async () => {
    const run = await cliInProcess(["predict", "--model", modelPath, "--index", "0,1"]);
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^test\[0\]: \d \(label 7(, WRONG)?\) {2}outputs 0:\d\.\d{4} 1:/);
    expect(lines[0].match(/ \d:\d\.\d{4}/g)).toHaveLength(10);
  });

  it("refuses an index past the end of the test set, and no input at all", async () => {
    const past = await cliInProcess(["predict", "--model", modelPath, "--index", "10000"]);
    expect(past.code).toBe(2);
    expect(past.stderr).toMatch(/--index: 10000 is past the end of the test set .*10000 examples/);
    const none = await cliInProcess(["predict", "--model", modelPath]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/give at least one IMAGE/);
  });
});

describe("predict on PNG images", () => {
  it("reads the hand-drawn 7 (dark on white, 100x100) as a 7", async () => {
    const run = await cliInProcess(["predict", "--model", modelPath, FIXTURE, "--json"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const p = JSON.parse(run.stdout);
    expect(p.source).toBe(FIXTURE);
    expect(p.predicted).toBe(7);
    expect(p.outputs).toHaveLength(10);
    expect(p.index).toBeUndefined();
  });

  it("reads the same digit in other colour types, polarities and canvas sizes alike", async () => {
    const base = decodePng(await readFile(FIXTURE), FIXTURE);
    const { pixels: want, info } = digitFromImage(base, "fixture");
    expect(info).toEqual({ inverted: true, alphaAsInk: false });

    const ink = inkOf(base, "fixture").image.ink;
    // White on black, 16-bit grayscale: no inversion needed.
    const whiteOnBlack = mapPixels(base, (p) => [255 * ink[p], 255 * ink[p], 255 * ink[p], 255]);
    // Black strokes on a transparent background, as a canvas exports them.
    const transparent = mapPixels(base, (p) => [0, 0, 0, 255 * ink[p]]);
    // White strokes on transparent: composited over white they would vanish.
    const whiteOnTransparent = mapPixels(base, (p) => [255, 255, 255, 255 * ink[p]]);
    // The digit small in a corner of a wide light-grey canvas.
    const wide = placeIn(ink, base.width, base.height, 260, 180, 150, 70);

    const files: [string, Buffer, Partial<{ inverted: boolean; alphaAsInk: boolean }>][] = [
      ["white-on-black-16bit.png", encode(whiteOnBlack, 0, 16), { inverted: false, alphaAsInk: false }],
      ["transparent.png", encode(transparent, 6), { alphaAsInk: true }],
      ["gray-alpha.png", encode(transparent, 4), { alphaAsInk: true }],
      ["white-on-transparent.png", encode(whiteOnTransparent, 6), { alphaAsInk: true }],
      ["wide-canvas.png", encode(wide, 2), { inverted: true }],
    ];
    for (const [file, bytes, expectInfo] of files) {
      const path = join(tmp, file);
      await writeFile(path, bytes);
      const got = await readDigitImage(path);
      expect(got.info, file).toMatchObject(expectInfo);
      // The same 28x28 input, up to rounding: only the ink's bounding box counts.
      let diff = 0;
      for (let k = 0; k < 784; k++) diff = Math.max(diff, Math.abs(got.pixels[k] - want[k]));
      expect(diff, file).toBeLessThanOrEqual(2);
      expect(predict(model, [{ source: file, pixels: got.pixels }])[0].predicted, file).toBe(7);
    }
  });

  it("fits the digit into 20x20 and puts its centre of mass at the centre of 28x28", () => {
    // A 10 wide, 40 tall solid bar, off-centre on a 100x60 canvas.
    const width = 100;
    const height = 60;
    const ink = new Float64Array(width * height);
    for (let y = 5; y < 45; y++) for (let x = 70; x < 80; x++) ink[y * width + x] = 1;
    const out = centreDigit({ width, height, ink });
    let x0 = 28;
    let x1 = -1;
    let y0 = 28;
    let y1 = -1;
    let mass = 0;
    let mx = 0;
    let my = 0;
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const v = out[y * 28 + x];
        if (v === 0) continue;
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
        mass += v;
        mx += v * (x + 0.5);
        my += v * (y + 0.5);
        expect(v).toBe(255);
      }
    }
    expect(y1 - y0 + 1).toBe(20);
    expect(x1 - x0 + 1).toBe(5);
    expect(Math.abs(mx / mass - 14)).toBeLessThanOrEqual(0.5);
    expect(Math.abs(my / mass - 14)).toBeLessThanOrEqual(0.5);
  });

  it("refuses a file that is not a PNG, naming it, with a non-zero exit", async () => {
    const path = join(tmp, "not-a-png.png");
    await writeFile(path, "P5\n28 28\n255\nthis is a PGM, not a PNG\n");
    const run = await cliInProcess(["predict", "--model", modelPath, path]);
    expect(run.code).not.toBe(0);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe(
      `gradfleet: ${path}: not a PNG file (it does not start with the PNG signature)\n`,
    );
  });

  it("refuses truncated PNGs, naming them, with a non-zero exit", async () => {
    const bytes = await readFile(FIXTURE);
    for (const keep of [20, 100, bytes.length - 1]) {
      const path = join(tmp, `truncated-${keep}.png`);
      await writeFile(path, bytes.subarray(0, keep));
      const run = await cliInProcess(["predict", "--model", modelPath, FIXTURE, path]);
      expect(run.code, `${keep} bytes`).not.toBe(0);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(new RegExp(`^gradfleet: ${path}: truncated PNG \\(`));
    }
  });

  it("refuses a blank image and a missing file clearly", async () => {
    const blank = join(tmp, "blank.png");
    const white: RgbaImage = { width: 30, height: 30, data: new Uint8Array(30 * 30 * 4).fill(255) };
    await writeFile(blank, encode(white, 2));
    await expect(readDigitImage(blank)).rejects.toThrow(
      new ImageError(`${blank}: no digit found: the image is one flat level (contrast 0.000, needs 0.1)`),
    );
    const missing = join(tmp, "missing.png");
    const run = await cliInProcess(["predict", "--model", modelPath, missing]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`gradfleet: ${missing}: cannot read the image: no such file\n`);
  });

  it("refuses images for a model whose input is not a square image", async () => {
    const odd: Model = {
      spec: { layers: [10, 3, 2], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" },
      params: new Float32Array(10 * 3 + 3 + 3 * 2 + 2),
      info: {},
    };
    const path = join(tmp, "odd.safetensors");
    await saveModel(path, odd);
    const copy = join(tmp, "seven.png");
    await copyFile(FIXTURE, copy);
    const run = await cliInProcess(["predict", "--model", path, copy]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/takes 10 inputs, not a square image/);
  });
});

/** A copy of `img` with every pixel p replaced by `f(p)` (RGBA). */
function mapPixels(img: RgbaImage, f: (p: number) => number[]): RgbaImage {
  const data = new Uint8Array(img.data.length);
  for (let p = 0; p < img.width * img.height; p++) data.set(f(p).map(Math.round), p * 4);
  return { width: img.width, height: img.height, data };
}

/** Ink `ink` (w x h) drawn dark (grey 30) at (x, y) on a `width x height` light grey (200) canvas. */
function placeIn(
  ink: Float64Array,
  w: number,
  h: number,
  width: number,
  height: number,
  x: number,
  y: number,
): RgbaImage {
  const data = new Uint8Array(width * height * 4);
  for (let p = 0; p < width * height; p++) data.set([200, 200, 200, 255], p * 4);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const v = Math.round(200 - 170 * ink[r * w + c]);
      data.set([v, v, v, 255], ((y + r) * width + x + c) * 4);
    }
  }
  return { width, height, data };
}
