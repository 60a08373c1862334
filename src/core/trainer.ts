/**
 * The training loop shared by in-process training and the cluster
 * coordinator: for every step it asks a GradientExecutor for the gradient
 * sums of the step's shards, adds them up the step's shard tree (the same
 * additions whoever computed what: shard-tree.ts), takes the mean ONCE (the notes' (1/n) Σ_k over all n examples of the batch),
 * applies the optimizer and moves on. Only where the shards are computed
 * differs between `train --workers 0` and a cluster.
 */
import type { DataBundle } from "./dataset.js";
import type { F32Heap } from "./f32-heap.js";
import { initParams } from "./init.js";
import { makeKernel } from "./kernel.js";
import type { Evaluation } from "./network.js";
import { applyUpdate, initOptimizerState } from "./optimizer.js";
import { type ShardRange, shardRanges, stepsPerEpoch } from "./plan.js";
import { epochPermutation } from "./prng.js";
import type { RunConfig } from "./run-config.js";
import { type GradBlock, ShardTree } from "./shard-tree.js";
import { WasmOptimizer } from "./wasm-optimizer.js";

/** Where training stands: enough to resume with the same bits. */
export interface TrainState {
  params: Float32Array;
  /** Optimizer moments (see optimizer.ts). */
  opt: Float32Array;
  /** Epoch of the next step to run (0-based). */
  epoch: number;
  /** Step within that epoch of the next step to run. */
  step: number;
  /** Updates applied so far; also the weights version. */
  updates: number;
  /** Training samples that contributed a gradient so far. */
  samples: number;
}

/** What a step asks of the executor. */
export interface StepRequest {
  epoch: number;
  step: number;
  /** Weights version the gradients must be computed on (= updates so far). */
  version: number;
  params: Float32Array;
  /**
   * The epoch's permutation of the training set, computed on first use (a
   * coordinator whose workers compute their own never pays for it).
   */
  permutation(): Uint32Array;
  /** Non-empty shards of the step, in shard order. */
  shards: ShardRange[];
}

/** Seconds a step spent in each phase (the executor fills compute and communication). */
export interface StepTiming {
  /**
   * Compute time on the step's critical path: the busiest worker's (its
   * shards computed one after another); in process, all shards'.
   */
  compute: number;
  /** Step wall time up to having all shards, minus compute. */
  communication: number;
  /** Combine + optimizer update. */
  update: number;
  total: number;
}

/** What an executor returns for a step. */
export interface StepOutcome {
  /**
   * The step's gradients as nodes of its shard tree that tile all its shards
   * in order (see shard-tree.ts): one block per shard in process, a few
   * pre-added nodes from a cluster's workers. Each finite. The executor may
   * reuse a block's `grad` after the next call.
   */
  blocks: GradBlock[];
  computeSeconds: number;
}

/** Computes a step's shard gradients: in this process, or on a cluster. */
export interface GradientExecutor {
  /**
   * Where the executor keeps the blocks it returns, when it keeps them in a
   * float32 heap: the trainer then adds them up the shard tree with the
   * kernel's SIMD additions (same bits).
   */
  readonly heap?: F32Heap;
  /** Returns the step's gradients: blocks that tile every requested shard. */
  computeStep(req: StepRequest): Promise<StepOutcome>;
  /**
   * Resolves when the executor can compute steps (a cluster: once a worker is
   * there); StepAbortedError when a stop was asked for first.
   */
  ready?(): Promise<void>;
  /**
   * A stop was requested: the executor may give up the step in progress
   * (throwing StepAbortedError) if it cannot finish soon.
   */
  abort?(): void;
}

/** Reported after every update. */
export interface StepInfo {
  epoch: number;
  step: number;
  stepsPerEpoch: number;
  updates: number;
  /** Mean cost over the step's batch. */
  loss: number;
  /** Training samples so far (the state's count, resumed runs included). */
  samples: number;
  /** Samples of this step's batch (the last batch of an epoch may be short). */
  batchSamples: number;
  timing: StepTiming;
  /** The weights after this update (a live view: copy it to keep it). */
  params: Float32Array;
}

/** Reported after every epoch's evaluation. */
export interface EpochInfo {
  epoch: number;
  test: Evaluation;
  /** Mean training cost over the epoch's steps run in this process. */
  trainCost: number;
  samples: number;
  trainSeconds: number;
}

/** Raised when a step's mean gradient is not finite. */
export class DivergenceError extends Error {
  override name = "DivergenceError";
  constructor(
    readonly epoch: number,
    readonly step: number,
    lr: number,
  ) {
    super(
      `training diverged at epoch ${epoch + 1} step ${step + 1}: the gradient is not finite (NaN or infinite); ` +
        `try a lower --lr (now ${lr})`,
    );
  }
}

/**
 * Thrown by an executor whose step was abandoned because a stop was
 * requested (see GradientExecutor.abort); the trainer stops cleanly at the
 * last completed step.
 */
export class StepAbortedError extends Error {
  override name = "StepAbortedError";
}

/** Callbacks into the process that runs the loop. */
export interface TrainerHooks {
  onStep?(info: StepInfo): void;
  onEpoch?(info: EpochInfo): void;
  /** Asked after each step: true stops the run there (graceful stop). */
  shouldStop?(): boolean;
  /** Called when a checkpoint is due (every N updates, each epoch end, before a divergence stop). */
  checkpoint?(state: TrainState, reason: "interval" | "epoch" | "diverged" | "stopped"): Promise<void>;
}

/** How a run ended. */
export interface TrainResult {
  state: TrainState;
  /** Evaluation after the last completed epoch (or of the final weights if stopped mid-epoch). */
  test: Evaluation;
  /** Updates done in this process (excludes those before a resume). */
  steps: number;
  /** Samples that contributed in this process. */
  samples: number;
  /** Wall time of the training steps, evaluation excluded. */
  trainSeconds: number;
  stopped: boolean;
}

/**
 * Writes the mean gradient `sum / count` into `out` (float64: the float32 sum
 * of the shard tree divided by the step's examples) and returns whether
 * every value of it is finite.
 */
export function meanGradient(sum: Float32Array, count: number, out: Float64Array): boolean {
  const n = out.length;
  let bad = false;
  for (let p = 0; p < n; p++) {
    const m = sum[p] / count;
    out[p] = m;
    if (m - m !== 0) bad = true; // NaN or ±Infinity
  }
  return !bad;
}

/**
 * The WebAssembly update for a run, holding the state's parameters and
 * moments from now on; undefined where WebAssembly SIMD is missing (the
 * JavaScript update then does the same arithmetic).
 */
function wasmOptimizer(cfg: RunConfig, state: TrainState): WasmOptimizer | undefined {
  let opt: WasmOptimizer;
  try {
    opt = new WasmOptimizer(cfg.optimizer, state.params.length);
  } catch {
    return undefined;
  }
  opt.adopt(state);
  return opt;
}

/** A fresh state at the start of a run. */
export function initialState(cfg: RunConfig): TrainState {
  const params = initParams(cfg.spec, cfg.seed);
  return {
    params,
    opt: initOptimizerState(cfg.optimizer.name, params.length),
    epoch: 0,
    step: 0,
    updates: 0,
    samples: 0,
  };
}

/**
 * Runs (or continues) training until `cfg.epochs` are done or a hook stops it.
 * @param checkpointEvery checkpoint every this many updates (0 = epoch ends only)
 */
export async function runTraining(
  cfg: RunConfig,
  data: DataBundle,
  executor: GradientExecutor,
  opts: { state?: TrainState; hooks?: TrainerHooks; checkpointEvery?: number } = {},
): Promise<TrainResult> {
  const hooks = opts.hooks ?? {};
  const state = opts.state ?? initialState(cfg);
  const n = data.train.n;
  const steps = stepsPerEpoch(n, cfg.batch);
  // Epoch-end evaluations by the fast kernel, whatever the run's kernel: the
  // float64 reference took 0.54 s for MNIST's 10,000 test images on
  // 784-128-64-10 (the fast kernel 0.04 s), more than an epoch of training.
  // They change no weights; `gradfleet evaluate` uses the same kernel, so a
  // saved model scores what the run printed (either implementation: the
  // same bits).
  const evalNet = makeKernel("fast", cfg.spec);
  const sum = new Float64Array(state.params.length);
  // The update in WebAssembly (same bits) where the engine has it; it keeps
  // the parameters and moments in its memory from here on.
  const fastUpdate = wasmOptimizer(cfg, state);
  const tree = new ShardTree(state.params.length, executor.heap);
  const treeSum = executor.heap?.alloc() ?? new Float32Array(state.params.length);
  let test: Evaluation | undefined;
  let stepsHere = 0;
  let samplesHere = 0;
  let trainSeconds = 0;
  let stopped = false;
  // Waiting for the first worker is not training time (samples/s would count it).
  try {
    await executor.ready?.();
  } catch (e) {
    if (!(e instanceof StepAbortedError)) throw e;
    // Stopped before any worker came: a checkpoint of where the run stands,
    // as for any stop, so that --resume works.
    stopped = true;
    await hooks.checkpoint?.(state, "stopped");
  }

  outer: while (!stopped && state.epoch < cfg.epochs) {
    let perm: Uint32Array | undefined;
    const epoch = state.epoch;
    const permutation = () => {
      perm ??= epochPermutation(n, cfg.seed, epoch);
      return perm;
    };
    let epochCost = 0;
    let epochCount = 0;
    while (state.step < steps) {
      const t0 = performance.now();
      const shards = shardRanges(n, cfg.batch, cfg.shards, state.step);
      let step: StepOutcome;
      try {
        step = await executor.computeStep({
          epoch: state.epoch,
          step: state.step,
          version: state.updates,
          params: state.params,
          permutation,
          shards,
        });
      } catch (e) {
        if (!(e instanceof StepAbortedError)) throw e;
        // A stop was asked for and the step could not finish in time (no
        // worker left, say): the state is still that of the last update.
        stopped = true;
        await hooks.checkpoint?.(state, "stopped");
        break outer;
      }
      const { computeSeconds } = step;
      const t1 = performance.now();
      // Add up the shard tree (the same additions for any worker count).
      const k = shards.length;
      const { grad, cost, count } = tree.sum(step.blocks, 0, k, k, treeSum);
      // Nothing is updated unless the mean gradient and the cost are finite.
      let finite = Number.isFinite(cost);
      if (finite && fastUpdate) finite = fastUpdate.update(grad, count, state.updates + 1);
      else if (finite) {
        finite = meanGradient(grad, count, sum);
        if (finite) applyUpdate(cfg.optimizer, state.params, state.opt, sum, state.updates + 1);
      }
      if (!finite) {
        await hooks.checkpoint?.(state, "diverged");
        throw new DivergenceError(state.epoch, state.step, cfg.optimizer.lr);
      }
      state.updates++;
      state.step++;
      state.samples += count;
      stepsHere++;
      samplesHere += count;
      epochCost += cost;
      epochCount += count;
      const t2 = performance.now();
      const total = (t2 - t0) / 1000;
      trainSeconds += total;
      const wait = (t1 - t0) / 1000;
      hooks.onStep?.({
        epoch: state.epoch,
        step: state.step - 1,
        stepsPerEpoch: steps,
        updates: state.updates,
        loss: cost / count,
        samples: state.samples,
        batchSamples: count,
        timing: {
          compute: computeSeconds,
          communication: Math.max(0, wait - computeSeconds),
          update: (t2 - t1) / 1000,
          total,
        },
        params: state.params,
      });
      const stopNow = hooks.shouldStop?.() ?? false;
      if (state.step < steps && opts.checkpointEvery && state.updates % opts.checkpointEvery === 0) {
        await hooks.checkpoint?.(state, "interval");
      }
      if (stopNow && state.step < steps) {
        stopped = true;
        await hooks.checkpoint?.(state, "stopped");
        break outer;
      }
    }
    test = evalNet.evaluate(state.params, data.test);
    const epochDone = state.epoch;
    state.epoch++;
    state.step = 0;
    hooks.onEpoch?.({
      epoch: epochDone,
      test,
      trainCost: epochCount ? epochCost / epochCount : Number.NaN,
      samples: state.samples,
      trainSeconds,
    });
    await hooks.checkpoint?.(state, "epoch");
    if (state.epoch < cfg.epochs && (hooks.shouldStop?.() ?? false)) {
      stopped = true;
      break;
    }
  }
  test ??= evalNet.evaluate(state.params, data.test);
  return { state, test, steps: stepsHere, samples: samplesHere, trainSeconds, stopped };
}
