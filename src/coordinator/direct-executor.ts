/**
 * Direct steps (`--dispatch direct`, the fast path): BullMQ hands out seats,
 * and each seated worker dials the coordinator's data port and keeps the
 * connection; a step is then one STEP frame to each worker (the weights and a
 * contiguous range of shards) and one RESULT frame back, with no Redis
 * command at all. See docs/design-notes.md, "Direct steps".
 *
 * What keeps the invariants:
 * - exactly once: the coordinator is the only reader of results, and a
 *   step's range is accepted once (StepRound); a late copy, or one of an old
 *   version, is dropped and counted (duplicate, stale);
 * - the same bits for any worker count: a range that starts at shard 0 comes
 *   back as the float64 running sum of its shards, the coordinator's own
 *   first additions; later ranges come back per shard and are added after it
 *   in shard order (see trainer.meanGradient);
 * - nothing silent: a malformed result drops its worker, a wrong count or a
 *   non-finite gradient is refused, counted and computed again elsewhere;
 * - no hang: a range whose worker leaves goes to another at once, one that is
 *   overdue (`--step-timeout`) too; a step with no worker waits for one.
 */
import { randomBytes } from "node:crypto";
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { DataBundle } from "../core/dataset.js";
import { stepsPerEpoch } from "../core/plan.js";
import type { RunConfig } from "../core/run-config.js";
import { layoutOf } from "../core/spec.js";
import {
  type GradientExecutor,
  type ShardResult,
  StepAbortedError,
  type StepOutcome,
  type StepRequest,
} from "../core/trainer.js";
import { LANES_QUEUE_NAME, LIVE_WORKER_WINDOW_MS, type RunKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import type { LaneJob } from "../shared/messages.js";
import { newRunSpec, type RunSpec } from "../shared/run-spec.js";
import { decodeResult, encodeStepHeader, type RangeResult, resultFrameBytes } from "../shared/step-frames.js";
import { type Trace, traceNow } from "../shared/trace.js";
import { deleteRunKeys } from "./cluster-executor.js";
import { ClusterStats } from "./cluster-stats.js";
import { StepRound, type Unit } from "./step-round.js";
import { StepServer, type WorkerLink } from "./step-server.js";

/** Most seats: more workers than shards could not share a step. */
const MAX_SEATS = 64;
/** How often the seat keeper looks at the run's spec and waiting seats. */
const KEEPER_MS = 1000;
/** How long closing waits for workers to leave their seats. */
const CLOSE_WAIT_MS = 2000;
/** Least time between two writes of the current version to Redis (see noteVersion). */
const VERSION_MS = 100;

/** Settings of the direct executor. */
export interface DirectExecutorOptions {
  runId: string;
  keys: RunKeys;
  redis: Redis;
  config: RunConfig;
  data: DataBundle;
  trainLimit: number | null;
  testLimit: number | null;
  log: Logger;
  stepTimeoutSeconds: number;
  /** Address the data port listens on. */
  listenHost: string;
  /** Port (0: any free one). */
  listenPort: number;
  /** Address workers dial (put in the run spec). */
  advertiseHost: string;
  stats?: ClusterStats;
  /** Spans of each step (send, wait, each result), when `--trace` is set. */
  trace?: Trace;
}

/** What a unit's accepted result left behind. */
interface UnitValue {
  costs: number[];
  counts: number[];
}

/** The step in hand. */
interface Current {
  req: StepRequest;
  round: StepRound<WorkerLink>;
  header: (lo: number, hi: number) => Buffer;
  weights: Buffer;
  values: Map<Unit<WorkerLink>, UnitValue>;
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
  /** Seats are lane jobs; metrics count them. */
  readonly lanesBullQueue: Queue;
  private readonly server: StepServer;
  private readonly links: WorkerLink[] = [];
  private readonly refusing = new Map<string, string>();
  private readonly paramCount: number;
  private readonly totalVersions: number;
  private current?: Current;
  private keeper?: NodeJS.Timeout;
  private seatsAdded = 0;
  private abandonAt = Number.POSITIVE_INFINITY;
  private specJson = "";
  private versionNotedAt = 0;
  /** Set by fail(): every step fails with it. */
  private failure?: Error;
  /** The trainer waiting in ready(). */
  private waitingForWorker?: { resolve(): void; reject(e: Error): void };
  /** Since when every live worker has refused the run (see checkRefusingFleet). */
  private allRefusingSince: number | undefined;
  /** Owned copies of accepted gradients (a frame's body is reused by the next frame). */
  private prefixSum: Float64Array;
  private readonly shardGrads: Float32Array[] = [];

  constructor(private readonly o: DirectExecutorOptions) {
    this.stats = o.stats ?? new ClusterStats();
    this.paramCount = layoutOf(o.config.spec.layers).size;
    this.prefixSum = new Float64Array(this.paramCount);
    this.totalVersions = o.config.epochs * stepsPerEpoch(o.data.train.n, o.config.batch);
    this.spec = newRunSpec(o, { host: o.advertiseHost, port: 0, token: randomBytes(16).toString("hex") });
    const direct = this.spec.direct!;
    const k = Math.min(o.config.shards, o.config.batch);
    this.server = new StepServer(
      {
        session: this.spec.session,
        token: direct.token,
        maxFrameBytes: Math.max(
          resultFrameBytes(0, k, this.paramCount),
          resultFrameBytes(1, k + 1, this.paramCount),
        ),
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
    this.lanesBullQueue = new Queue(LANES_QUEUE_NAME, {
      connection: o.redis,
      prefix: o.keys.queuePrefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: 100, attempts: 1 },
    });
    this.lanesBullQueue.on("error", (e) => o.log.warn({ err: e.message }, "bullmq seats queue error"));
  }

  /** Opens the data port, publishes the run spec, clears an earlier session's keys and adds seats. */
  async open(): Promise<void> {
    const { redis, keys } = this.o;
    this.spec.direct!.port = await this.server.listen(this.o.listenHost, this.o.listenPort);
    this.specJson = JSON.stringify(this.spec);
    await redis.del(keys.version, keys.notices, keys.counters);
    await this.lanesBullQueue.drain(true);
    await deleteRunKeys(redis, keys.allResults);
    await deleteRunKeys(redis, keys.allClaims);
    await deleteRunKeys(redis, keys.allWeights);
    await redis.set(keys.spec, this.specJson);
    await this.addSeats(Math.min(this.o.config.shards, MAX_SEATS));
    this.keeper = setInterval(() => void this.keepSeats(), KEEPER_MS);
    this.keeper.unref();
  }

  /** The data port the coordinator listens on. */
  get port(): number {
    return this.spec.direct!.port;
  }

  async computeStep(req: StepRequest): Promise<StepOutcome> {
    if (this.failure) throw this.failure;
    const weights = Buffer.from(req.params.buffer, req.params.byteOffset, req.params.byteLength);
    // Copied: a slow worker's socket may still hold these bytes when the
    // optimizer changes the params.
    const copy = Buffer.allocUnsafe(weights.length);
    weights.copy(copy);
    this.noteVersion(req.version);
    const open = this.links.filter((l) => !l.closed && !l.leaving);
    // A worker that missed a deadline and has not answered since (frozen,
    // say) gets no range while others can take the step.
    const prompt = open.filter((l) => !l.late);
    const live = prompt.length > 0 ? prompt : open;
    const round = new StepRound(req.shards.length, live, this.o.stepTimeoutSeconds * 1000);
    await new Promise<void>((resolve, reject) => {
      const cur: Current = {
        req,
        round,
        weights: copy,
        header: (lo, hi) =>
          encodeStepHeader(
            { version: req.version, epoch: req.epoch, step: req.step, lo, hi },
            this.paramCount,
          ),
        values: new Map(),
        nonFinite: new Set(),
        perWorker: new Map(),
        resolve,
        reject,
      };
      this.current = cur;
      const t0 = this.o.trace ? traceNow() : 0;
      for (const u of round.units) if (u.holder) this.send(u.holder, u);
      if (this.o.trace) {
        cur.sentAt = traceNow();
        this.o.trace.span("send step", t0, cur.sentAt, { version: req.version, workers: live.length });
      }
      this.arm();
    }).finally(() => {
      clearTimeout(this.current?.timer);
    });
    if (this.o.trace && this.current?.sentAt)
      this.o.trace.span("wait for results", this.current.sentAt, traceNow());
    const cur = this.current!;
    this.current = undefined;
    return this.outcome(cur);
  }

  /** Resolves once a worker has joined (the trainer starts its clock then). */
  ready(): Promise<void> {
    if (this.links.length > 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      // Workers that cannot serve the run say so before any step: stop a run
      // that none can serve (see checkRefusingFleet).
      const timer = setInterval(() => {
        if (this.refusing.size === 0) return;
        void this.checkRefusingFleet((e) => this.waitingForWorker?.reject(e));
      }, KEEPER_MS / 2);
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
    clearInterval(this.keeper);
    // Waiting seats first: a worker whose seat ends would take the next one.
    // (Not after a lost lease: the queue is the new coordinator's now.)
    if (cleanup) await this.lanesBullQueue.drain(true).catch(() => {});
    for (const l of this.links) l.close("run over");
    // Let the workers end their seats (complete their lane jobs) before the
    // queue goes: else each logs BullMQ's "Missing key for job".
    await until(() => this.links.length === 0, CLOSE_WAIT_MS);
    if (cleanup) {
      await until(
        async () => (await this.lanesBullQueue.getActiveCount().catch(() => 0)) === 0,
        CLOSE_WAIT_MS,
      );
    }
    await this.server.close();
    if (cleanup) {
      await this.lanesBullQueue.obliterate({ force: true }).catch(() => {});
      await deleteRunKeys(this.o.redis, this.o.keys.all).catch(() => {});
    }
    await this.lanesBullQueue.close();
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
    const at = Math.min(cur.round.nextDeadline(), this.abandonAt, Date.now() + KEEPER_MS);
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
    if (this.links.length > 0 || this.refusing.size === 0) this.allRefusingSince = undefined;
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
    this.refusing.delete(l.workerId);
    this.o.log.info({ worker: l.workerId, workers: this.links.length }, "worker joined");
    this.waitingForWorker?.resolve();
    this.waitingForWorker = undefined;
    const cur = this.current;
    if (!cur) return;
    for (const u of cur.round.unheld()) this.send(l, u);
  }

  /** The version in Redis for operators and tests to follow progress: at most every VERSION_MS. */
  private noteVersion(version: number): void {
    const now = Date.now();
    if (now - this.versionNotedAt < VERSION_MS) return;
    this.versionNotedAt = now;
    this.o.redis.set(this.o.keys.version, String(version)).catch(() => {});
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
    if (this.refusing.get(workerId) !== reason) {
      this.o.log.error({ worker: workerId, reason }, `a worker cannot serve this run: ${message}`);
    }
    this.refusing.set(workerId, reason);
    this.stats.countRejected(
      reason === "data_mismatch" || reason === "spec_mismatch" ? "spec_mismatch" : "refused",
    );
  }

  /**
   * No worker is connected and some refused the run: stop it once every live
   * worker (heartbeat in the last LIVE_WORKER_WINDOW_MS: a worker beats from
   * the moment Redis answers, before its data loads) has refused it for a
   * whole step timeout. A good worker still starting keeps the run waiting.
   */
  private async checkRefusingFleet(stop: (e: Error) => void): Promise<void> {
    const { redis, keys } = this.o;
    let live: string[];
    try {
      live = await redis.zrangebyscore(keys.workers, Date.now() - LIVE_WORKER_WINDOW_MS, "+inf");
    } catch {
      return; // Redis unreachable: no verdict now
    }
    for (const w of this.refusing.keys()) if (!live.includes(w)) this.refusing.delete(w);
    if (this.links.length > 0 || live.length === 0 || !live.every((w) => this.refusing.has(w))) {
      this.allRefusingSince = undefined;
      return;
    }
    this.allRefusingSince ??= Date.now();
    if (Date.now() - this.allRefusingSince >= this.o.stepTimeoutSeconds * 1000)
      stop(this.refusingFleetError());
  }

  private refusingFleetError(): Error {
    const ids = [...this.refusing.keys()];
    const reasons = [...new Set(this.refusing.values())].join(", ");
    return new Error(
      `no live worker can serve this run: ${ids.length === 1 ? "the only one" : `all ${ids.length}`} ` +
        `(${ids
          .slice(0, 5)
          .map((w) => JSON.stringify(w.slice(0, 64)))
          .join(", ")}${ids.length > 5 ? ", ..." : ""}) refused it (last reason: ${reasons}); ` +
        "check the workers' logs (same dataset and --train-limit/--test-limit, same gradfleet version?)",
    );
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
    const why = this.check(cur, r);
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
    this.keep(cur, u, r);
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

  /** Why a result cannot be used, or undefined when it can ("non_finite" is decided by the caller). */
  private check(cur: Current, r: RangeResult): "wrong_shard" | "non_finite" | undefined {
    const shards = cur.req.shards;
    if (r.lo === 0) {
      let n = 0;
      for (let s = 0; s < r.hi; s++) n += shards[s].end - shards[s].start;
      if (r.counts[0] !== n) return "wrong_shard";
    } else {
      for (let s = r.lo; s < r.hi; s++)
        if (r.counts[s - r.lo] !== shards[s].end - shards[s].start) return "wrong_shard";
    }
    for (const c of r.costs) if (!Number.isFinite(c)) return "non_finite";
    const g = r.grads;
    for (let i = 0; i < g.length; i++) if (g[i] - g[i] !== 0) return "non_finite";
    return undefined;
  }

  /** Copies an accepted result out of the frame body (which the next frame reuses). */
  private keep(cur: Current, u: Unit<WorkerLink>, r: RangeResult): void {
    if (r.lo === 0) this.prefixSum.set(r.grads as Float64Array);
    else {
      const P = this.paramCount;
      for (let s = r.lo; s < r.hi; s++) {
        this.shardGrads[s] ??= new Float32Array(P);
        this.shardGrads[s].set((r.grads as Float32Array).subarray((s - r.lo) * P, (s - r.lo + 1) * P));
      }
    }
    cur.values.set(u, { costs: [...r.costs], counts: [...r.counts] });
  }

  private outcome(cur: Current): StepOutcome {
    const results: ShardResult[] = [];
    let prefix: StepOutcome["prefix"];
    for (const u of cur.round.units) {
      const v = cur.values.get(u)!;
      if (u.lo === 0) prefix = { through: u.hi, sum: this.prefixSum, cost: v.costs[0], count: v.counts[0] };
      else
        for (let s = u.lo; s < u.hi; s++)
          results.push({
            shard: cur.req.shards[s].shard,
            grad: this.shardGrads[s],
            cost: v.costs[s - u.lo],
            count: v.counts[s - u.lo],
          });
    }
    return { results, prefix, computeSeconds: Math.max(0, ...cur.perWorker.values()) };
  }

  /** Adds `n` seats (lane jobs of the whole run) for workers to take. */
  private async addSeats(n: number): Promise<void> {
    const data: LaneJob = { session: this.spec.session, from: 0, to: this.totalVersions };
    const jobs = Array.from({ length: n }, () => ({
      name: "seat",
      data,
      opts: { jobId: `${this.spec.session}-seat-${this.seatsAdded++}` },
    }));
    await this.lanesBullQueue.addBulk(jobs);
  }

  /**
   * Once a second: the run spec must still be in Redis as published (a
   * restarted or flushed Redis loses it: publish again), and a seat must be
   * waiting while fewer workers than seats are connected (seats are used up
   * by workers that leave, refuse, or cannot reach the data port).
   */
  private async keepSeats(): Promise<void> {
    const { redis, keys, log } = this.o;
    try {
      const spec = await redis.get(keys.spec);
      if (spec !== this.specJson) {
        log.warn(
          { key: keys.spec },
          spec === null
            ? "the run spec vanished from Redis; publishing it again"
            : "the run spec in Redis was overwritten; publishing it again",
        );
        await redis.set(keys.spec, this.specJson);
      }
      if (this.links.length >= MAX_SEATS) return;
      const waiting = await this.lanesBullQueue.getWaitingCount();
      if (waiting === 0) await this.addSeats(1);
    } catch (e) {
      log.debug({ err: (e as Error).message }, "seat keeper: Redis did not answer");
    }
  }
}

/** Resolves once `done()` is true (checked every 20 ms), or after `ms`. */
async function until(done: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await done()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}
