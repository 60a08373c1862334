/**
 * Optimizers: plain SGD (the notes), SGD with momentum, and Adam, all with
 * optional L2 weight decay (added to the gradient: g + λθ).
 *
 * The optimizer state (moments) is one flat Float32Array in the parameter
 * layout, repeated per moment, so a checkpoint is one buffer. The update
 * computes in float64 and rounds once per parameter; it is a pure function of
 * (params, state, mean gradient, step), hence deterministic.
 */

export const OPTIMIZERS = ["sgd", "momentum", "adam"] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** Hyper-parameters of the update rule. */
export interface OptimizerConfig {
  name: OptimizerName;
  /** Learning rate η. */
  lr: number;
  /** Momentum coefficient μ (momentum) or β1 (Adam). */
  momentum: number;
  /** L2 weight decay λ (0 = none). */
  weightDecay: number;
}

/** Adam's β2 and ε (fixed, as in Kingma & Ba). */
export const ADAM_BETA2 = 0.999;
export const ADAM_EPS = 1e-8;

/** How many moment buffers an optimizer keeps. */
export function momentCount(name: OptimizerName): number {
  return name === "sgd" ? 0 : name === "momentum" ? 1 : 2;
}

/** A zeroed optimizer state for `size` parameters. */
export function initOptimizerState(name: OptimizerName, size: number): Float32Array {
  return new Float32Array(momentCount(name) * size);
}

/**
 * Applies one update in place: `params -= η · direction(mean)`.
 * @param mean the mean gradient (1/n) Σ_k dC_k/dθ, float64, parameter layout
 * @param t the 1-based update number (Adam's bias correction)
 */
export function applyUpdate(
  cfg: OptimizerConfig,
  params: Float32Array,
  state: Float32Array,
  mean: Float64Array,
  t: number,
): void {
  const n = params.length;
  if (mean.length !== n || state.length !== momentCount(cfg.name) * n) {
    throw new Error("optimizer: buffer sizes do not match the parameters");
  }
  const { lr, weightDecay: wd } = cfg;
  if (cfg.name === "sgd") {
    for (let p = 0; p < n; p++) params[p] = params[p] - lr * (mean[p] + wd * params[p]);
  } else if (cfg.name === "momentum") {
    const mu = cfg.momentum;
    for (let p = 0; p < n; p++) {
      const v = mu * state[p] + (mean[p] + wd * params[p]);
      state[p] = v;
      params[p] = params[p] - lr * v;
    }
  } else {
    const b1 = cfg.momentum;
    const c1 = 1 - b1 ** t;
    const c2 = 1 - ADAM_BETA2 ** t;
    for (let p = 0; p < n; p++) {
      const g = mean[p] + wd * params[p];
      const m = b1 * state[p] + (1 - b1) * g;
      const v = ADAM_BETA2 * state[n + p] + (1 - ADAM_BETA2) * g * g;
      state[p] = m;
      state[n + p] = v;
      params[p] = params[p] - (lr * (m / c1)) / (Math.sqrt(v / c2) + ADAM_EPS);
    }
  }
}
