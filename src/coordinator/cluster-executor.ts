/**
 * The cluster GradientExecutor: computes a step's shards on worker
 * processes through BullMQ queues on Redis.
 *
 * Per step: the weights of the step's version are stored as bytes, and
 * announced with the bytes; no shard is computed before, since computing
 * needs them. Work goes out one of two ways (`--dispatch`, see
 * docs/design-notes.md):
 * - lanes (the default): workers hold lane jobs, each a seat until a version
 *   (ranges of LANE_STEPS versions, added a range ahead); seated, a worker
 *   claims shards of the announced version one by one (the CLAIM_SHARD
 *   script). A step costs no BullMQ job. A step that stalls adds its lanes
 *   again (workers that left used theirs up), and a shard claimed but not
 *   delivered, or claimed by nobody, by the deadline goes out as a shard job.
 * - jobs: one BullMQ job per shard per step.
 * Either way the coordinator then blocks on the run's notices list (no
 * polling) and reads each shard's result by (version, shard) — never from
 * BullMQ return values or events, which may be lost or repeated. Results are
 * validated; a bad one is counted by reason, deleted and its shard enqueued
 * again as a shard job. A shard that was claimed or picked up but has no
 * result by the deadline is enqueued again too (first valid result wins, the
 * late one is dropped as a duplicate).
 *
 * Round trips are what a step costs (a shard computes in well under a
 * millisecond), so a step makes as few as the protocol allows:
 * - the weights and the jobs (or lanes) go out together: the MULTI that
 *   stores the weights and the queue's job pipeline are written back to back
 *   on the same connection, which Redis serves in order, so the weights are
 *   still stored before any shard job exists, without waiting for the
 *   MULTI's reply first;
 * - a result comes with its notice: the submit script pushes the bytes it
 *   accepted as first writer (see SUBMIT_RESULT), so one BLPOP per shard
 *   both wakes the coordinator and hands it the result. A text `ok` notice
 *   (no bytes) still makes it read the result key;
 * - the step's BLPOPs leave in one write, with the HGETALL of the workers'
 *   duplicate/stale counters behind them (see nextNotice);
 * - gradients are decoded into one buffer per shard, reused every step.
 */
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { ShardRange } from "../core/plan.js";
import { stepsPerEpoch } from "../core/plan.js";
import {
  type GradientExecutor,
  StepAbortedError,
  type StepOutcome,
  type StepRequest,
} from "../core/trainer.js";
import type { Dispatch } from "../shared/dispatch.js";
import { LANES_QUEUE_NAME, LIVE_WORKER_WINDOW_MS, QUEUE_NAME } from "../shared/keys.js";
import {
  CANNOT_SERVE_REASONS,
  decodeResult,
  encodeWeightsAnnouncement,
  type LaneJob,
  laneJobId,
  parseNoticeBytes,
  ResultError,
  type ResultFrame,
  type ShardJob,
  shardJobId,
} from "../shared/messages.js";
import { newRunSpec, type RunSpec } from "../shared/run-spec.js";
import { ClusterStats } from "./cluster-stats.js";
import type { ExecutorOptions } from "./executor-options.js";

/** How many times one shard may be refused or rejected before the run stops. */
const MAX_REJECTIONS_PER_SHARD = 6;
/** Longest single BLPOP wait (s): bounds how late a deadline is noticed. */
const MAX_WAIT_SECONDS = 0.5;
/** Most BLPOPs in flight at once (see nextNotice). */
const MAX_NOTICES_ASKED = 64;
/**
 * Weights versions per lane job. A lane costs a BullMQ job (a few ms of CPU
 * all told) per worker per LANE_STEPS steps, instead of one per shard per
 * step; a worker that stops or joins changes the lanes' sharing of the work
 * at the latest this many steps later.
 */
export const LANE_STEPS = 64;
/** How long stored weights live, should the coordinator never delete them. */
const WEIGHTS_TTL_SECONDS = 86_400;
/** How often a step that collected "cannot serve" refusals looks at the live workers. */
const FLEET_CHECK_MS = 500;
/** A step unfinished after this long adds its lanes again (see reseat). */
const LANE_RESEAT_MS = 1000;
/** Most lanes per range: more workers than shards could not share a step. */
const MAX_LANES = 64;

/** Settings of the cluster executor. */
export interface ClusterExecutorOptions extends ExecutorOptions {
  /** A second connection, used only for the blocking BLPOP on notices. */
  blocking: Redis;
  /** Lanes (default) or a job per shard. */
  dispatch?: Dispatch;
}

/** A command in flight on the blocking connection: a BLPOP, or the HGETALL behind a batch of them. */
interface Asked {
  notice?: Promise<[Buffer, Buffer] | null>;
  counters?: Promise<Record<string, string>>;
}

interface PendingShard {
  range: ShardRange;
  /** Position among the step's non-empty shards: the claim that takes it (lanes). */
  index: number;
  job: ShardJob;
  attempt: number;
  rejections: number;
  deadline: number;
  nonFinite: boolean;
  lastReason?: string;
}

/** Computes shards on the cluster. Call open() first, close() at the end. */
export class ClusterExecutor implements GradientExecutor {
  readonly spec: RunSpec;
  readonly stats: ClusterStats;
  private readonly queue: Queue;
  private readonly lanesQueue: Queue;
  private readonly dispatch: Dispatch;
  /** Ranges (of LANE_STEPS versions) whose lane jobs were added. */
  private readonly lanesAdded = new Set<number>();
  /** The version whose lanes were last added again (see reseat). */
  private reseatedVersion = -1;
  /** The version whose deadline last renewed the lanes (see renewLanes). */
  private renewedVersion = -1;
  /** Workers that refused the run as one they cannot serve, and why (see checkRefusingFleet). */
  private readonly refusing = new Map<string, string>();
  /** Since when every live worker has refused the run, if they all have. */
  private allRefusingSince: number | undefined;
  private fleetCheckedAt = 0;
  /** Weights versions of the whole run: epochs × steps per epoch. */
  private readonly totalVersions: number;
  private publishedVersion = -1;
  private lastCounters = { duplicate: 0, stale: 0 };
  /** When a stop was requested, the time after which an unfinished step is given up. */
  private abandonAt = Number.POSITIVE_INFINITY;
  private readonly counterBase = { duplicate: 0, stale: 0 };
  private publishedParams?: Float32Array;
  /**
   * Connection drops seen, and how many of them were dealt with. ioredis
   * sends a BLPOP in flight again after a reconnect, so a drop does not
   * always surface as an error: it is looked for (see collect).
   */
  private drops = 0;
  private dropsHandled = 0;
  /** BLPOPs (and HGETALLs) sent and not yet answered, in order (see nextNotice). */
  private asked: Asked[] = [];
  /** Set by fail(): the step in hand and every later one fail with it. */
  private failure?: Error;
  /** One gradient buffer per shard, reused every step (StepOutcome allows it). */
  private readonly gradBuffers: Float32Array[] = [];

  constructor(private readonly o: ClusterExecutorOptions) {
    this.stats = o.stats ?? new ClusterStats();
    for (const c of [o.redis, o.blocking]) c.on("close", () => this.drops++);
    this.spec = newRunSpec(o);
    this.queue = new Queue(QUEUE_NAME, {
      connection: o.redis,
      prefix: o.keys.queuePrefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: 100, attempts: 1 },
    });
    this.queue.on("error", (e) => o.log.warn({ err: e.message }, "bullmq queue error"));
    this.lanesQueue = new Queue(LANES_QUEUE_NAME, {
      connection: o.redis,
      prefix: o.keys.queuePrefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: 100, attempts: 1 },
    });
    this.lanesQueue.on("error", (e) => o.log.warn({ err: e.message }, "bullmq lanes queue error"));
    this.dispatch = o.dispatch ?? "lanes";
    this.totalVersions = o.config.epochs * stepsPerEpoch(o.data.train.n, o.config.batch);
  }

  /** Publishes the run spec and clears what an earlier session of this run id left. */
  async open(): Promise<void> {
    const { redis, keys } = this.o;
    // An earlier session of this run id (a crashed coordinator being resumed)
    // may have left jobs, weights and first-writer-wins results for the very
    // versions this session is about to compute: clear them all.
    // The version first: with none current, a worker of the old session
    // can neither claim (CLAIM_SHARD) nor submit (SUBMIT_RESULT) meanwhile.
    await redis.del(keys.version, keys.notices, keys.counters);
    await this.queue.drain(true);
    await this.lanesQueue.drain(true);
    await deleteRunKeys(redis, keys.allResults);
    await deleteRunKeys(redis, keys.allClaims);
    await deleteRunKeys(redis, keys.allWeights);
    await redis.set(keys.spec, JSON.stringify(this.spec));
  }

  /** The BullMQ queue of this run's shard jobs (for metrics: job counts by state). */
  get bullQueue(): Queue {
    return this.queue;
  }

  /** The BullMQ queue of this run's lane jobs (for metrics: active lanes = seated workers). */
  get lanesBullQueue(): Queue {
    return this.lanesQueue;
  }

  async computeStep(req: StepRequest): Promise<StepOutcome> {
    const timeoutMs = this.o.stepTimeoutSeconds * 1000;
    const pending = new Map<number, PendingShard>();
    for (const [index, range] of req.shards.entries()) {
      const job: ShardJob = {
        session: this.spec.session,
        version: req.version,
        epoch: req.epoch,
        step: req.step,
        shard: range.shard,
        start: range.start,
        end: range.end,
      };
      pending.set(range.shard, {
        range,
        index,
        job,
        attempt: 0,
        rejections: 0,
        deadline: Date.now() + timeoutMs,
        nonFinite: false,
      });
    }
    const done = new Map<number, ResultFrame>();
    // A lost connection (Redis restarted, network blip) is not an error of
    // the run: wait for Redis, publish again what it may have lost, enqueue
    // the shards still missing and carry on. Accepted results stay accepted;
    // first-writer-wins on (version, shard) keeps late copies out.
    for (let recovering = false; ; ) {
      try {
        // Not awaited one after the other: they go out on the producer
        // connection, in this order (see the module comment). After a lost
        // connection the missing shards go out as shard jobs whatever the
        // dispatch: lanes may have been lost with Redis.
        await settleAll([
          this.publishWeights(req.version, req.params),
          this.dispatch === "lanes" ? this.addLanes(req.version, recovering) : undefined,
          this.dispatch === "jobs" || recovering ? this.enqueue([...pending.values()]) : undefined,
        ]);
        recovering = false;
        await this.collect(req, pending, done, timeoutMs);
        break;
      } catch (e) {
        if (!isConnectionError(e)) throw e;
        this.o.log.warn({ err: (e as Error).message }, "lost the connection to Redis; waiting for it");
        await this.waitForRedis();
        this.dropsHandled = this.drops;
        // Time without Redis is not time every worker spent refusing.
        this.allRefusingSince = undefined;
        await this.republish(req);
        await this.recoverResults(req, pending, done);
        for (const p of pending.values()) p.attempt++;
        this.stats.retriedShards += pending.size;
        recovering = true;
      }
    }
    // The step's compute is its busiest worker's: a worker with several
    // shards computes them one after another.
    const perWorker = new Map<string, number>();
    // Each shard a leaf of the step's shard tree (the trainer adds them up).
    const blocks = req.shards.map((r, i) => {
      const f = done.get(r.shard)!;
      perWorker.set(f.workerId, (perWorker.get(f.workerId) ?? 0) + f.computeSeconds);
      return { lo: i, hi: i + 1, grad: f.grad, cost: f.cost, count: f.count };
    });
    return { blocks, computeSeconds: Math.max(0, ...perWorker.values()) };
  }

  /**
   * A stop was requested: finish the step in hand if its shards come in
   * within the step timeout, else give it up (StepAbortedError) so that a
   * coordinator with no live worker still stops and checkpoints.
   */
  abort(): void {
    this.abandonAt = Math.min(this.abandonAt, Date.now() + this.o.stepTimeoutSeconds * 1000);
  }

  /** Blocks on the notices list until every pending shard has an accepted result. */
  private async collect(
    req: StepRequest,
    pending: Map<number, PendingShard>,
    done: Map<number, ResultFrame>,
    timeoutMs: number,
  ): Promise<void> {
    const { log } = this.o;
    const stepStart = Date.now();
    while (pending.size > 0) {
      if (this.failure) throw this.failure;
      if (this.drops !== this.dropsHandled) {
        // Redis may have restarted empty (jobs, weights and notices gone):
        // recover as from any lost connection (see computeStep).
        throw new Error("Connection is closed: the connection to Redis dropped during the step");
      }
      if (Date.now() >= this.abandonAt) {
        throw new StepAbortedError(
          `gave up step ${req.step + 1} of epoch ${req.epoch + 1}: ${pending.size} shard(s) missing`,
        );
      }
      const wait = Math.max(0.01, Math.min(MAX_WAIT_SECONDS, (minDeadline(pending) - Date.now()) / 1000));
      const raw = await this.nextNotice(wait, pending.size);
      if (raw) {
        const n = parseNoticeBytes(raw);
        const p = n && n.version === req.version ? pending.get(n.shard) : undefined;
        if (!n || !p) {
          log.debug(
            { notice: raw.subarray(0, 64).toString("latin1") },
            "ignored notice for another step or shard",
          );
        } else if (n.kind === "refused") {
          this.stats.countRejected(`refused_${n.reason ?? "unknown"}`);
          // A worker that cannot serve the run names itself: such refusals are
          // judged per fleet (checkRefusingFleet), not by the per-shard cap,
          // or one bad worker refusing a shard every second would stop a run
          // that a good worker, still starting, could serve.
          const cannotServe = Boolean(n.workerId && n.reason && CANNOT_SERVE_REASONS.has(n.reason));
          if (cannotServe) this.refusing.set(n.workerId!, n.reason!);
          if (n.reason === "missing_spec" || n.reason === "missing_weights") await this.republish(req);
          await this.reject(p, n.reason ?? "refused", pending, !cannotServe);
        } else {
          await this.settle(p, n.frame, pending, done);
        }
      }
      await this.checkDeadlines(req, pending, done, timeoutMs);
      await this.reseat(req, stepStart);
      await this.checkRefusingFleet(timeoutMs);
    }
  }

  /**
   * Stops the run when every live worker has refused it as one it cannot
   * serve (other data, another spec) for a whole step timeout: no shard can
   * be computed, and waiting would be silent. A worker that joins and can
   * serve the run resets the wait; so does one that has not refused.
   */
  private async checkRefusingFleet(timeoutMs: number): Promise<void> {
    if (this.refusing.size === 0 || Date.now() - this.fleetCheckedAt < FLEET_CHECK_MS) return;
    this.fleetCheckedAt = Date.now();
    const { redis, keys } = this.o;
    const live = await redis.zrangebyscore(keys.workers, Date.now() - LIVE_WORKER_WINDOW_MS, "+inf");
    // Workers gone (or ids no worker has, from forged notices) do not count.
    for (const w of this.refusing.keys()) if (!live.includes(w)) this.refusing.delete(w);
    if (live.length === 0 || !live.every((w) => this.refusing.has(w))) {
      this.allRefusingSince = undefined;
      return;
    }
    this.allRefusingSince ??= Date.now();
    if (Date.now() - this.allRefusingSince < timeoutMs) return;
    const reasons = [...new Set(live.map((w) => this.refusing.get(w)))].join(", ");
    throw new Error(
      `no live worker can serve this run: ${live.length === 1 ? "the only one" : `all ${live.length}`} ` +
        `(${live
          .slice(0, 5)
          .map((w) => JSON.stringify(w.slice(0, 64)))
          .join(", ")}${live.length > 5 ? ", ..." : ""}) refused it (last reason: ${reasons}); ` +
        "check the workers' logs (same dataset and --train-limit/--test-limit, same gradfleet version?)",
    );
  }

  /**
   * Lanes only: a step still unfinished after LANE_RESEAT_MS, with a shard
   * nobody claimed, adds its range's lanes again, once. Lanes are used up when their workers leave
   * gracefully or refuse; a worker that joins then finds a seat at once
   * instead of after a step deadline. Lanes still held or waiting are not
   * added twice (fixed job ids).
   */
  private async reseat(req: StepRequest, stepStart: number): Promise<void> {
    if (this.dispatch !== "lanes" || this.reseatedVersion === req.version) return;
    if (Date.now() - stepStart < LANE_RESEAT_MS) return;
    this.reseatedVersion = req.version;
    // A step that is merely long (a big model) has all its shards claimed.
    const claims = Number((await this.o.redis.hget(this.o.keys.claim(req.version), "n")) ?? 0);
    if (claims < req.shards.length) await this.addLanes(req.version, true);
  }

  /**
   * After a lost connection: results already written whose notices went
   * missing (a BLPOP reply lost with the connection) are read by key, so
   * that their shards are not recomputed only to be refused as duplicates.
   */
  private async recoverResults(
    req: StepRequest,
    pending: Map<number, PendingShard>,
    done: Map<number, ResultFrame>,
  ): Promise<void> {
    const shards = [...pending.values()];
    const { redis, keys } = this.o;
    const m = redis.pipeline();
    for (const p of shards) m.getBuffer(keys.result(req.version, p.job.shard));
    const replies = await m.exec();
    for (const [i, p] of shards.entries()) {
      const bytes = replies?.[i]?.[1] as Buffer | null | undefined;
      // A refused one is enqueued again with the rest (see computeStep).
      const frame = bytes ? await this.readResult(p, bytes) : undefined;
      if (frame) this.accept(p, frame, pending, done);
    }
  }

  /** Accepts a shard's validated result; else refuses it and enqueues the shard again. */
  private async settle(
    p: PendingShard,
    bytes: Uint8Array | null | undefined,
    pending: Map<number, PendingShard>,
    done: Map<number, ResultFrame>,
  ): Promise<void> {
    const frame = await this.readResult(p, bytes);
    if (frame) this.accept(p, frame, pending, done);
    else await this.reject(p, p.lastReason ?? "rejected", pending);
  }

  private accept(
    p: PendingShard,
    frame: ResultFrame,
    pending: Map<number, PendingShard>,
    done: Map<number, ResultFrame>,
  ): void {
    pending.delete(p.range.shard);
    done.set(p.range.shard, frame);
    this.stats.workersSeen.add(frame.workerId);
    // A worker that delivers serves the run (restarted with the right data
    // under the same id, say); and the run is not stuck.
    this.refusing.delete(frame.workerId);
    this.allRefusingSince = undefined;
  }

  /**
   * The next notice, waiting up to `wait` seconds for it (null when none
   * came). BLPOPs are asked for in batches, one per shard still pending, sent
   * in one write and answered in order: a step's notices cost one write, not
   * one each. Never more are asked for than notices are needed, so none is
   * left waiting when the step ends. Behind each batch goes an HGETALL of the
   * duplicate/stale counters, which Redis runs only once the batch's last
   * BLPOP has its notice: for the step's last notice, the counters then hold
   * everything counted before it, at no extra round trip.
   */
  private async nextNotice(wait: number, pendingCount: number): Promise<Buffer | null> {
    if (this.asked.length === 0) this.askNotices(Math.min(pendingCount, MAX_NOTICES_ASKED), wait);
    try {
      const popped = await this.asked[0].notice!;
      this.asked.shift();
      const counters = this.asked[0]?.counters;
      if (counters) {
        this.asked.shift();
        this.applyCounters(await counters.catch(() => undefined));
      }
      return popped?.[1] ?? null;
    } catch (e) {
      // ioredis fails every command in flight on the connection with it.
      this.asked = [];
      throw e;
    }
  }

  private askNotices(n: number, wait: number): void {
    const { keys, blocking } = this.o;
    // Each reply is awaited in turn; until then a failure must not count as unhandled.
    const handled = <T>(p: Promise<T>): Promise<T> => {
      p.catch(() => {});
      return p;
    };
    const stream = blocking.status === "ready" ? blocking.stream : undefined;
    stream?.cork();
    try {
      for (let i = 0; i < n; i++)
        this.asked.push({ notice: handled(blocking.blpopBuffer(keys.notices, wait)) });
      this.asked.push({ counters: handled(blocking.hgetall(keys.counters)) });
    } finally {
      stream?.uncork();
    }
  }

  /**
   * Duplicate and stale results are counted by the workers' submit script
   * in Redis (read with a step's last notice, see nextNotice); a Redis that
   * restarted empty starts them from zero again, so what was counted before
   * is kept as a base.
   */
  private applyCounters(c: Record<string, string> | null | undefined): void {
    if (!c) return;
    const dup = Number(c.duplicate ?? 0);
    const stale = Number(c.stale ?? 0);
    if (dup < this.lastCounters.duplicate || stale < this.lastCounters.stale) {
      this.counterBase.duplicate += this.lastCounters.duplicate;
      this.counterBase.stale += this.lastCounters.stale;
    }
    this.lastCounters = { duplicate: dup, stale };
    this.stats.duplicateResults = this.counterBase.duplicate + dup;
    this.stats.staleResults = this.counterBase.stale + stale;
  }

  /** Polls until Redis answers again, logging every 10 s. */
  private async waitForRedis(): Promise<void> {
    const since = Date.now();
    let lastLog = since;
    for (;;) {
      await new Promise((r) => setTimeout(r, 250));
      try {
        await this.o.redis.ping();
        return;
      } catch {
        if (Date.now() - lastLog >= 10_000) {
          lastLog = Date.now();
          this.o.log.warn({ seconds: Math.round((lastLog - since) / 1000) }, "still waiting for Redis");
        }
      }
    }
  }

  /**
   * Stores weights version v (bytes), then makes it current, drops the
   * previous step's results and old weights, and announces it.
   */
  private async publishWeights(version: number, params: Float32Array): Promise<void> {
    if (version === this.publishedVersion) return;
    const { keys, redis } = this.o;
    const bytes = Buffer.from(params.buffer, params.byteOffset, params.byteLength);
    const m = redis
      .multi()
      .set(keys.weights(version), bytes, "EX", WEIGHTS_TTL_SECONDS)
      .set(keys.version, String(version));
    const old: string[] = [];
    if (version >= 2) old.push(keys.weights(version - 2));
    if (version >= 1) {
      for (let s = 0; s < this.o.config.shards; s++) old.push(keys.result(version - 1, s));
      old.push(keys.claim(version - 1));
    }
    if (old.length) m.unlink(...old);
    // The announcement carries the bytes: workers need no GET to start the
    // step. (Stored and announced in one Lua script, the bytes would cross
    // the socket once instead of twice, but measured slower: Lua copies them.)
    m.publish(keys.versionChannel, encodeWeightsAnnouncement(this.spec.session, version, params));
    execReplies(await m.exec());
    this.publishedVersion = version;
    this.publishedParams = params;
  }

  /** After Redis lost our keys (restart, eviction): write spec and weights again. */
  private async republish(req: StepRequest): Promise<void> {
    const { keys, redis, log } = this.o;
    const haveSpec = await redis.exists(keys.spec);
    if (!haveSpec) log.warn("the run spec was missing from Redis (restarted?); publishing it again");
    await redis.set(keys.spec, JSON.stringify(this.spec));
    this.publishedVersion = -1;
    await this.publishWeights(req.version, this.publishedParams ?? req.params);
  }

  /**
   * Adds the lane jobs of the range holding `version` and of the next one,
   * unless added before (`again`: after a lost connection, which may have
   * lost them with Redis; their fixed job ids keep a lane that still exists
   * from being added twice).
   */
  private async addLanes(version: number, again: boolean): Promise<void> {
    if (again) this.lanesAdded.clear();
    const range = Math.floor(version / LANE_STEPS);
    const lanes: { name: string; data: LaneJob; opts: { jobId: string } }[] = [];
    for (const r of [range, range + 1]) {
      const from = r * LANE_STEPS;
      if (this.lanesAdded.has(r) || from >= this.totalVersions) continue;
      this.lanesAdded.add(r);
      const data: LaneJob = {
        session: this.spec.session,
        from,
        to: Math.min(from + LANE_STEPS, this.totalVersions),
      };
      for (let i = 0; i < this.lanesPerRange; i++)
        lanes.push({ name: "lane", data, opts: { jobId: laneJobId(this.spec.session, r, i) } });
    }
    if (lanes.length) await this.lanesQueue.addBulk(lanes);
  }

  /**
   * A step's deadline passed in lane mode: add its range's lanes again, and
   * fresh ones (new job ids) to the end of the range. Lanes of workers that
   * were killed stay active until BullMQ's lock on them lapses, and a lane
   * that failed keeps its id: with fixed ids alone, workers started to
   * replace killed ones could find no seat until the next range. At most
   * once per version.
   */
  private async renewLanes(version: number): Promise<void> {
    if (this.renewedVersion === version) return;
    this.renewedVersion = version;
    await this.addLanes(version, true);
    const range = Math.floor(version / LANE_STEPS);
    const data: LaneJob = {
      session: this.spec.session,
      from: version,
      to: Math.min((range + 1) * LANE_STEPS, this.totalVersions),
    };
    await this.lanesQueue.addBulk(
      Array.from({ length: this.lanesPerRange }, (_, i) => ({
        name: "lane",
        data,
        opts: { jobId: laneJobId(this.spec.session, range, i, version) },
      })),
    );
  }

  /** Lanes per range: one per shard (more workers could not share a step). */
  private get lanesPerRange(): number {
    return Math.min(this.o.config.shards, MAX_LANES);
  }

  private async enqueue(ps: PendingShard[]): Promise<void> {
    const now = Date.now();
    for (const p of ps) p.deadline = now + this.o.stepTimeoutSeconds * 1000;
    await this.queue.addBulk(
      ps.map((p) => ({ name: "shard", data: p.job, opts: { jobId: shardJobId(p.job, p.attempt) } })),
    );
  }

  /**
   * Validates a shard's result — the bytes its notice carried, or (for a
   * text notice) those under its key; undefined (with p.lastReason set) when
   * refused. A refused result's key is deleted, so that a recompute can win.
   */
  private async readResult(
    p: PendingShard,
    bytes: Uint8Array | null | undefined,
  ): Promise<ResultFrame | undefined> {
    const { keys, redis, log } = this.o;
    const key = keys.result(p.job.version, p.job.shard);
    if (bytes === undefined) bytes = await redis.getBuffer(key);
    if (!bytes) {
      p.lastReason = "missing_result";
      return undefined;
    }
    let frame: ResultFrame;
    try {
      frame = decodeResult(bytes, this.spec.paramCount, this.gradBuffer(p.job.shard));
    } catch (e) {
      const reason = e instanceof ResultError ? e.reason : "decode";
      if (reason === "non_finite" && p.nonFinite) {
        // The recompute is not finite either: the training diverged. Hand a
        // NaN gradient to the trainer, which checkpoints and stops the run.
        log.error({ step: p.job.step, shard: p.job.shard }, "non-finite gradient again after a recompute");
        const grad = new Float32Array(this.spec.paramCount).fill(Number.NaN);
        return { ...placeholder(p), grad, cost: Number.NaN };
      }
      if (reason === "non_finite") p.nonFinite = true;
      this.stats.countRejected(reason);
      log.warn(
        { step: p.job.step, shard: p.job.shard, reason, err: (e as Error).message },
        "refused a result",
      );
      p.lastReason = reason;
      await redis.del(key);
      return undefined;
    }
    const expected = p.range.end - p.range.start;
    if (
      frame.session !== this.spec.session ||
      frame.version !== p.job.version ||
      frame.shard !== p.job.shard
    ) {
      p.lastReason = "spec_mismatch";
    } else if (frame.count !== expected) {
      p.lastReason = "wrong_shard";
    } else {
      return frame;
    }
    this.stats.countRejected(p.lastReason);
    log.warn(
      { step: p.job.step, shard: p.job.shard, reason: p.lastReason, worker: frame.workerId },
      "refused a result",
    );
    await redis.del(key);
    return undefined;
  }

  /** The reusable gradient buffer of a shard. */
  private gradBuffer(shard: number): Float32Array {
    let b = this.gradBuffers[shard];
    if (!b) {
      b = new Float32Array(this.spec.paramCount);
      this.gradBuffers[shard] = b;
    }
    return b;
  }

  private async reject(
    p: PendingShard,
    reason: string,
    pending: Map<number, PendingShard>,
    capped = true,
  ): Promise<void> {
    if (capped) p.rejections++;
    p.lastReason = reason;
    if (p.rejections > MAX_REJECTIONS_PER_SHARD) {
      throw new Error(
        `shard ${p.job.shard} of epoch ${p.job.epoch + 1} step ${p.job.step + 1} was refused ${p.rejections} times ` +
          `(last reason: ${reason}); check the workers' logs (same dataset, same gradfleet version?)`,
      );
    }
    if (!pending.has(p.job.shard)) return;
    p.attempt++;
    this.stats.retriedShards++;
    await this.enqueue([p]);
  }

  /**
   * Re-enqueues shards whose job was taken (or, in a lane, that were claimed
   * or not claimed at all) but produced nothing in time.
   */
  private async checkDeadlines(
    req: StepRequest,
    pending: Map<number, PendingShard>,
    done: Map<number, ResultFrame>,
    timeoutMs: number,
  ): Promise<void> {
    const now = Date.now();
    for (const p of [...pending.values()]) {
      if (now < p.deadline) continue;
      // The notice may be what went missing (a reply lost with a connection):
      // a result under the shard's key is as good as its notice. Without
      // this look, the shard's recompute would only ever be a duplicate.
      const bytes = await this.o.redis.getBuffer(this.o.keys.result(req.version, p.job.shard));
      if (bytes) {
        this.o.log.warn(
          { step: p.job.step, shard: p.job.shard },
          "found a shard's result without its notice",
        );
        await this.settle(p, bytes, pending, done);
        continue;
      }
      let state: string;
      let holder: string | null = null;
      if (p.attempt === 0 && this.dispatch === "lanes") {
        // No job: the shard was claimed in a lane and not delivered (its
        // worker died or hangs), or nobody claimed it: no worker is seated
        // (lanes used up by workers that left, or refused). Either way it
        // goes out as a shard job, which any worker's shard-job side takes
        // even while its lane waits; and lanes are added again for whoever
        // comes next.
        holder = await this.o.redis.hget(this.o.keys.claim(req.version), String(p.index));
        state = holder === null ? "unclaimed" : "claimed";
        await this.renewLanes(req.version);
      } else {
        state = await this.queue.getJobState(shardJobId(p.job, p.attempt)).catch(() => "unknown");
      }
      if (state === "waiting" || state === "prioritized" || state === "delayed") {
        // Nobody has picked it up yet (no free worker): waiting longer is all we can do.
        p.deadline = now + timeoutMs;
        this.o.log.warn({ step: p.job.step, shard: p.job.shard }, "shard still waiting for a free worker");
        continue;
      }
      this.o.log.warn(
        { step: p.job.step, shard: p.job.shard, state, worker: holder ?? undefined },
        "shard deadline passed; enqueueing it again",
      );
      p.attempt++;
      this.stats.retriedShards++;
      await this.enqueue([p]);
    }
  }

  /** Ends the run with `e` (seen at the step's next notice or wait, at most MAX_WAIT_SECONDS later). */
  fail(e: Error): void {
    this.failure = e;
  }

  /** Closes the queue; with `cleanup`, deletes every key of the run. */
  async close(cleanup: boolean): Promise<void> {
    const { keys, redis } = this.o;
    if (cleanup) {
      await this.queue.obliterate({ force: true }).catch(() => {});
      await this.lanesQueue.obliterate({ force: true }).catch(() => {});
      await deleteRunKeys(redis, keys.all).catch(() => {});
    }
    await this.queue.close();
    await this.lanesQueue.close();
  }
}

/** Deletes every key matching the run's pattern (SCAN, not KEYS, to never block Redis). */
export async function deleteRunKeys(redis: Redis, pattern: string): Promise<number> {
  let cursor = "0";
  let n = 0;
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
    cursor = next;
    if (batch.length) n += await redis.unlink(...batch);
  } while (cursor !== "0");
  return n;
}

/** Errors that mean "Redis is not reachable right now", as opposed to a bug or a refusal. */
export function isConnectionError(e: unknown): boolean {
  const msg = e instanceof Error ? e.message : String(e);
  // "Command aborted due to connection close": ioredis's AbortError for a
  // pipeline or MULTI cut in half by the connection dropping.
  return /Connection is closed|Stream isn't writeable|max retries per request|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|LOADING|Connection timeout|Socket closed|aborted due to connection close/i.test(
    msg,
  );
}

/** Awaits every promise (so none is left unhandled), then throws the first failure. */
async function settleAll(ps: (Promise<unknown> | undefined)[]): Promise<void> {
  const out = await Promise.allSettled(ps);
  for (const r of out) if (r.status === "rejected") throw r.reason;
}

/** The replies of a MULTI; throws the first command's error (ioredis reports them per command). */
function execReplies(res: [Error | null, unknown][] | null): unknown[] {
  if (!res) throw new Error("Redis aborted a transaction (EXEC returned nil)");
  return res.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

function minDeadline(pending: Map<number, PendingShard>): number {
  let m = Number.POSITIVE_INFINITY;
  for (const p of pending.values()) m = Math.min(m, p.deadline);
  return m;
}

function placeholder(p: PendingShard): Omit<ResultFrame, "grad" | "cost"> {
  return {
    session: p.job.session,
    version: p.job.version,
    shard: p.job.shard,
    workerId: "diverged",
    count: p.range.end - p.range.start,
    computeSeconds: 0,
  };
}
