/**
 * Builders of IDX files for tests: single files (to corrupt them) and tiny,
 * deterministic, learnable datasets (so that training tests run in
 * milliseconds rather than on 60000 MNIST images).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Rng } from "../../src/core/prng.js";

/** Header fields of an IDX file, overridable to build malformed files. */
export interface IdxHeader {
  /** The two magic bytes (0 0 in a valid file). */
  magic?: [number, number];
  /** Type byte; 0x08 (unsigned byte) in a valid file. */
  type?: number;
}

/** The bytes of an IDX file holding `data` with dimensions `dims`. No checks: tests build bad files with it. */
export function encodeIdx(dims: number[], data: Uint8Array, header: IdxHeader = {}): Uint8Array {
  const [m0, m1] = header.magic ?? [0, 0];
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  out.set([m0, m1, header.type ?? 0x08, dims.length], 0);
  const view = new DataView(out.buffer);
  dims.forEach((d, i) => {
    view.setUint32(4 + 4 * i, d, false);
  });
  out.set(data, 4 + 4 * dims.length);
  return out;
}

/** Writes an IDX file (gzipped if `gzip`), returns its path. */
export async function writeIdx(
  path: string,
  dims: number[],
  data: Uint8Array,
  opts: IdxHeader & { gzip?: boolean } = {},
): Promise<string> {
  const bytes = encodeIdx(dims, data, opts);
  await writeFile(path, opts.gzip ? gzipSync(bytes) : bytes);
  return path;
}

/** Shape and content of {@link makeTinyDataset}. */
export interface TinyDatasetOptions {
  trainN?: number;
  testN?: number;
  rows?: number;
  cols?: number;
  classes?: number;
  seed?: number;
  /** Write `.gz` files instead of plain ones. */
  gzip?: boolean;
}

/** What {@link makeTinyDataset} wrote, for tests to compare against. */
export interface TinyDataset {
  dir: string;
  trainImages: Uint8Array;
  trainLabels: Uint8Array;
  testImages: Uint8Array;
  testLabels: Uint8Array;
}

/**
 * Writes the four standard IDX files of a small dataset into `dir`.
 *
 * Content is a deterministic function of the options: each class has a
 * random prototype image (about a third of the pixels bright), and each
 * example is its class's prototype with a few pixels flipped and some noise,
 * so a small MLP can learn it. Labels cycle through all classes within the
 * first `classes` examples of each split (so `classes` is what the loader
 * will find when n ≥ classes), then are random.
 *
 * Defaults: 64 train, 16 test, 8x8 pixels, 4 classes, seed 1.
 */
export async function makeTinyDataset(dir: string, opts: TinyDatasetOptions = {}): Promise<TinyDataset> {
  const { trainN = 64, testN = 16, rows = 8, cols = 8, classes = 4, seed = 1, gzip = false } = opts;
  const pixels = rows * cols;
  const rng = new Rng(seed, 0x1d8);
  const prototypes: Uint8Array[] = [];
  for (let c = 0; c < classes; c++) {
    const p = new Uint8Array(pixels);
    for (let i = 0; i < pixels; i++) p[i] = rng.nextFloat() < 0.35 ? 255 : 0;
    prototypes.push(p);
  }
  const split = (n: number): { images: Uint8Array; labels: Uint8Array } => {
    const images = new Uint8Array(n * pixels);
    const labels = new Uint8Array(n);
    for (let k = 0; k < n; k++) {
      const label = k < classes ? k : rng.nextInt(classes);
      labels[k] = label;
      const proto = prototypes[label];
      for (let i = 0; i < pixels; i++) {
        const on = rng.nextFloat() < 0.08 ? proto[i] === 0 : proto[i] !== 0;
        const noise = rng.nextInt(48);
        images[k * pixels + i] = on ? 255 - noise : noise;
      }
    }
    return { images, labels };
  };
  const train = split(trainN);
  const test = split(testN);
  const suffix = gzip ? ".gz" : "";
  await Promise.all([
    writeIdx(join(dir, `train-images-idx3-ubyte${suffix}`), [trainN, rows, cols], train.images, { gzip }),
    writeIdx(join(dir, `train-labels-idx1-ubyte${suffix}`), [trainN], train.labels, { gzip }),
    writeIdx(join(dir, `t10k-images-idx3-ubyte${suffix}`), [testN, rows, cols], test.images, { gzip }),
    writeIdx(join(dir, `t10k-labels-idx1-ubyte${suffix}`), [testN], test.labels, { gzip }),
  ]);
  return {
    dir,
    trainImages: train.images,
    trainLabels: train.labels,
    testImages: test.images,
    testLabels: test.labels,
  };
}
