/**
 * In-memory datasets. Pixels stay as bytes (one byte per pixel, row-major
 * images one after another) and are scaled to [0,1] only when a kernel reads
 * them, so full MNIST costs 55 MB rather than 220 MB of floats. The loader
 * puts training images inside a WebAssembly memory (pixel-memory.ts) so that
 * the fast kernel computes on them in place rather than on a copy; to every
 * other reader they are an ordinary Uint8Array.
 */

/** One split (train or test) of an image-classification dataset. */
export interface Dataset {
  /** Number of examples. */
  n: number;
  /** Pixels per example (rows * cols). */
  pixels: number;
  rows: number;
  cols: number;
  /** n * pixels bytes, example i at [i * pixels, (i + 1) * pixels). */
  images: Uint8Array;
  /** n labels, each in [0, classes). */
  labels: Uint8Array;
}

/** The train and test splits a run uses, and what identifies them. */
export interface DataBundle {
  train: Dataset;
  test: Dataset;
  /** Number of classes (max label + 1 over both splits, at least 2). */
  classes: number;
  /**
   * sha256 (hex) over the bytes actually used (after limits): processes of a
   * run compare it so that no worker computes on other data.
   */
  fingerprint: string;
  /** Where the data came from (a directory path), for messages. */
  source: string;
}
