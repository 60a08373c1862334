/**
 * The comparison point: the same model and training step in TensorFlow.js
 * (@tensorflow/tfjs, devDependency), on its `cpu` backend and its `wasm`
 * backend (@tensorflow/tfjs-backend-wasm): dense layers, sigmoid everywhere,
 * the quadratic cost averaged over the batch (the mean of our per-example
 * C0 = Σ_j (a_j - y_j)^2, so the same gradient), plain SGD.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Dataset } from "../src/core/dataset.js";

type Tf = typeof import("@tensorflow/tfjs");
type Tensor = import("@tensorflow/tfjs").Tensor;
type Tensor2D = import("@tensorflow/tfjs").Tensor2D;
type Variable = import("@tensorflow/tfjs").Variable;

/** The tfjs backends compared. */
export type TfBackend = "cpu" | "wasm";

/** A loaded tfjs with both backends registered. */
export interface TfjsRuntime {
  tf: Tf;
  version: string;
  /** Threads the wasm backend uses, and whether it runs its SIMD build. */
  wasmThreads: number;
  wasmSimd: boolean;
}

/** Loads tfjs and its wasm backend; null (with the reason) when they are not installed. */
export async function loadTfjs(): Promise<TfjsRuntime | { missing: string }> {
  try {
    const tf = await import("@tensorflow/tfjs");
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    const pkg = createRequire(import.meta.url).resolve("@tensorflow/tfjs-backend-wasm/package.json");
    // In Node the backend must be told where its .wasm files are: the package's dist folder.
    wasm.setWasmPaths(`${join(dirname(pkg), "dist")}/`);
    await tf.setBackend("wasm");
    await tf.ready();
    const wasmSimd = Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"));
    return { tf, version: tf.version.tfjs, wasmThreads: wasm.getThreadsCount(), wasmSimd };
  } catch (err) {
    return { missing: err instanceof Error ? err.message.split("\n")[0] : String(err) };
  }
}

/** A model and optimizer on one backend, with pre-built input batches. */
export class TfjsTrainer {
  private readonly vars: Variable[] = [];
  private readonly xs: Tensor2D[] = [];
  private readonly ys: Tensor2D[] = [];
  private readonly optimizer;
  private steps = 0;

  /**
   * @param data training examples; the first `batches` batches become tensors
   *   up front (outside any timing), and the steps cycle through them
   */
  constructor(
    private readonly tf: Tf,
    readonly layers: number[],
    readonly batch: number,
    data: Dataset,
    batches: number,
  ) {
    for (let l = 0; l + 1 < layers.length; l++) {
      const [nIn, nOut] = [layers[l], layers[l + 1]];
      this.vars.push(tf.variable(tf.randomNormal([nIn, nOut], 0, 1 / Math.sqrt(nIn), "float32", l + 1)));
      this.vars.push(tf.variable(tf.zeros([nOut])));
    }
    this.optimizer = tf.train.sgd(0.1);
    const px = data.pixels;
    const classes = layers[layers.length - 1];
    for (let k = 0; k < batches; k++) {
      const x = new Float32Array(batch * px);
      const y = new Float32Array(batch * classes);
      for (let r = 0; r < batch; r++) {
        const i = (k * batch + r) % data.n;
        for (let p = 0; p < px; p++) x[r * px + p] = data.images[i * px + p] / 255;
        y[r * classes + data.labels[i]] = 1;
      }
      this.xs.push(tf.tensor2d(x, [batch, px]));
      this.ys.push(tf.tensor2d(y, [batch, classes]));
    }
  }

  /** One training step: forward, backward, SGD update (the cpu and wasm backends run synchronously). */
  step(): void {
    const tf = this.tf;
    const k = this.steps++ % this.xs.length;
    const x = this.xs[k];
    const y = this.ys[k];
    this.optimizer.minimize(
      () => {
        let a: Tensor = x;
        for (let l = 0; l < this.vars.length; l += 2) {
          a = tf.sigmoid(tf.add(tf.matMul(a, this.vars[l]), this.vars[l + 1]));
        }
        return tf.div(tf.sum(tf.square(tf.sub(a, y))), this.batch);
      },
      false,
      this.vars,
    );
  }

  /** Waits until all work is done (reads a weight back). */
  async sync(): Promise<void> {
    await this.vars[0].data();
  }

  dispose(): void {
    this.tf.dispose([...this.vars, ...this.xs, ...this.ys]);
    this.optimizer.dispose();
  }
}
