/**
 * Hostile and careless input files and flags, against the real CLI (issue
 * 14, items 5, 8, 9 and the small ones of 10): each is refused with one line
 * naming the file, flag or field, and a non-zero exit; none aborts the
 * process, hangs, or reads without bound.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32, deflateSync, gzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { IDX_FILE_NAMES } from "../src/core/data/index.js";
import { initParams } from "../src/core/init.js";
import { encodeModel, type Model, saveModel } from "../src/core/model-file.js";
import { Rng } from "../src/core/prng.js";
import { encodeSafeTensors } from "../src/core/safetensors.js";
import { layoutOf, type ModelSpec } from "../src/core/spec.js";
import { runCli } from "./helpers/cli.js";
import { encodeIdx, makeTinyDataset, writeIdx } from "./helpers/idx.js";

const SPEC: ModelSpec = { layers: [784, 16, 10], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" };
/** The tiny dataset's shape: 8x8 images, 4 classes. */
const TINY_LAYERS = "64,8,4";

let tmp: string;
/** A valid MNIST-shaped model (784-16-10, initial weights). */
let modelPath: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "gf-harden-in-"));
  modelPath = join(tmp, "ok.safetensors");
  await saveModel(modelPath, { spec: SPEC, params: initParams(SPEC, 1), info: {} });
});

/** A fresh directory holding a valid tiny dataset. */
async function tinyDir(name: string): Promise<string> {
  const dir = join(tmp, name);
  execFileSync("mkdir", ["-p", dir]);
  await makeTinyDataset(dir, { trainN: 20, testN: 8 });
  return dir;
}

/** Expects the one-line refusal of a bad input: exit 1 (or `code`), `gradfleet: ` and `pattern`, no native abort. */
function expectRefused(r: { code: number | null; stderr: string }, pattern: RegExp, code = 1): void {
  expect(r.stderr, r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/Assertion failed|Invalid typed array length|at .*\.js:\d+/);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.code, r.stderr).toBe(code);
}

describe("item 5: IDX headers that claim too much", () => {
  it("a header of exactly 2^31 items is refused with the file named, for train and evaluate (it aborted the process)", async () => {
    const dir = await tinyDir("two-pow-31");
    // The file: 00 00 08 03, 8 x 16384 x 16384, then 1,000 bytes.
    await writeIdx(join(dir, IDX_FILE_NAMES.trainImages), [8, 16384, 16384], new Uint8Array(1000));
    const limit = /train-images-idx3-ubyte: dimensions 8x16384x16384 exceed the limit of 2147483647 items/;
    const train = await runCli(["train", "--data", dir, "--layers", TINY_LAYERS, "--epochs", "1"]);
    expectRefused(train, limit);
    const tinyModel = join(tmp, "tiny.safetensors");
    const tinySpec: ModelSpec = { ...SPEC, layers: [64, 8, 4] };
    await saveModel(tinyModel, { spec: tinySpec, params: initParams(tinySpec, 1), info: {} });
    const evaluate = await runCli(["evaluate", "--model", tinyModel, "--data", dir]);
    expectRefused(evaluate, limit);
  });

  it("a gzipped header that claims more than its file can inflate to is refused before inflating", async () => {
    const dir = await tinyDir("gz-claim");
    // 4 x 16384 x 16384 = 1 GiB claimed by a file of a few hundred bytes.
    const gz = gzipSync(encodeIdx([4, 16384, 16384], new Uint8Array(1000)));
    await writeFile(join(dir, `${IDX_FILE_NAMES.trainImages}.gz`), gz);
    execFileSync("rm", [join(dir, IDX_FILE_NAMES.trainImages)]);
    const r = await runCli(["train", "--data", dir, "--layers", TINY_LAYERS, "--epochs", "1"]);
    expectRefused(
      r,
      new RegExp(
        `train-images-idx3-ubyte\\.gz: header says 1073741824 items \\(dims 4x16384x16384\\), more than a gzip file of ${gz.length} bytes can hold`,
      ),
    );
  });

  it("images and labels that disagree are refused from their headers, before the data is inflated", async () => {
    const dir = await tinyDir("gz-counts");
    // 40 random 28x28 images: incompressible, so the .gz is ~31 KB; its data
    // is then corrupted past the first 16 KB. Read whole, it is "corrupt
    // gzip data"; from the headers, the counts (40 images, 8 labels) differ first.
    const pixels = new Uint8Array(40 * 28 * 28);
    const rng = new Rng(3, 1);
    for (let i = 0; i < pixels.length; i++) pixels[i] = rng.nextInt(256);
    const gz = gzipSync(encodeIdx([40, 28, 28], pixels));
    expect(gz.length).toBeGreaterThan(24 * 1024);
    for (let i = 20 * 1024; i < 22 * 1024; i++) gz[i] ^= 0xa5;
    execFileSync("rm", [join(dir, IDX_FILE_NAMES.testImages)]);
    await writeFile(join(dir, `${IDX_FILE_NAMES.testImages}.gz`), gz);
    const r = await runCli(["train", "--data", dir, "--layers", TINY_LAYERS, "--epochs", "1"]);
    expectRefused(r, /image and label counts differ: .*t10k-images-idx3-ubyte\.gz has 40 images, .*8 labels/);
  });
});

describe("item 8: inputs that are not regular files, or cost without bound", () => {
  it("refuses /dev/zero as --model (evaluate, predict) and as a predict image", async () => {
    for (const args of [
      ["evaluate", "--model", "/dev/zero"],
      ["predict", "--model", "/dev/zero", "--index", "0"],
    ]) {
      expectRefused(
        await runCli(args),
        /^gradfleet: \/dev\/zero: cannot read the model file: it is a character device, not a regular file$/m,
      );
    }
    expectRefused(
      await runCli(["predict", "--model", modelPath, "/dev/zero"]),
      /\/dev\/zero: cannot read the image: it is a character device, not a regular file/,
    );
  });

  it("refuses a FIFO as --model and as an image instead of waiting for a writer", async () => {
    const fifo = join(tmp, "model.fifo");
    execFileSync("mkfifo", [fifo]);
    expectRefused(
      await runCli(["evaluate", "--model", fifo]),
      /model\.fifo: cannot read the model file: it is a FIFO \(named pipe\), not a regular file/,
    );
    expectRefused(
      await runCli(["predict", "--model", modelPath, fifo]),
      /model\.fifo: cannot read the image: it is a FIFO \(named pipe\), not a regular file/,
    );
  });

  it("refuses PNGs whose decoding would cost too much: a 1 x 25,000,000 row, 16-bit samples", async () => {
    // The image (1 x 25,000,000 16-bit grey: 3.8 GB and 104 s before "no digit found").
    const row = join(tmp, "row.png");
    await writeFile(row, png(25_000_000, 1, 16, 0, true));
    expectRefused(
      await runCli(["predict", "--model", modelPath, row]),
      /row\.png: the image is 25000000x1 pixels; at most 16777216 pixels are accepted/,
    );
    const long = join(tmp, "long.png");
    await writeFile(long, png(1, 20_000, 8, 0));
    expectRefused(
      await runCli(["predict", "--model", modelPath, long]),
      /long\.png: the image is 1x20000 pixels; at most 16384 pixels on a side are accepted/,
    );
    // Within the pixel limit, but 16-bit RGBA: 128 MB of scanlines to inflate and unfilter.
    const deep = join(tmp, "deep.png");
    await writeFile(deep, png(4000, 4000, 16, 6));
    expectRefused(
      await runCli(["predict", "--model", modelPath, deep]),
      /deep\.png: the image is 4000x4000 pixels of 4 channel\(s\) at 16 bits, 128004000 bytes decoded; at most 67108864 are accepted/,
    );
  });
});

describe("item 9: non-finite parameters", () => {
  it("a model with a NaN bias or an infinite weight is refused by evaluate and predict, naming the tensor", async () => {
    const params = initParams(SPEC, 1);
    const L = layoutOf(SPEC.layers).layers;
    params[L[1].b + 3] = Number.NaN;
    const nanPath = join(tmp, "nan.safetensors");
    await writeFile(nanPath, encodeModel({ spec: SPEC, params, info: {} }));
    const nan =
      /nan\.safetensors: not a valid gradfleet model: layers\.1\.bias holds a non-finite value \(NaN at index 3\)/;
    expectRefused(await runCli(["evaluate", "--model", nanPath, "--json"]), nan);
    expectRefused(await runCli(["predict", "--model", nanPath, "--index", "0"]), nan);

    const inf = initParams(SPEC, 1);
    // Weight from input 5 to neuron 2 of layer 0: index 2 * 784 + 5 of the [16, 784] tensor.
    inf[L[0].w + 5 * 16 + 2] = Number.NEGATIVE_INFINITY;
    const infPath = join(tmp, "inf.safetensors");
    await writeFile(infPath, encodeModel({ spec: SPEC, params: inf, info: {} } satisfies Model));
    expectRefused(
      await runCli(["evaluate", "--model", infPath]),
      /layers\.0\.weight holds a non-finite value \(-Infinity at index 1573\)/,
    );
  });
});

describe("item 10: absurd sizes and a password in the wrong place", () => {
  it("layer sizes past the parameter limit are refused naming the flag or the metadata field", async () => {
    const flag = await runCli([
      "train",
      "--layers",
      "784,1000000,1000000,10",
      "--kernel",
      "ref",
      "--epochs",
      "1",
    ]);
    expectRefused(
      flag,
      /--layers: "784,1000000,1000000,10" make 1000796000010 parameters \(weights and biases\); at most 100000000 are supported/,
      2,
    );
    // A model file whose metadata claims such layers (its tensors are small).
    const bytes = await readFile(modelPath);
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString());
    const huge = join(tmp, "huge.safetensors");
    await writeFile(
      huge,
      encodeSafeTensors([["layers.0.bias", { shape: [1], data: Float32Array.of(0) }]], {
        ...header.__metadata__,
        layers: "784,1000000,1000000,10",
      }),
    );
    expectRefused(
      await runCli(["evaluate", "--model", huge]),
      /huge\.safetensors: not a valid gradfleet model: layers: 784,1000000,1000000,10 make 1000796000010 parameters/,
    );
  });

  it("--batch 1000000000000 is refused naming the flag", async () => {
    const r = await runCli(["train", "--batch", "1000000000000", "--dry-run"]);
    expectRefused(r, /--batch: .*1000000000000.* at most 1000000|--batch: "1000000000000".*1000000/, 2);
  });

  it("a ?password= in the Redis URL is refused with the right form, and never printed (flag, REDIS_URL, --dry-run)", async () => {
    const url = "redis://127.0.0.1:6379/0?password=hunter2";
    for (const [args, env] of [
      [["train", "--workers", "1", "--redis-url", url, "--dry-run"], {}],
      [["worker", "--dry-run"], { REDIS_URL: url }],
      [["coordinator", "--redis-url", url]],
    ] as [string[], Record<string, string>?][]) {
      const r = await runCli(args, env);
      expectRefused(
        r,
        /--redis-url.*has a query \(password=\), which is not read here; give the password before the host instead: redis:\/\/:PASSWORD@HOST:PORT/,
        2,
      );
      expect(r.stderr + r.stdout).not.toContain("hunter2");
      expect(r.stdout).toBe("");
    }
  });
});

/**
 * A PNG of `width x height` pixels of `depth` bits and colour type
 * `colourType`. With `whole`, a valid image (all zero); without, its image
 * data is one small zlib stream (a decoder would find it short; the point is
 * what the header claims).
 */
function png(width: number, height: number, depth: number, colourType: number, whole = false): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "latin1");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = depth;
  ihdr[9] = colourType;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.alloc(whole ? height * (1 + (width * depth) / 8) : 64 * 1024))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
