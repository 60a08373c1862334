/**
 * The datasets a worker has loaded, by train/test limits: loading MNIST
 * takes a while, and every session of a run needs the same one.
 */
import { loadDataset } from "../core/data/index.js";
import type { DataBundle } from "../core/dataset.js";

/** A worker's loaded datasets: the default (no limits) and the latest limited one. */
export class DatasetCache {
  private readonly loaded = new Map<string, Promise<DataBundle>>();

  /** @param dir dataset directory (undefined: the bundled MNIST) */
  constructor(private readonly dir: string | undefined) {}

  /** The dataset with these limits (null: none), loaded once; a failed load is tried again next time. */
  get(trainLimit: number | null, testLimit: number | null): Promise<DataBundle> {
    const key = `${trainLimit}/${testLimit}`;
    let p = this.loaded.get(key);
    if (!p) {
      p = loadDataset({
        dir: this.dir,
        trainLimit: trainLimit ?? undefined,
        testLimit: testLimit ?? undefined,
      });
      // At most the default and the latest limited variant: a long-lived
      // worker serving runs of many limits must not keep them all.
      for (const k of this.loaded.keys()) if (k !== "null/null") this.loaded.delete(k);
      this.loaded.set(key, p);
      p.catch(() => this.loaded.delete(key));
    }
    return p;
  }
}
