/**
 * `gradfleet train` and `evaluate` as a user runs them: determinism, the
 * model file round trip, and refusals of bad input with exit codes.
 */
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { decodeModel, loadModel } from "../src/core/model-file.js";
import { weightsSha256 } from "../src/core/run-config.js";
import { runCli, runFlags } from "./helpers/cli.js";
import { makeTinyDataset } from "./helpers/idx.js";

const SMALL = runFlags({ train: 3000, test: 2000, epochs: 2, batch: 32, shards: 3 });

let dir: string;
let first: Record<string, unknown>;
let modelPath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "gf-train-"));
  modelPath = join(dir, "m.safetensors");
  const r = await runCli(["train", ...SMALL, "--out", modelPath]);
  expect(r.code, r.stderr).toBe(0);
  first = r.json!;
});

describe("train", () => {
  it("prints the summary fields as the last stdout line", () => {
    for (const k of [
      "testAccuracy",
      "testCost",
      "epochs",
      "steps",
      "samples",
      "samplesPerSecond",
      "weightsSha256",
    ]) {
      expect(first, k).toHaveProperty(k);
    }
    expect(first.epochs).toBe(2);
    expect(first.samples).toBe(6000);
    expect(first.steps).toBe(2 * Math.ceil(3000 / 32));
    expect(first.testAccuracy as number).toBeGreaterThan(0.3); // chance is 0.1
    expect(first.samplesPerSecond as number).toBeGreaterThan(0);
  });

  it("the same command twice gives the same weightsSha256; another seed does not", async () => {
    const again = await runCli(["train", ...SMALL]);
    expect(again.json!.weightsSha256).toBe(first.weightsSha256);
    const other = await runCli(["train", ...SMALL, "--seed", "2"]);
    expect(other.json!.weightsSha256).not.toBe(first.weightsSha256);
  });

  it("both kernels train the same model to within float32 differences", async () => {
    const ref = await runCli(["train", ...SMALL, "--kernel", "ref"]);
    expect(ref.code, ref.stderr).toBe(0);
    expect(Math.abs((ref.json!.testAccuracy as number) - (first.testAccuracy as number))).toBeLessThan(0.01);
  });

  it("trains on any IDX dataset given with --data (layer sizes must fit it)", async () => {
    const tiny = await mkdtemp(join(tmpdir(), "gf-tiny-"));
    await makeTinyDataset(tiny, { trainN: 200, testN: 50, rows: 6, cols: 6, classes: 3, seed: 4 });
    const ok = await runCli([
      "train",
      "--data",
      tiny,
      "--layers",
      "36,8,3",
      "--epochs",
      "3",
      "--batch",
      "10",
      "--json",
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.json!.samples).toBe(600);
    const bad = await runCli(["train", "--data", tiny, "--layers", "784,16,16,10", "--epochs", "1"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--layers: the first size is 784, but the images of .* have 36 pixels/);
    const badOut = await runCli(["train", "--data", tiny, "--layers", "36,8,10", "--epochs", "1"]);
    expect(badOut.code).toBe(2);
    expect(badOut.stderr).toMatch(/--layers: the last size is 10, but .* has 3 classes/);
  });
});

describe("model file", () => {
  it("evaluate --model reproduces the accuracy training printed", async () => {
    const ev = await runCli(["evaluate", "--model", modelPath, "--test-limit", "2000", "--json"]);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.json!.testAccuracy).toBe(first.testAccuracy);
    expect(ev.json!.testCost).toBeCloseTo(first.testCost as number, 12);
    expect(ev.json!.weightsSha256).toBe(first.weightsSha256);
  });

  it("stores the spec and PyTorch-layout tensors", async () => {
    const m = await loadModel(modelPath);
    expect(m.spec).toEqual({
      layers: [784, 16, 16, 10],
      hidden: "sigmoid",
      output: "sigmoid",
      cost: "quadratic",
    });
    expect(weightsSha256(m.params)).toBe(first.weightsSha256);
    const bytes = await readFile(modelPath);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString());
    expect(header["layers.0.weight"].shape).toEqual([16, 784]);
    expect(header["layers.2.bias"].shape).toEqual([10]);
    expect(header.__metadata__.format).toBe("gradfleet-model/1");
  });

  it("refuses truncated and corrupt model files with a clear error", async () => {
    const bytes = await readFile(modelPath);
    const truncated = join(dir, "truncated.safetensors");
    await writeFile(truncated, bytes.subarray(0, bytes.length - 100));
    const r1 = await runCli(["evaluate", "--model", truncated]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/truncated\.safetensors: not a valid model file: truncated/);

    const corrupt = Buffer.from(bytes);
    corrupt.write("\u0001\u0002", 9); // inside the JSON header
    const bad = join(dir, "corrupt.safetensors");
    await writeFile(bad, corrupt);
    const r2 = await runCli(["evaluate", "--model", bad]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/corrupt\.safetensors: not a valid model file: header is not JSON/);

    const r3 = await runCli(["evaluate", "--model", join(dir, "missing.safetensors")]);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toMatch(/missing\.safetensors: cannot read the model file: no such file/);

    // A header whose tensor shapes do not match the spec in its metadata.
    const text = bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString();
    const swapped = Buffer.from(bytes);
    swapped.write(text.replace('"layers":"784,16,16,10"', '"layers":"784,16,17,10"'), 8);
    expect(() => decodeModel(swapped, "swapped")).toThrow(
      /swapped: not a valid gradfleet model: layers.1.weight is missing or not \[17, 16\]/,
    );
  });
});
