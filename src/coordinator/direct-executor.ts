/**
 * Direct steps (the only dispatch): BullMQ hands out seats,
 * and each seated worker dials the coordinator's data port and keeps the
 * connection; a step is then one STEP frame to each worker (the weights and a
 * contiguous range of shards) and one RESULT frame back, with no Redis
 * command at all. See docs/design-notes.md, "Direct steps".
 *
 * What keeps the invariants:
 * - exactly once: the coordinator is the only reader of results, and a
 *   step's range is accepted once (StepRound); a late copy, or one of an old
 *   version, is dropped and counted (duplicate, stale: ResultIntake);
 * - the same bits for any worker count: a range comes back as the sums of
 *   the nodes of the step's shard tree that tile it, added by the worker, and
 *   the trainer adds those up the rest of the tree (core/shard-tree.ts);
 * - nothing silent: a malformed result drops its worker, a wrong count or a
 *   non-finite gradient is refused, counted and computed again elsewhere
 *   (ResultIntake);
 * - no hang: a range whose worker leaves goes to another at once, one that is
 *   overdue (`--step-timeout`) too; a step with no worker waits for one
 *   (StepDispatch).
 */
import { randomBytes } from "node:crypto";
import type { Queue } from "bullmq";
import { type F32Heap, treeHeap } from "../core/f32-heap.js";
import { layoutOf } from "../core/spec.js";
import {
  type GradientExecutor,
  StepAbortedError,
  type StepOutcome,
  type StepRequest,
} from "../core/trainer.js";
import { newRunSpec, type RunSpec } from "../shared/run-spec.js";
import { resultFrameBytes } from "../shared/step-frames.js";
import { type Trace, traceNow } from "../shared/trace.js";
import { ClusterStats } from "./cluster-stats.js";
import type { ExecutorOptions } from "./executor-options.js";
import { RangeResults } from "./range-results.js";
import { RefusalWatch } from "./refusal-watch.js";
import { ResultIntake } from "./result-intake.js";
import { SeatKeeper, until } from "./seat-keeper.js";
import { SessionMemory } from "./session-memory.js";
import { type StepContext, StepDispatch, TICK_MS } from "./step-dispatch.js";
import { StepServer, type WorkerLink } from "./step-server.js";
import { WorkerPool } from "./worker-pool.js";

/** How long closing waits for workers to leave. */
const CLOSE_WAIT_MS = 2000;

/** Settings of the direct executor. */
export interface DirectExecutorOptions extends ExecutorOptions {
  /** Address the data port listens on. */
  listenHost: string;
  /** Port (0: any free one). */
  listenPort: number;
  /** Address workers dial (put in the run spec). */
  advertiseHost: string;
  /** `--min-workers`: how many workers must have joined before the first step (default 1). */
  minWorkers?: number;
  /**
   * `--shm-dir`: where to make the session's shared-memory directory for
   * workers on this host (undefined: none; see shared/step-memory.ts).
   */
  shmDir?: string;
  /** Spans of each step (send, wait, each result), when `--trace` is set. */
  trace?: Trace;
}

/**
 * Computes steps on workers connected to this coordinator's data port. It
 * ties the parts together: the StepServer's connections, the WorkerPool
 * they join, the step in hand (StepDispatch), the ResultIntake its RESULT
 * frames go to, the seats (SeatKeeper) and the refusals (RefusalWatch).
 */
export class DirectExecutor implements GradientExecutor {
  readonly spec: RunSpec;
  readonly stats: ClusterStats;
  /** Where the kept gradients and the trainer's tree sums live (see F32Heap). */
  readonly heap?: F32Heap;
  private readonly seats: SeatKeeper;
  private readonly server: StepServer;
  private readonly pool = new WorkerPool<WorkerLink>();
  private readonly refusals: RefusalWatch;
  /** Owned copies of accepted gradients (a frame's body is reused by the next frame). */
  private readonly kept: RangeResults;
  private readonly intake: ResultIntake;
  /** What every step shares. */
  private readonly steps: StepContext<WorkerLink>;
  /** The step in hand. */
  private step?: StepDispatch<WorkerLink>;
  private abandonAt = Number.POSITIVE_INFINITY;
  /** Set by fail(): every step fails with it. */
  private failure?: Error;
  /** The trainer waiting in ready(). */
  private waitingForWorker?: { resolve(): void; reject(e: Error): void };
  /** The weights as sent with the step in hand (see computeStep). */
  private weightsCopy = Buffer.alloc(0);
  /** The session's shared memory for workers on this host, when it has one. */
  private readonly memory?: SessionMemory;

  constructor(private readonly o: DirectExecutorOptions) {
    this.stats = o.stats ?? new ClusterStats();
    const paramCount = layoutOf(o.config.spec.layers).size;
    this.heap = treeHeap(paramCount, o.config.shards);
    this.kept = new RangeResults(paramCount, this.heap);
    this.intake = new ResultIntake(paramCount, this.kept, this.stats, o.log);
    this.steps = {
      pool: this.pool,
      stats: this.stats,
      log: o.log,
      paramCount,
      timeoutMs: o.stepTimeoutSeconds * 1000,
      abandonAt: () => this.abandonAt,
      onTick: (step) => this.watchFleet(step),
      now: Date.now,
    };
    this.spec = newRunSpec(o, { host: o.advertiseHost, port: 0, token: randomBytes(16).toString("hex") });
    if (o.shmDir !== undefined) {
      const memory = SessionMemory.open(o.shmDir, this.spec.session, o.log);
      if (memory) {
        this.memory = memory;
        this.spec.direct.memory = memory.dir;
        this.steps.publishWeights = (version, weights) => memory.publishWeights(version, weights);
      }
    }
    const k = Math.min(o.config.shards, o.config.batch);
    this.server = new StepServer(
      {
        session: this.spec.session,
        token: this.spec.direct.token,
        // A range of k shards is tiled by at most k tree nodes (and never more than 64).
        maxFrameBytes: resultFrameBytes(Math.min(k, 64), paramCount),
      },
      {
        onJoin: (l) => this.joined(l),
        onLeave: (l, why) => this.left(l, why),
        onLeaving: (l) => this.pool.releaseIfIdle(l, this.step?.round),
        onResult: (l, body, fromFile) => {
          if (fromFile) this.stats.sharedMemoryResults++;
          this.result(l, body);
        },
        onRefusal: (w, reason, message) => this.refusals.refused(w, reason, message),
      },
      o.log,
      this.memory,
    );
    this.seats = new SeatKeeper(o.redis, o.keys, o.log, () => this.pool.size);
    this.refusals = new RefusalWatch({
      redis: o.redis,
      keys: o.keys,
      log: o.log,
      stats: this.stats,
      timeoutMs: o.stepTimeoutSeconds * 1000,
      connected: () => this.pool.size,
    });
  }

  /** The seats' queue (metrics count its jobs). */
  get seatsQueue(): Queue {
    return this.seats.queue;
  }

  /** Opens the data port, publishes the run spec, clears an earlier session's keys and adds seats. */
  async open(): Promise<void> {
    this.spec.direct.port = await this.server.listen(this.o.listenHost, this.o.listenPort);
    await this.seats.open(this.spec, this.o.config.shards);
  }

  /** The data port the coordinator listens on. */
  get port(): number {
    return this.spec.direct.port;
  }

  async computeStep(req: StepRequest): Promise<StepOutcome> {
    if (this.failure) throw this.failure;
    const weights = Buffer.from(req.params.buffer, req.params.byteOffset, req.params.byteLength);
    // Copied: a slow worker's socket may still hold these bytes when the
    // optimizer changes the params. The last step's copy is reused once every
    // socket has handed its bytes to the kernel (no garbage per step).
    if (this.pool.anyUnsent() || this.weightsCopy.length !== weights.length) {
      this.weightsCopy = Buffer.allocUnsafe(weights.length);
    }
    const copy = this.weightsCopy;
    weights.copy(copy);
    this.seats.noteVersion(req.version);
    const live = this.pool.forStep();
    this.kept.clear();
    const step = new StepDispatch(req, live, copy, this.steps);
    this.step = step;
    try {
      await new Promise<void>((resolve, reject) => {
        const t0 = this.o.trace ? traceNow() : 0;
        step.start(resolve, reject);
        if (this.o.trace) {
          step.sentAt = traceNow();
          this.o.trace.span("send step", t0, step.sentAt, { version: req.version, workers: live.length });
        }
        step.arm();
      });
    } finally {
      // Also when the step failed or was given up: nothing may act on it later.
      step.end();
      this.step = undefined;
    }
    if (this.o.trace && step.sentAt) this.o.trace.span("wait for results", step.sentAt, traceNow());
    return this.kept.outcome(step.round.units, Math.max(0, ...step.perWorker.values()));
  }

  /** Resolves once `--min-workers` workers have joined (the trainer starts its clock then). */
  ready(): Promise<void> {
    if (this.enoughWorkers()) return Promise.resolve();
    // A stop asked for before the trainer got here (while the run was published).
    if (this.abandonAt !== Number.POSITIVE_INFINITY) {
      return Promise.reject(new StepAbortedError(this.notJoinedYet()));
    }
    return new Promise<void>((resolve, reject) => {
      // Workers that cannot serve the run say so before any step: stop a run
      // that none can serve (see RefusalWatch).
      const timer = setInterval(() => {
        if (!this.refusals.any) return;
        void this.refusals.check((e) => this.waitingForWorker?.reject(e));
      }, TICK_MS / 2);
      const done = () => clearInterval(timer);
      this.waitingForWorker = {
        resolve: () => {
          done();
          resolve();
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
    });
  }

  /** Ends the run with `e` at once: the step in hand (or the wait for a worker) fails with it, and every later one. */
  fail(e: Error): void {
    this.failure = e;
    this.waitingForWorker?.reject(e);
    this.waitingForWorker = undefined;
    this.step?.fail(e);
  }

  /** A stop was requested: give the step up now when no worker is there, else after the step timeout. */
  abort(): void {
    this.waitingForWorker?.reject(new StepAbortedError(this.notJoinedYet()));
    this.waitingForWorker = undefined;
    this.abandonAt = Math.min(this.abandonAt, Date.now() + this.o.stepTimeoutSeconds * 1000);
    if (this.step && this.pool.size === 0)
      this.step.fail(new StepAbortedError("no worker to finish the step"));
  }

  /** Ends every worker's connection and the seats; with `cleanup`, deletes every key of the run. */
  async close(cleanup: boolean): Promise<void> {
    try {
      await this.seats.stop(cleanup);
      for (const l of this.pool.links) l.close("run over");
      await until(() => this.pool.size === 0, CLOSE_WAIT_MS);
      await this.server.close();
      await this.seats.close(cleanup);
    } finally {
      this.memory?.close();
    }
  }

  /** Workers the first step waits for (`--min-workers`; later steps take whoever is there). */
  private get minWorkers(): number {
    return Math.max(1, this.o.minWorkers ?? 1);
  }

  private enoughWorkers(): boolean {
    return this.pool.size >= this.minWorkers;
  }

  /** Why a stop came before the first step. */
  private notJoinedYet(): string {
    return this.minWorkers === 1
      ? "stopped before any worker joined"
      : `stopped before ${this.minWorkers} workers joined (--min-workers)`;
  }

  private joined(l: WorkerLink): void {
    this.pool.add(l);
    this.refusals.joined(l.workerId);
    if (l.viaMemory) this.stats.sharedMemoryWorkers.add(l.workerId);
    this.o.log.info(
      { worker: l.workerId, workers: this.pool.size, via: l.viaMemory ? "shared memory" : "data port" },
      "worker joined",
    );
    if (this.enoughWorkers()) {
      this.waitingForWorker?.resolve();
      this.waitingForWorker = undefined;
    }
    this.step?.joined(l);
  }

  private left(l: WorkerLink, why: string): void {
    if (!this.pool.remove(l)) return;
    // Its ranges go elsewhere first; the line says whether it held any.
    const held = this.step ? this.step.left(l) : 0;
    const log = held ? this.o.log.warn.bind(this.o.log) : this.o.log.info.bind(this.o.log);
    log({ worker: l.workerId, why, workers: this.pool.size }, "worker left");
  }

  /** Each tick of a step: with no worker connected and some refusing, see whether none can serve the run. */
  private watchFleet(step: StepDispatch<WorkerLink>): void {
    if (!this.refusals.due()) return;
    void this.refusals.check((e) => {
      if (this.step === step) step.fail(e);
    });
  }

  /** A RESULT frame from worker `l`. */
  private result(l: WorkerLink, body: Buffer): void {
    if (!this.o.trace) {
      this.intake.take(l, body, this.step);
      return;
    }
    const t0 = traceNow();
    this.intake.take(l, body, this.step);
    this.o.trace.span("result", t0, traceNow(), { worker: l.workerId });
  }
}
