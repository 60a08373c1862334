/**
 * What the live page shows, kept by the coordinator as the run goes: the
 * loss curve, the test accuracy after each epoch, throughput, workers, and
 * the latest weights. It is fed by a {@link RunObserver} whose `onStep`
 * costs a few assignments (the hot path stays free of copies and JSON): the
 * loss curve is built in time buckets and the weights are copied only when
 * someone asks for them, at most a few times a second.
 */

import type { ClusterStats } from "../coordinator/cluster-stats.js";
import type { RunConfig } from "../core/run-config.js";
import { type Layout, layoutOf } from "../core/spec.js";
import type { EpochInfo, StepInfo } from "../core/trainer.js";
import type { RunObserver } from "../run/observer.js";

/** One point of the loss curve: the mean training loss of the steps of one time bucket. */
export interface LossPoint {
  /** Seconds since the page started, at the bucket's last step. */
  t: number;
  /** Mean per-example training cost over the bucket's samples. */
  loss: number;
  /** Samples trained so far (all of the run, resumed ones included). */
  samples: number;
}

/** The test evaluation at the end of an epoch. */
export interface AccuracyPoint {
  t: number;
  /** 1-based epoch number. */
  epoch: number;
  accuracy: number;
  cost: number;
  /** Mean training cost of the epoch. */
  trainCost: number;
}

/** Where the run stands. */
export interface ProgressView {
  t: number;
  /** 1-based epoch being trained (the last one once done). */
  epoch: number;
  epochs: number;
  /** Steps done in the current epoch. */
  step: number;
  stepsPerEpoch: number;
  updates: number;
  samples: number;
  /** Over the last few seconds; 0 when no step finished in them. */
  samplesPerSecond: number;
  /** Distinct workers that delivered results (cluster), or `in-process`. */
  workers: number | "in-process";
  /** The latest step's mean loss, if any. */
  loss: number | null;
}

/** The first layer's weights as tiles, neuron-major (tile j is `w[j*nIn .. (j+1)*nIn)`). */
export interface FirstLayerTiles {
  /** Weights version (updates so far). */
  version: number;
  nIn: number;
  /** Neurons of the layer. */
  nOut: number;
  /** Neurons included (the first `shown` of them). */
  shown: number;
  w: Float32Array;
  b: Float32Array;
}

/** Settings of {@link LiveRunState}. */
export interface LiveRunStateOptions {
  config: RunConfig;
  /** The run's cluster counters, or `in-process` for `train --workers 0`. */
  workers: ClusterStats | "in-process";
  /** Milliseconds clock (tests pass a fake one). Default `performance.now`. */
  now?: () => number;
  /** Loss points kept before the curve is thinned to half (default 2000). */
  maxPoints?: number;
  /** Initial time bucket of the loss curve, ms (default 250). */
  bucketMs?: number;
}

/** Window of the samples/s figure. */
const RATE_WINDOW_MS = 3000;

/** The live state of a run, fed by {@link LiveRunState.observer}. */
export class LiveRunState {
  readonly config: RunConfig;
  readonly layout: Layout;
  /** Forward this the run's steps and epochs. */
  readonly observer: RunObserver;
  private readonly now: () => number;
  private readonly start: number;
  private readonly maxPoints: number;
  private readonly workersSource: ClusterStats | "in-process";
  private bucketMs: number;

  private readonly points: LossPoint[] = [];
  private readonly accuracy: AccuracyPoint[] = [];
  /** Points and accuracies not yet handed out by {@link LiveRunState.take}. */
  private sentPoints = 0;
  private sentAccuracy = 0;
  /** The curve was thinned since the last take: the clients need the whole history again. */
  private thinned = false;

  // The bucket being filled.
  private bucketLoss = 0;
  private bucketCount = 0;
  private bucketStart = -1;
  private lastStepT = 0;

  private epoch = 0;
  private step = 0;
  private stepsPerEpoch = 0;
  private updates = 0;
  private samples = 0;
  private lastLoss: number | null = null;
  private readonly rate: { t: number; samples: number }[] = [];

  /** The live weights (the trainer's own buffer) and their version. */
  private live: Float32Array | undefined;
  private liveVersion = -1;
  private snap: Float32Array | undefined;
  private snapVersion = -1;

  constructor(o: LiveRunStateOptions) {
    this.config = o.config;
    this.layout = layoutOf(o.config.spec.layers);
    this.now = o.now ?? (() => performance.now());
    this.start = this.now();
    this.maxPoints = Math.max(16, o.maxPoints ?? 2000);
    this.bucketMs = o.bucketMs ?? 250;
    this.workersSource = o.workers;
    this.observer = {
      onStep: (info) => this.onStep(info),
      onEpoch: (info) => this.onEpoch(info),
    };
  }

  /** Seconds since the state was created. */
  elapsed(): number {
    return (this.now() - this.start) / 1000;
  }

  private onStep(info: StepInfo): void {
    const batch = info.batchSamples;
    const t = this.now();
    if (this.bucketStart < 0) this.bucketStart = t;
    if (Number.isFinite(info.loss)) {
      this.bucketLoss += info.loss * batch;
      this.bucketCount += batch;
    }
    this.lastStepT = t;
    this.epoch = info.epoch;
    this.step = info.step + 1;
    this.stepsPerEpoch = info.stepsPerEpoch;
    this.updates = info.updates;
    this.samples = info.samples;
    this.lastLoss = info.loss;
    // A reference, not a copy: it is copied when a snapshot is asked for.
    this.live = info.params;
    this.liveVersion = info.updates;
    // Close the bucket here too, so that a long run without anyone watching still has its curve.
    if (t - this.bucketStart >= this.bucketMs) this.closeBucket();
  }

  private onEpoch(info: EpochInfo): void {
    this.closeBucket();
    this.accuracy.push({
      t: this.elapsed(),
      epoch: info.epoch + 1,
      accuracy: info.test.accuracy,
      cost: info.test.cost,
      trainCost: info.trainCost,
    });
  }

  private closeBucket(): void {
    if (this.bucketCount > 0) {
      this.points.push({
        t: (this.lastStepT - this.start) / 1000,
        loss: this.bucketLoss / this.bucketCount,
        samples: this.samples,
      });
      if (this.points.length > this.maxPoints) this.thin();
    }
    this.bucketLoss = 0;
    this.bucketCount = 0;
    this.bucketStart = -1;
  }

  /** Halves the curve's resolution (pairs of points merged) and doubles the bucket, so memory stays bounded. */
  private thin(): void {
    const merged: LossPoint[] = [];
    for (let i = 0; i + 1 < this.points.length; i += 2) {
      const a = this.points[i];
      const b = this.points[i + 1];
      // Each point's weight is its bucket's sample count, approximated by the samples between points.
      const before = i > 0 ? this.points[i - 1].samples : 0;
      const wa = Math.max(1, a.samples - before);
      const wb = Math.max(1, b.samples - a.samples);
      merged.push({ t: b.t, loss: (a.loss * wa + b.loss * wb) / (wa + wb), samples: b.samples });
    }
    if (this.points.length % 2 === 1) merged.push(this.points[this.points.length - 1]);
    this.points.length = 0;
    this.points.push(...merged);
    this.bucketMs *= 2;
    this.thinned = true;
    this.sentPoints = 0;
  }

  /**
   * Closes a bucket whose time is up and returns what is new since the last
   * call: loss points and accuracies, or (after the curve was thinned) the
   * whole history with `reset` set.
   */
  take(): { reset: boolean; points: LossPoint[]; accuracy: AccuracyPoint[] } {
    if (this.bucketStart >= 0 && this.now() - this.bucketStart >= this.bucketMs) this.closeBucket();
    const reset = this.thinned;
    this.thinned = false;
    const points = this.points.slice(reset ? 0 : this.sentPoints);
    const accuracy = this.accuracy.slice(reset ? 0 : this.sentAccuracy);
    this.sentPoints = this.points.length;
    this.sentAccuracy = this.accuracy.length;
    return { reset, points, accuracy };
  }

  /** The whole history so far (for a client that just connected). */
  history(): { points: LossPoint[]; accuracy: AccuracyPoint[] } {
    return { points: [...this.points], accuracy: [...this.accuracy] };
  }

  /** Where the run stands now. */
  progress(): ProgressView {
    const t = this.now();
    this.rate.push({ t, samples: this.samples });
    while (this.rate.length > 2 && t - this.rate[1].t >= RATE_WINDOW_MS) this.rate.shift();
    const first = this.rate[0];
    const dt = (t - first.t) / 1000;
    const recent = t - this.lastStepT < RATE_WINDOW_MS;
    return {
      t: this.elapsed(),
      epoch: Math.min(this.epoch + 1, this.config.epochs),
      epochs: this.config.epochs,
      step: this.step,
      stepsPerEpoch: this.stepsPerEpoch,
      updates: this.updates,
      samples: this.samples,
      samplesPerSecond: recent && dt > 0 ? (this.samples - first.samples) / dt : 0,
      workers: this.workersSource === "in-process" ? "in-process" : this.workersSource.workersSeen.size,
      loss: this.lastLoss,
    };
  }

  /** The weights version of the latest step (-1 before the first). */
  get version(): number {
    return this.liveVersion;
  }

  /**
   * A copy of the latest weights, taken now (so a step that runs later does
   * not change it), or undefined before the first step. The copy is reused
   * until the weights change: do not keep it across steps.
   */
  snapshot(): { params: Float32Array; version: number } | undefined {
    if (!this.live) return undefined;
    if (this.snapVersion !== this.liveVersion || !this.snap) {
      if (!this.snap || this.snap.length !== this.live.length) this.snap = new Float32Array(this.live.length);
      this.snap.set(this.live);
      this.snapVersion = this.liveVersion;
    }
    return { params: this.snap, version: this.snapVersion };
  }

  /** The first layer's weights as neuron-major tiles, at most `maxTiles` of them; undefined before the first step. */
  firstLayerTiles(maxTiles: number): FirstLayerTiles | undefined {
    const s = this.snapshot();
    if (!s) return undefined;
    const L = this.layout.layers[0];
    const shown = Math.min(L.nOut, maxTiles);
    const w = new Float32Array(shown * L.nIn);
    // The parameters are input-major (W[k * nOut + j]); a tile wants neuron j's row.
    for (let k = 0; k < L.nIn; k++) {
      const row = L.w + k * L.nOut;
      for (let j = 0; j < shown; j++) w[j * L.nIn + k] = s.params[row + j];
    }
    const b = s.params.slice(L.b, L.b + shown);
    return { version: s.version, nIn: L.nIn, nOut: L.nOut, shown, w, b };
  }
}
