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
 *   version, is dropped and counted (duplicate, stale);
 * - the same bits for any worker count: a range comes back as the sums of
 *   the nodes of the step's shard tree that tile it, added by the worker, and
 *   the trainer adds those up the rest of the tree (core/shard-tree.ts);
 * - nothing silent: a malformed result drops its worker, a wrong count or a
 *   non-finite gradient is refused, counted and computed again elsewhere;
 * - no hang: a range whose worker leaves goes to another at once, one that is
 *   overdue (`--step-timeout`) too; a step with no worker waits for one.
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
import { LIVE_WORKER_WINDOW_MS } from "../shared/keys.js";
import { newRunSpec, type RunSpec } from "../shared/run-spec.js";
import { decodeResult, encodeStepHeader, type RangeResult, resultFrameBytes } from "../shared/step-frames.js";
import { type Trace, traceNow } from "../shared/trace.js";
import { ClusterStats } from "./cluster-stats.js";
import type { ExecutorOptions } from "./executor-options.js";
import { checkRange, RangeResults } from "./range-results.js";
import { RefusingFleet } from "./refusing-fleet.js";
import { SeatKeeper, until } from "./seat-keeper.js";
import { StepRound, type Unit } from "./step-round.js";
import { StepServer, type WorkerLink } from "./step-server.js";

/** How often a waiting step looks at its deadlines, a stop and the refusing fleet, at the least. */
const TICK_MS = 1000;
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
  /** Spans of each step (send, wait, each result), when `--trace` is set. */
  trace?: Trace;
}

/** The step in hand. */
interface Current {
  req: StepRequest;
  round: StepRound<WorkerLink>;
  header: (lo: number, hi: number) => Buffer;
  weights: Buffer;
  nonFinite: Set<Unit<WorkerLink>>;
  perWorker: Map<string, number>;
  resolve(): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
  /** When the step's frames were sent (trace only). */
  sentAt?: number;
}

/** Computes steps on workers connected to this coordinator's data port. */
export class DirectExecutor implements GradientExecutor {
  readonly spec: RunSpec;
  readonly stats: ClusterStats;
  private readonly seats: SeatKeeper;
  private readonly server: StepServer;
  private readonly links: WorkerLink[] = [];
  private readonly refusing = new RefusingFleet();
  private readonly paramCount: number;
  private current?: Current;
  private abandonAt = Number.POSITIVE_INFINITY;
  /** Set by fail(): every step fails with it. */
  private failure?: Error;
  /** The trainer waiting in ready(). */
  private waitingForWorker?: { resolve(): void; reject(e: Error): void };
  /** Where the kept gradients and the trainer's tree sums live (see F32Heap). */
  readonly heap?: F32Heap;
  /** The weights as sent with the step in hand (see computeStep). */
  private weightsCopy = Buffer.alloc(0);
  /** Owned copies of accepted gradients (a frame's body is reused by the next frame). */
  private readonly kept: RangeResults;

  constructor(private readonly o: DirectExecutorOptions) {
    this.stats = o.stats ?? new ClusterStats();
    this.paramCount = layoutOf(o.config.spec.layers).size;
    this.heap = treeHeap(this.paramCount, o.config.shards);
    this.kept = new RangeResults(this.paramCount, this.heap);
    this.spec = newRunSpec(o, { host: o.advertiseHost, port: 0, token: randomBytes(16).toString("hex") });
    const direct = this.spec.direct!;
    const k = Math.min(o.config.shards, o.config.batch);
    this.server = new StepServer(
      {
        session: this.spec.session,
        token: direct.token,
        // A range of k shards is tiled by at most k tree nodes (and never more than 64).
        maxFrameBytes: resultFrameBytes(Math.min(k, 64), this.paramCount),
      },
      {
        onJoin: (l) => this.joined(l),
        onLeave: (l, why) => this.left(l, why),
        onLeaving: (l) => this.releaseIfIdle(l),
        onResult: (l, body) => this.result(l, body),
        onRefusal: (w, reason, message) => this.refused(w, reason, message),
      },
      o.log,
    );
    this.seats = new SeatKeeper(o.redis, o.keys, o.log, () => this.links.length);
  }

  /** The seats' queue (metrics count its jobs). */
  get seatsQueue(): Queue {
    return this.seats.queue;
  }

  /** Opens the data port, publishes the run spec, clears an earlier session's keys and adds seats. */
  async open(): Promise<void> {
    this.spec.direct!.port = await this.server.listen(this.o.listenHost, this.o.listenPort);
    await this.seats.open(this.spec, this.o.config.shards);
  }

  /** The data port the coordinator listens on. */
  get port(): number {
    return this.spec.direct!.port;
  }

  async computeStep(req: StepRequest): Promise<StepOutcome> {
    if (this.failure) throw this.failure;
    const weights = Buffer.from(req.params.buffer, req.params.byteOffset, req.params.byteLength);
    // Copied: a slow worker's socket may still hold these bytes when the
    // optimizer changes the params. The last step's copy is reused once every
    // socket has handed its bytes to the kernel (no garbage per step).
    if (this.links.some((l) => l.unsent > 0) || this.weightsCopy.length !== weights.length) {
      this.weightsCopy = Buffer.allocUnsafe(weights.length);
    }
    const copy = this.weightsCopy;
    weights.copy(copy);
    this.seats.noteVersion(req.version);
    const open = this.links.filter((l) => !l.closed && !l.leaving);
    // A worker that missed a deadline and has not answered since (frozen,
    // say) gets no range while others can take the step.
    const prompt = open.filter((l) => !l.late);
    const live = prompt.length > 0 ? prompt : open;
    const round = new StepRound(req.shards.length, live, this.o.stepTimeoutSeconds * 1000);
    this.kept.clear();
    const cur: Current = {
      req,
      round,
      weights: copy,
      header: (lo, hi) =>
        encodeStepHeader({ version: req.version, epoch: req.epoch, step: req.step, lo, hi }, this.paramCount),
      nonFinite: new Set(),
      perWorker: new Map(),
      resolve: () => {},
      reject: () => {},
    };
    this.current = cur;
    try {
      await new Promise<void>((resolve, reject) => {
        cur.resolve = resolve;
        cur.reject = reject;
        const t0 = this.o.trace ? traceNow() : 0;
        for (const u of round.units) if (u.holder) this.send(u.holder, u);
        if (this.o.trace) {
          cur.sentAt = traceNow();
          this.o.trace.span("send step", t0, cur.sentAt, { version: req.version, workers: live.length });
        }
        this.arm();
      });
    } finally {
      // Also when the step failed or was given up: nothing may act on it later.
      clearTimeout(cur.timer);
      this.current = undefined;
    }
    if (this.o.trace && cur.sentAt) this.o.trace.span("wait for results", cur.sentAt, traceNow());
    return this.kept.outcome(cur.round.units, Math.max(0, ...cur.perWorker.values()));
  }

  /** Resolves once a worker has joined (the trainer starts its clock then). */
  ready(): Promise<void> {
    if (this.links.length > 0) return Promise.resolve();
    // A stop asked for before the trainer got here (while the run was published).
    if (this.abandonAt !== Number.POSITIVE_INFINITY) {
      return Promise.reject(new StepAbortedError("stopped before any worker joined"));
    }
    return new Promise<void>((resolve, reject) => {
      // Workers that cannot serve the run say so before any step: stop a run
      // that none can serve (see checkRefusingFleet).
      const timer = setInterval(() => {
        if (!this.refusing.any) return;
        void this.checkRefusingFleet((e) => this.waitingForWorker?.reject(e));
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
    this.current?.reject(e);
  }

  /** A stop was requested: give the step up now when no worker is there, else after the step timeout. */
  abort(): void {
    this.waitingForWorker?.reject(new StepAbortedError("stopped before any worker joined"));
    this.waitingForWorker = undefined;
    this.abandonAt = Math.min(this.abandonAt, Date.now() + this.o.stepTimeoutSeconds * 1000);
    if (this.current && this.links.length === 0)
      this.current.reject(new StepAbortedError("no worker to finish the step"));
  }

  /** Ends every worker's connection and the seats; with `cleanup`, deletes every key of the run. */
  async close(cleanup: boolean): Promise<void> {
    await this.seats.stop(cleanup);
    for (const l of this.links) l.close("run over");
    await until(() => this.links.length === 0, CLOSE_WAIT_MS);
    await this.server.close();
    await this.seats.close(cleanup);
  }

  /** Sends unit `u` of the step in hand to worker `l`. */
  private send(l: WorkerLink, u: Unit<WorkerLink>): void {
    const cur = this.current!;
    cur.round.assign(u, l, false);
    l.busy++;
    l.sendAll([cur.header(u.lo, u.hi), cur.weights]);
  }

  /** (Re)arms the timer for the round's next deadline, abort or refusing-fleet check. */
  private arm(): void {
    const cur = this.current;
    if (!cur) return;
    clearTimeout(cur.timer);
    const at = Math.min(cur.round.nextDeadline(), this.abandonAt, Date.now() + TICK_MS);
    cur.timer = setTimeout(() => this.tick(), Math.max(0, at - Date.now()));
  }

  private tick(): void {
    const cur = this.current;
    if (!cur) return;
    const now = Date.now();
    if (now >= this.abandonAt) {
      cur.reject(new StepAbortedError("the step did not finish within --step-timeout of the stop"));
      return;
    }
    if (this.links.length > 0 || !this.refusing.any) this.refusing.reset();
    else
      void this.checkRefusingFleet((e) => {
        if (this.current === cur) cur.reject(e);
      });
    for (const u of cur.round.overdue()) {
      const from = u.holder;
      const to = this.pick(from) ?? from;
      this.o.log.warn(
        { version: cur.req.version, shards: `${u.lo}-${u.hi - 1}`, from: from?.workerId, to: to?.workerId },
        "shards overdue (--step-timeout); sending them again",
      );
      this.stats.retriedShards += u.hi - u.lo;
      if (from) {
        from.busy = Math.max(0, from.busy - 1);
        from.late = true;
      }
      if (to && !to.closed) {
        cur.round.assign(u, to, true);
        to.busy++;
        to.sendAll([cur.header(u.lo, u.hi), cur.weights]);
      } else cur.round.assign(u, undefined, true);
    }
    this.arm();
  }

  /** The least busy live worker other than `not`. */
  private pick(not?: WorkerLink): WorkerLink | undefined {
    let best: WorkerLink | undefined;
    for (const l of this.links) {
      if (l === not || l.closed || l.leaving) continue;
      if (!best || (best.late && !l.late) || (best.late === l.late && l.busy < best.busy)) best = l;
    }
    return best;
  }

  /** A leaving worker whose work is all back is let go (a graceful leave costs no retry). */
  private releaseIfIdle(l: WorkerLink): void {
    if (!l.leaving) return;
    if (this.current && this.current.round.heldBy(l).length > 0) return;
    l.close("released");
  }

  private joined(l: WorkerLink): void {
    this.links.push(l);
    this.refusing.joined(l.workerId);
    this.o.log.info({ worker: l.workerId, workers: this.links.length }, "worker joined");
    this.waitingForWorker?.resolve();
    this.waitingForWorker = undefined;
    const cur = this.current;
    if (!cur) return;
    for (const u of cur.round.unheld()) this.send(l, u);
  }

  private left(l: WorkerLink, why: string): void {
    const i = this.links.indexOf(l);
    if (i < 0) return;
    this.links.splice(i, 1);
    const cur = this.current;
    const held = cur ? cur.round.heldBy(l) : [];
    const log = held.length ? this.o.log.warn.bind(this.o.log) : this.o.log.info.bind(this.o.log);
    log({ worker: l.workerId, why, workers: this.links.length }, "worker left");
    for (const u of held) {
      const to = this.pick(l);
      this.stats.retriedShards += u.hi - u.lo;
      if (to) {
        cur!.round.assign(u, to, true);
        to.busy++;
        to.sendAll([cur!.header(u.lo, u.hi), cur!.weights]);
      } else cur!.round.assign(u, undefined, true);
    }
  }

  private refused(workerId: string, reason: string, message: string): void {
    if (this.refusing.refused(workerId, reason)) {
      this.o.log.error({ worker: workerId, reason }, `a worker cannot serve this run: ${message}`);
    }
    this.stats.countRejected(
      reason === "data_mismatch" || reason === "spec_mismatch" ? "spec_mismatch" : "refused",
    );
  }

  /** No worker is connected and some refused the run: `stop` it if none can serve it (see RefusingFleet). */
  private async checkRefusingFleet(stop: (e: Error) => void): Promise<void> {
    const { redis, keys } = this.o;
    let live: string[];
    try {
      live = await redis.zrangebyscore(keys.workers, Date.now() - LIVE_WORKER_WINDOW_MS, "+inf");
    } catch {
      return; // Redis unreachable: no verdict now
    }
    const e = this.refusing.check(live, this.links.length, this.o.stepTimeoutSeconds * 1000);
    if (e) stop(e);
  }

  /** A RESULT frame from worker `l`. */
  private result(l: WorkerLink, body: Buffer): void {
    if (!this.o.trace) {
      this.handleResult(l, body);
      return;
    }
    const t0 = traceNow();
    this.handleResult(l, body);
    this.o.trace.span("result", t0, traceNow(), { worker: l.workerId });
  }

  private handleResult(l: WorkerLink, body: Buffer): void {
    let r: RangeResult;
    try {
      r = decodeResult(body, this.paramCount);
    } catch (e) {
      this.stats.countRejected("decode");
      this.o.log.error(
        { worker: l.workerId, err: (e as Error).message },
        "refused a malformed result; dropping the worker",
      );
      l.close("malformed result");
      return;
    }
    l.late = false;
    const cur = this.current;
    if (!cur || r.version !== cur.req.version) {
      this.stats.staleResults++;
      return;
    }
    const u = cur.round.unit(r.lo, r.hi);
    if (!u) {
      this.stats.countRejected("wrong_shard");
      this.o.log.error(
        { worker: l.workerId, lo: r.lo, hi: r.hi },
        "refused a result for shards nobody asked for",
      );
      return;
    }
    if (u.done) {
      this.stats.duplicateResults++;
      return;
    }
    if (u.holder === l) l.busy = Math.max(0, l.busy - 1);
    const k = cur.req.shards.length;
    const why = checkRange(cur.req.shards, r) ?? (this.kept.stage(r, k) ? undefined : "non_finite");
    if (why === "wrong_shard") {
      this.stats.countRejected(why);
      this.o.log.error(
        { worker: l.workerId, lo: r.lo, hi: r.hi },
        "refused a result with the wrong sample counts",
      );
      this.again(cur, u, l);
      return;
    }
    if (why === "non_finite" && !cur.nonFinite.has(u)) {
      // Once more, elsewhere if possible: a worker's fault, or divergence
      // (then the recompute is not finite either, and the trainer stops).
      this.stats.countRejected(why);
      cur.nonFinite.add(u);
      this.o.log.warn(
        { worker: l.workerId, lo: r.lo, hi: r.hi, reason: "non_finite" },
        "refused a non-finite result; computing it again",
      );
      this.again(cur, u, l);
      return;
    }
    if (why === "non_finite") {
      // The recompute is not finite either: the training diverged. The
      // trainer gets it, checkpoints the last good weights and stops the run.
      this.o.log.error(
        { worker: l.workerId, lo: r.lo, hi: r.hi },
        "non-finite gradient again after a recompute",
      );
    }
    this.kept.keep(u, r, k);
    cur.round.accept(u);
    this.releaseIfIdle(l);
    this.stats.workersSeen.add(l.workerId);
    cur.perWorker.set(l.workerId, (cur.perWorker.get(l.workerId) ?? 0) + r.computeSeconds);
    if (cur.round.complete) cur.resolve();
  }

  /** Sends a refused unit to another worker (or the same one when it is alone). */
  private again(cur: Current, u: Unit<WorkerLink>, from: WorkerLink): void {
    this.stats.retriedShards += u.hi - u.lo;
    const to = this.pick(from) ?? (from.closed ? undefined : from);
    if (!to) {
      cur.round.assign(u, undefined, true);
      return;
    }
    cur.round.assign(u, to, true);
    to.busy++;
    to.sendAll([cur.header(u.lo, u.hi), cur.weights]);
  }
}
