/**
 * A gradient worker: takes shard jobs of a run from its BullMQ queue,
 * computes gradient sums with the shared core and hands them back as bytes.
 *
 * It is stateless apart from caches (the dataset, the run spec of the
 * current session, weights by version, the epoch permutation), so workers
 * can join and leave at any time. It refuses — and says so, on the notices
 * list and in its log — any job whose run it cannot compute faithfully: a
 * spec it cannot parse, a different data fingerprint, a job that does not
 * match the shard plan.
 *
 * Two ways in, on two BullMQ queues (see docs/design-notes.md, "Lanes"):
 * - a lane job (queue `lanes`, one at a time): a seat until a weights
 *   version. For each version from the current one on, the worker waits for
 *   its announcement (which carries the weights), then claims shards one by
 *   one (CLAIM_SHARD) and computes and submits each, until none is left;
 *   then the next version. A step then costs no BullMQ job at all: a claim
 *   and a submit per shard.
 * - a shard job (queue `grad`): one shard of one version. The coordinator
 *   enqueues these when it dispatches by job (`--dispatch jobs`) and, in lane
 *   mode, for a shard that was claimed but never came back (its worker died)
 *   or whose result was refused.
 *
 * Per shard job it makes one round trip of its own, at most: a shard computes
 * in well under a millisecond, so round trips are what a job costs.
 * - No read of the current version before computing: the submit script
 *   checks it atomically anyway (a result for an old version is dropped and
 *   counted as stale). Only when a job's weights are gone does the worker ask
 *   whether the run moved on (then the job is stale and skipped quietly).
 * - Weights come with the coordinator's announcement of their version on
 *   the run's channel, and are kept by version; a job or lane that missed
 *   the announcement reads them from their key (one read per version).
 * - The result is submitted on BullMQ's own connection, without waiting for
 *   the reply: the job's completion, which BullMQ sends right after on that
 *   connection, is served by Redis after the submit script, so the result is
 *   still written before the job counts as done.
 */
import { type Job, Worker } from "bullmq";
import type { Redis } from "ioredis";
import { DataError, loadDataset } from "../core/data/index.js";
import type { DataBundle } from "../core/dataset.js";
import { type Kernel, makeKernel } from "../core/kernel.js";
import { shardRanges, stepsPerEpoch } from "../core/plan.js";
import { epochPermutation } from "../core/prng.js";
import { LANES_QUEUE_NAME, QUEUE_NAME, type RunKeys, runKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import {
  CANNOT_SERVE_REASONS,
  encodeResultInto,
  type LaneJob,
  laneJobSchema,
  parseWeightsAnnouncement,
  type ResultFrame,
  refusedNotice,
  resultFrameSize,
  type ShardJob,
  shardJobSchema,
} from "../shared/messages.js";
import { connectRedis, waitForRedis } from "../shared/redis.js";
import { decodeRunSpec, type RunSpec } from "../shared/run-spec.js";
import { CLAIM_SHARD, SUBMIT_RESULT } from "../shared/scripts.js";
import type { Trace } from "../shared/trace.js";
import { reportRefusal, serveSeat } from "./direct-seat.js";

/** Result frame buffers kept for reuse (one per submit that may be in flight). */
const MAX_SPARE_FRAME_BUFFERS = 4;
/** How long a result stays in Redis if the coordinator never reads it. */
const RESULT_TTL_SECONDS = 600;
/** Heartbeat period into the run's live-workers set. */
const HEARTBEAT_MS = 2000;
/** While Redis does not answer at start, say so this often. */
const REDIS_WAIT_LOG_MS = 10_000;
/**
 * A worker in a lane with no announcement for this long reads the current
 * version itself: an announcement can be missed (pub/sub keeps nothing for a
 * subscriber that is reconnecting), and a lane must end when its run does.
 */
const LANE_POLL_MS = 250;
/** How long a forced close, and the last words to Redis, may take. */
const FORCE_CLOSE_MS = 3000;
/** CLAIM_SHARD's answer when no version is current (Redis restarted empty). */
const NO_VERSION = -2;
/** Least time between two "cannot serve" refusals of one worker (see refusalTurn). */
const REFUSAL_PAUSE_MS = 1000;
/** Announced weights buffers per session (see SessionState.announcedBuffers). */
const WEIGHT_BUFFERS = 4;

/** Outcome of one job, for metrics. */
export type ShardOutcome = "ok" | "duplicate" | "stale" | "refused" | "error";

/** Callbacks for metrics; all optional. */
export interface WorkerObserver {
  onShard?(outcome: ShardOutcome, computeSeconds: number, bytesOut: number): void;
  /** Weights read from their key (a job or a lane that missed the announcement). */
  onWeightsFetch?(seconds: number, bytes: number): void;
  /** Weights received with their announcement. */
  onWeightsAnnounced?(bytes: number): void;
  onReady?(ready: boolean): void;
}

/** Settings of a worker process. */
export interface GradWorkerOptions {
  redisUrl: string;
  redisCa?: string;
  runId: string;
  /** Dataset directory (default: the bundled MNIST). */
  dataDir?: string;
  concurrency: number;
  workerId: string;
  log: Logger;
  observer?: WorkerObserver;
  /** BullMQ lock duration (ms): must exceed a shard's compute time. */
  lockDuration?: number;
  /** BullMQ stalled-job check period (ms). */
  stalledInterval?: number;
  /** Spans of direct steps (`--trace`). */
  trace?: Trace;
}

/** What the worker holds for one coordinator session. */
interface SessionState {
  spec: RunSpec;
  data: DataBundle;
  kernel: Kernel;
  perm?: { epoch: number; perm: Uint32Array };
  /** Weights by version, fetched or being fetched (null: not in Redis when asked). */
  weights: Map<number, Promise<Float32Array | null>>;
  /** Newest version known to be current (announced, or read from Redis). */
  latest: number;
  /**
   * Buffers that announced weights are copied into, reused in turn (no 50 KB
   * allocation per step). A shard computes synchronously, so no buffer
   * changes under a computation; a lane holds its version's weights across
   * claims, and a buffer is overwritten only WEIGHT_BUFFERS announcements
   * later: should the run have moved that far on meanwhile (the lane's
   * shards went out as shard jobs after a deadline), what the lane computes
   * is for a version that is no longer current, and the submit script drops
   * it as stale.
   */
  announcedBuffers: Float32Array[];
  nextBuffer: number;
  grad: Float32Array;
}

/** Refusal raised inside job processing; its reason goes onto the notices list. */
class Refusal extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** The work is for another session than the one published: a dead coordinator's leftover. */
class OtherSession extends Refusal {
  constructor(message: string) {
    super("spec_mismatch", message);
  }
}

/**
 * This worker cannot serve the published session at all (other data, a spec
 * it cannot take): found when loading the session, and true for all its work.
 * Only these refusals name the worker (see refuse), are paced (refusalTurn)
 * and are remembered for the session.
 */
class CannotServe extends Refusal {
  constructor(reason: "data_mismatch" | "spec_mismatch", message: string) {
    super(reason, message);
  }
}

/** Waits for `p` (its failure ignored), but no longer than `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

/** Whether a refusal means this worker cannot serve the run at all. */
function cannotServe(e: Refusal): boolean {
  return e instanceof CannotServe && CANNOT_SERVE_REASONS.has(e.reason);
}

/** A worker process's connection to one run's queue. */
export class GradWorker {
  private readonly keys: RunKeys;
  private readonly redis: Redis;
  private worker?: Worker;
  /** The connection BullMQ blocks on; BullMQ does not close connections it was given. */
  private workerConnection?: Redis;
  /** Subscribed to the run's version announcements (they carry the weights). */
  private subscriber?: Redis;
  /** BullMQ worker of the lanes queue, and the connection it blocks on. */
  private laneWorker?: Worker;
  private laneConnection?: Redis;
  /** Lanes waiting for the next announcement. */
  private readonly announcementWaiters = new Set<() => void>();
  /** The end of the last "cannot serve" refusal's pause (see refusalTurn). */
  private lastRefusal: Promise<void> = Promise.resolve();
  /** Pauses in progress (see sleep), cut short by close. */
  private readonly sleepers = new Set<() => void>();
  /** A session this worker found it cannot serve, and why: not loaded again. */
  private unservable?: { session: string; refusal: Refusal; spec: RunSpec };
  /** Ends the direct seats in progress (see sit), for close, by their session. */
  private readonly seatStops = new Map<() => void, string>();
  /** Result frame buffers free for the next job. */
  private readonly frameBuffers: Buffer[] = [];
  private session?: SessionState;
  private sessionLoading?: Promise<SessionState>;
  private heartbeat?: NodeJS.Timeout;
  private closing = false;
  private readonly datasets = new Map<string, Promise<DataBundle>>();
  /** Number of shards this worker completed (any outcome). */
  jobsDone = 0;

  /** Whether the worker's Redis connection is up (for `/readyz`). */
  get redisConnected(): boolean {
    return this.redis.status === "ready";
  }

  constructor(private readonly opts: GradWorkerOptions) {
    this.keys = runKeys(opts.runId);
    this.redis = connectRedis(opts.redisUrl, {
      role: "worker",
      caFile: opts.redisCa,
      name: `gf-worker-${opts.workerId}`,
    });
    this.redis.on("error", (e) => opts.log.warn({ err: e.message }, "redis connection error"));
  }

  /** Starts taking jobs. */
  async start(): Promise<void> {
    const o = this.opts;
    await this.waitForRedis();
    // Live from now on (the heartbeat), while the dataset loads: a coordinator
    // whose other workers all refuse the run waits for this one (see
    // ClusterExecutor.checkRefusingFleet).
    this.beat();
    this.heartbeat = setInterval(() => {
      this.beat();
      this.watchdog();
      void this.checkSeats();
    }, HEARTBEAT_MS);
    // Preload the default dataset so the first shard is not slowed by it.
    await this.dataset(null, null);
    this.subscriber = this.redis.duplicate();
    this.subscriber.on("error", (e) => o.log.debug({ err: e.message }, "redis subscriber connection error"));
    this.subscriber.on("messageBuffer", (_channel: Buffer, message: Buffer) => this.announced(message));
    await this.subscriber.subscribe(this.keys.versionChannel);
    this.workerConnection = this.redis.duplicate();
    this.worker = this.bullWorker(QUEUE_NAME, this.workerConnection, o.concurrency, "shard job", (job) =>
      this.process(job),
    );
    // One lane at a time: a lane computes whatever shards it can claim, so a
    // second lane in the same process would only take a seat another
    // process could use.
    this.laneConnection = this.redis.duplicate();
    this.laneWorker = this.bullWorker(LANES_QUEUE_NAME, this.laneConnection, 1, "lane job", (job) =>
      this.runLane(job),
    );
    o.observer?.onReady?.(true);
    o.log.info({ run: o.runId, concurrency: o.concurrency }, "worker ready");
  }

  /**
   * A BullMQ worker of this run's queue `queue`, blocking on `connection`.
   * Its name is the worker id, which BullMQ records on every job it takes
   * (processedBy): who holds which shard or lane.
   */
  private bullWorker(
    queue: string,
    connection: Redis,
    concurrency: number,
    what: string,
    processor: (job: Job<unknown>) => Promise<string>,
  ): Worker {
    const o = this.opts;
    const w = new Worker(queue, (job) => processor(job as Job<unknown>), {
      connection,
      prefix: this.keys.queuePrefix,
      name: o.workerId,
      concurrency,
      lockDuration: o.lockDuration ?? 30_000,
      stalledInterval: o.stalledInterval ?? 5_000,
      maxStalledCount: 5,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 100 },
    });
    w.on("error", (e) => o.log.warn({ err: e.message, queue }, "bullmq worker error"));
    w.on("failed", (job, e) => o.log.warn({ job: job?.id, err: e.message }, `${what} failed`));
    return w;
  }

  /**
   * Waits until Redis answers. Wrong credentials never fix themselves, so
   * they fail at once with a clear message (BullMQ would retry them forever);
   * an unreachable Redis is waited for, since a worker may start before it.
   */
  private async waitForRedis(): Promise<void> {
    for (;;) {
      try {
        await waitForRedis(this.redis, REDIS_WAIT_LOG_MS);
        return;
      } catch (e) {
        if (this.redis.status === "end" || /\b(WRONGPASS|NOAUTH|NOPERM)\b/.test((e as Error).message))
          throw e;
        this.opts.log.warn({ err: (e as Error).message }, "still waiting for Redis");
      }
    }
  }

  /**
   * BullMQ workers have been seen to stop taking jobs after their Redis
   * restarted (taskforcesh/bullmq issues 648, 2466, 2964): its main loop ends
   * on an error and is not restarted. Restart it ourselves.
   */
  private watchdog(): void {
    for (const w of [this.worker, this.laneWorker]) {
      if (!w || this.closing || w.isRunning() || w.closing) continue;
      this.opts.log.warn(
        `the BullMQ worker of queue ${w.name} stopped taking jobs (Redis restarted?); restarting it`,
      );
      w.run().catch((e) =>
        this.opts.log.warn({ err: (e as Error).message }, "restarting the BullMQ worker failed"),
      );
    }
  }

  /**
   * Graceful stop: finishes the shard in hand (and, in a lane, the shards it
   * claimed or reserved), then disconnects; bounded by `graceMs`.
   */
  async close(graceMs = 10_000): Promise<void> {
    this.closing = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.opts.observer?.onReady?.(false);
    // Graceful: BullMQ waits for the shard in hand. With Redis gone that wait
    // never ends (the result cannot be written), so it is bounded; the
    // coordinator re-enqueues a shard whose result never came.
    let timer: NodeJS.Timeout | undefined;
    this.wakeLanes();
    for (const wake of [...this.sleepers]) wake();
    for (const stop of [...this.seatStops.keys()]) stop();
    const graceful = Promise.all([this.worker?.close(), this.laneWorker?.close()]);
    const timedOut = await Promise.race([
      graceful.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.opts.log.warn(
        { graceMs },
        "could not finish the shards in hand in time (Redis unreachable, or the step that a reserved shard belongs to never started); closing anyway",
      );
      // A forced close has been seen to wait for ever too (a BullMQ worker
      // whose loop was restarted after Redis restarted): bounded as well.
      await within(Promise.all([this.worker?.close(true), this.laneWorker?.close(true)]), FORCE_CLOSE_MS);
    } else {
      // Bounded: this connection waits for Redis for ever (workers' role).
      await within(this.redis.zrem(this.keys.workers, this.opts.workerId), FORCE_CLOSE_MS);
    }
    this.workerConnection?.disconnect();
    this.laneConnection?.disconnect();
    this.subscriber?.disconnect();
    this.redis.disconnect();
  }

  /**
   * A seat is left when its session is no longer the published one (another
   * coordinator took the run while this seat's was frozen, say): else the
   * worker would wait on a coordinator that may never come back.
   */
  private async checkSeats(): Promise<void> {
    if (this.seatStops.size === 0) return;
    let current: string | undefined;
    try {
      const json = await this.redis.get(this.keys.spec);
      if (json === null) return; // Redis restarted empty: the coordinator publishes it again
      current = decodeRunSpec(json).session;
    } catch {
      return; // unreadable or unreachable now: no verdict
    }
    for (const [stop, session] of this.seatStops) {
      if (session === current) continue;
      this.opts.log.warn(
        { session, published: current },
        "leaving a seat: its session is no longer the run's",
      );
      this.seatStops.delete(stop);
      stop();
    }
  }

  private beat(): void {
    this.redis
      .multi()
      .zadd(this.keys.workers, Date.now(), this.opts.workerId)
      .pexpire(this.keys.workers, 60_000)
      .exec()
      .catch(() => {});
  }

  private async process(job: Job<unknown>): Promise<string> {
    const parsed = shardJobSchema.safeParse(job.data);
    if (!parsed.success) {
      // Not a job we can even attribute to a shard: log and drop it.
      const issue = parsed.error.issues[0];
      this.opts.log.error(
        { job: job.id, field: issue.path.join("."), why: issue.message },
        "refused invalid job data",
      );
      this.opts.observer?.onShard?.("refused", 0, 0);
      return "refused";
    }
    const j = parsed.data;
    try {
      const s = await this.sessionFor(j.session);
      this.checkPlan(s.spec, j);
      const params = await this.weights(s, j.version);
      if (!params) {
        // The coordinator deletes a version's weights once the run is two
        // versions past it: then the job is stale, and not worth a word.
        if ((await this.redis.get(this.keys.version)) !== String(j.version)) {
          this.opts.observer?.onShard?.("stale", 0, 0);
          return "stale";
        }
        throw new Refusal("missing_weights", `weights version ${j.version} are missing from Redis`);
      }
      // On BullMQ's connection and not awaited: see the module comment.
      this.computeAndSubmit(s, j, params, this.workerConnection!, job.id);
      return "submitted";
    } catch (e) {
      if (e instanceof Refusal) {
        if (cannotServe(e)) await this.refusalTurn();
        await this.refuse(e, j.version, j.shard, job.id, j.step);
        return "refused";
      }
      await this.failed(job.id, j, e);
      return "error";
    }
  }

  /**
   * Computes shard `j` on `params` and sends its result frame through the
   * submit script on `conn`, without waiting for the reply (a failed submit
   * is reported like a failed computation). Synchronous up to the send, so
   * that s.grad, the next shard's output buffer, is free when it returns.
   */
  private computeAndSubmit(
    s: SessionState,
    j: ShardJob,
    params: Float32Array,
    conn: Redis,
    jobId: string | undefined,
  ): void {
    const perm = this.permutation(s, j.epoch);
    const t0 = performance.now();
    const { cost, count } = s.kernel.gradSum(params, s.data.train, perm, j.start, j.end, s.grad);
    const seconds = (performance.now() - t0) / 1000;
    const frame: ResultFrame = {
      session: j.session,
      version: j.version,
      shard: j.shard,
      workerId: this.opts.workerId,
      cost,
      count,
      computeSeconds: seconds,
      grad: s.grad,
    };
    // A frame buffer is reused once its submit has been answered (until
    // then ioredis may still need it, to send the command again after a
    // reconnect).
    const size = resultFrameSize(frame);
    let buffer = this.frameBuffers.pop();
    if (!buffer || buffer.length < size) buffer = Buffer.allocUnsafe(size);
    const payload = encodeResultInto(frame, buffer);
    const submitted = conn.eval(
      SUBMIT_RESULT,
      4,
      this.keys.result(j.version, j.shard),
      this.keys.version,
      this.keys.notices,
      this.keys.counters,
      String(j.version),
      String(j.shard),
      payload,
      String(RESULT_TTL_SECONDS),
    ) as Promise<"ok" | "duplicate" | "stale">;
    submitted.then(
      (outcome) => {
        this.jobsDone++;
        this.opts.observer?.onShard?.(outcome, seconds, payload.length);
        this.releaseFrameBuffer(buffer);
      },
      (e: unknown) => {
        this.releaseFrameBuffer(buffer);
        return this.failed(jobId, j, e);
      },
    );
  }

  /** Says why a shard is refused: in the log, on the notices list and in the counters. */
  private async refuse(
    e: Refusal,
    version: number,
    shard: number,
    jobId: string | undefined,
    step?: number,
  ): Promise<void> {
    this.opts.log.error({ job: jobId, reason: e.reason, version, step, shard }, e.message);
    // Naming the worker tells the coordinator this worker cannot serve the
    // run at all (it stops a run that every live worker refuses so).
    const who = cannotServe(e) ? this.opts.workerId : undefined;
    await this.redis.rpush(this.keys.notices, refusedNotice(version, shard, e.reason, who)).catch(() => {});
    await this.redis.hincrby(this.keys.counters, `refused_${e.reason}`, 1).catch(() => {});
    this.opts.observer?.onShard?.("refused", 0, 0);
  }

  /**
   * Waits for this worker's turn to send a "cannot serve" refusal: at most
   * one per REFUSAL_PAUSE_MS, whatever its concurrency and both queues. The
   * coordinator enqueues a refused shard again at once; a worker that took it
   * straight back (or had other slots free) would refuse it again and again
   * in milliseconds and stop, for a refusal count, a run that a good worker
   * of the fleet could serve. The job waiting here keeps its slot (with
   * `--concurrency` N, up to N jobs may wait, each refused in its turn, or
   * recomputed elsewhere at their deadline). The coordinator stops a run that
   * every live worker refuses (see ClusterExecutor.checkRefusingFleet).
   */
  private refusalTurn(): Promise<void> {
    const mine = this.lastRefusal;
    this.lastRefusal = mine.then(() => this.sleep(REFUSAL_PAUSE_MS));
    return mine;
  }

  /** Resolves after `ms`, or at once when the worker closes. */
  private sleep(ms: number): Promise<void> {
    if (this.closing) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /**
   * A bug, a broken kernel or a failed submit: tell the coordinator at once
   * (it counts the refusal and enqueues the shard again, and stops the run if
   * the shard keeps failing) instead of leaving it to the deadline.
   */
  private async failed(jobId: string | undefined, j: ShardJob, e: unknown): Promise<void> {
    this.opts.log.error(
      { job: jobId, step: j.step, shard: j.shard, err: (e as Error).stack },
      "shard computation failed",
    );
    await this.redis
      .rpush(this.keys.notices, refusedNotice(j.version, j.shard, "worker_error"))
      .catch(() => {});
    await this.redis.hincrby(this.keys.counters, "refused_worker_error", 1).catch(() => {});
    this.opts.observer?.onShard?.("error", 0, 0);
  }

  /**
   * Runs a lane job: for each weights version from the lane's start (or the
   * current one, if the run is already past it) to its end, claims and
   * computes shards until the version has none left. Ends early when the
   * worker closes, the run ends or another session takes over.
   */
  private async runLane(job: Job<unknown>): Promise<string> {
    const parsed = laneJobSchema.safeParse(job.data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      this.opts.log.error(
        { job: job.id, field: issue.path.join("."), why: issue.message },
        "refused invalid lane job data",
      );
      return "refused";
    }
    const lane = parsed.data;
    let s: SessionState;
    try {
      s = await this.sessionFor(lane.session);
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      // A lane of a session that is over: nothing to say.
      if (e instanceof OtherSession) return "stale";
      if (cannotServe(e)) await this.refusalTurn();
      const known = this.unservable?.session === lane.session ? this.unservable.spec : undefined;
      if (known?.direct) {
        // Direct steps: no shard to claim; say it to the coordinator itself.
        this.opts.log.error({ reason: e.reason }, e.message);
        await reportRefusal(known, this.opts.workerId, e.reason, e.message);
        this.opts.observer?.onShard?.("refused", 0, 0);
        return "refused";
      }
      await this.refuseLane(e);
      return "refused";
    }
    if (s.spec.direct) return this.sit(s);
    const c = s.spec.config;
    const versions = c.epochs * stepsPerEpoch(s.spec.data.trainN, c.batch);
    if (lane.to > versions) {
      this.opts.log.error(
        { job: job.id, from: lane.from, to: lane.to, versions },
        "refused a lane outside the run's plan",
      );
      return "refused";
    }
    let shards = 0;
    // A claim on the next version's first shard, made as soon as this worker
    // has done its part of a step (see CLAIM_SHARD).
    let reserved: { version: number; claim: Promise<number> } | undefined;
    // From the current version on, whatever the lane's range: a worker that
    // takes the next range's lane early (the lanes of the current range were
    // used up by workers that left) works at once instead of waiting.
    for (let want = 0; ; ) {
      const v = await this.nextVersion(s, want, lane, reserved?.version === want);
      if (v === undefined) break;
      const first = reserved?.version === v ? reserved.claim : undefined;
      const work = await this.workVersion(s, v, first, job.id);
      shards += work.computed;
      reserved = undefined;
      if (work.noVersion) {
        // Redis lost the run's keys (restarted empty): the coordinator
        // publishes this version again; claim it then, rather than move on
        // to a version that waits for this one. If the session's spec is
        // not published again, the lane ends (the coordinator is gone).
        await this.nextAnnouncement(LANE_POLL_MS);
        const spec = await this.redis.get(this.keys.spec);
        if (spec === null || !spec.includes(`"session":"${s.spec.session}"`)) {
          await this.nextAnnouncement(LANE_POLL_MS * 4);
          const again = await this.redis.get(this.keys.spec);
          if (again === null || !again.includes(`"session":"${s.spec.session}"`)) break;
        }
        want = v;
        continue;
      }
      if (!this.closing && v + 1 < lane.to) {
        // A failed claim is a claim not made; the step's deadline covers
        // the case where it was made and its reply lost.
        const claim = this.claim(v + 1).catch((e: unknown) => {
          this.opts.log.warn({ version: v + 1, err: (e as Error).message }, "could not reserve a shard");
          return -1;
        });
        reserved = { version: v + 1, claim };
      }
      want = v + 1;
    }
    return `lane done: ${shards} shard(s)`;
  }

  /**
   * A seat of a direct-dispatch session: serve its steps over the
   * coordinator's data port until the run ends or this worker closes.
   */
  private async sit(s: SessionState): Promise<string> {
    if (this.closing) return "closing";
    let stop: (() => void) | undefined;
    const end = await serveSeat(
      { ...s, permutation: (epoch) => this.permutation(s, epoch) },
      {
        workerId: this.opts.workerId,
        log: this.opts.log,
        trace: this.opts.trace,
        onRange: (seconds, bytes) => {
          this.jobsDone++;
          this.opts.observer?.onShard?.("ok", seconds, bytes);
        },
        onStop: (f) => {
          stop = f;
          this.seatStops.set(f, s.spec.session);
        },
      },
    );
    if (stop) this.seatStops.delete(stop);
    // Not reachable: give the seat back after a pause rather than spin on it.
    if (end === "unreachable") await this.sleep(REFUSAL_PAUSE_MS);
    return `seat ended: ${end}`;
  }

  /**
   * The next version for a lane to work on: `want`, or a later one if the
   * run is already past it; waits for its announcement. Undefined when the
   * lane is over (its range ends, the worker closes, the run ended or another
   * session took over). A worker that holds a claim on `want` (`reserved`)
   * computes it even when closing: else the step would wait for a deadline.
   */
  private async nextVersion(
    s: SessionState,
    want: number,
    lane: LaneJob,
    reserved: boolean,
  ): Promise<number | undefined> {
    // A lane just taken reads the current version at once: the step it
    // joins may have been announced before it subscribed.
    let ask = true;
    for (;;) {
      if ((this.closing && !reserved) || this.session !== s) return undefined;
      const v = Math.max(want, s.latest);
      if (v >= lane.to) return undefined;
      if (s.latest >= v) return v;
      if (ask) {
        const [cur, spec] = await this.redis.mget(this.keys.version, this.keys.spec);
        // The run is over, another session took over, or Redis lost the
        // run's keys: the lane ends (after a Redis restart the coordinator
        // publishes everything again, lanes included).
        if (spec === null || !spec.includes(`"session":"${s.spec.session}"`)) return undefined;
        const n = Number(cur);
        if (cur !== null && Number.isSafeInteger(n) && n > s.latest) s.latest = n;
        if (s.latest >= v) continue;
      }
      ask = !(await this.nextAnnouncement(LANE_POLL_MS));
    }
  }

  /** Resolves true at the next weights announcement, false after `ms`. */
  private nextAnnouncement(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.announcementWaiters.delete(wake);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.announcementWaiters.delete(wake);
        resolve(false);
      }, ms);
      this.announcementWaiters.add(wake);
    });
  }

  private wakeLanes(): void {
    for (const wake of [...this.announcementWaiters]) wake();
  }

  /**
   * Claims and computes shards of version `v` until none is left; returns
   * how many it computed. `first` is a claim made ahead (a reservation). A
   * shard's next claim is sent before the shard computes, so its reply is
   * there when the shard is done: one claim ahead, never more, so that
   * workers share a step evenly.
   */
  private async workVersion(
    s: SessionState,
    v: number,
    first: Promise<number> | undefined,
    jobId: string | undefined,
  ): Promise<{ computed: number; noVersion?: boolean }> {
    const c = s.spec.config;
    const perEpoch = stepsPerEpoch(s.spec.data.trainN, c.batch);
    const epoch = Math.floor(v / perEpoch);
    const step = v % perEpoch;
    if (epoch >= c.epochs) return { computed: 0 };
    const ranges = shardRanges(s.spec.data.trainN, c.batch, c.shards, step);
    let params: Float32Array | null;
    try {
      params = await this.weights(s, v);
    } catch (e) {
      // Weights of the wrong size under their key: say so, and leave the
      // shards (a reserved one included) to the step's deadline, which
      // sends them out as shard jobs.
      this.opts.log.error(
        { version: v, err: (e as Error).message },
        "cannot use the weights of this version",
      );
      return { computed: 0 };
    }
    if (!params) return { computed: 0 }; // gone from Redis: the run moved on
    let done = 0;
    let next = first ?? this.claim(v);
    for (;;) {
      const k = await next;
      if (k === NO_VERSION) return { computed: done, noVersion: true };
      if (k < 0 || k >= ranges.length) return { computed: done };
      // A closing worker computes what it claimed, and claims no more.
      next = this.closing ? Promise.resolve(-1) : this.claim(v);
      // Awaited at the top of the loop; until then a failure (Redis gone)
      // must not count as an unhandled rejection, which would end the process.
      next.catch(() => {});
      const r = ranges[k];
      const j: ShardJob = { session: s.spec.session, version: v, epoch, step, ...r };
      try {
        this.computeAndSubmit(s, j, params, this.redis, jobId);
      } catch (e) {
        await this.failed(jobId, j, e);
      }
      done++;
    }
  }

  /**
   * Claims the next shard of version v (see CLAIM_SHARD): its index, -1 when
   * v is not current, NO_VERSION when no version is.
   */
  private async claim(v: number): Promise<number> {
    const n = await this.redis.eval(
      CLAIM_SHARD,
      2,
      this.keys.claim(v),
      this.keys.version,
      String(v),
      String(RESULT_TTL_SECONDS),
      this.opts.workerId,
    );
    return Number(n);
  }

  /**
   * This worker cannot serve the run (its data or spec do not match): claim a
   * shard of the current step and refuse it, so that the coordinator hears of
   * it at once (and sends the shard out as a shard job) and, if no worker can
   * serve the run, stops it with the reason. The lane is used up; the
   * coordinator adds lanes again for a stalled step.
   */
  private async refuseLane(e: Refusal): Promise<void> {
    const [cur, json] = await this.redis.mget(this.keys.version, this.keys.spec);
    const v = Number(cur);
    if (cur === null || !Number.isSafeInteger(v)) {
      this.opts.log.error({ reason: e.reason }, e.message);
      return;
    }
    // Claim k is the step's k-th non-empty shard, which is shard k (empty
    // shards come last, see shardRanges); the spec says how many there are.
    let count = Number.POSITIVE_INFINITY;
    try {
      const spec = decodeRunSpec(json ?? "");
      const c = spec.config;
      count = shardRanges(
        spec.data.trainN,
        c.batch,
        c.shards,
        v % stepsPerEpoch(spec.data.trainN, c.batch),
      ).length;
    } catch {
      // An unreadable spec: any claim may name a shard.
    }
    const k = await this.claim(v);
    if (k < 0 || k >= count) {
      this.opts.log.error({ reason: e.reason, version: v }, e.message);
      return;
    }
    await this.refuse(e, v, k, undefined);
  }

  /** The session's spec, dataset and kernel, loaded once per session. */
  private async sessionFor(session: string): Promise<SessionState> {
    if (this.session?.spec.session === session) return this.session;
    if (this.unservable?.session === session) throw this.unservable.refusal;
    if (!this.sessionLoading) {
      this.sessionLoading = this.loadSession().finally(() => {
        this.sessionLoading = undefined;
      });
    }
    const s = await this.sessionLoading;
    if (s.spec.session !== session) {
      throw new OtherSession(`job is for session ${session}, the published run spec is ${s.spec.session}`);
    }
    return s;
  }

  private async loadSession(): Promise<SessionState> {
    const json = await this.redis.get(this.keys.spec);
    if (json === null) throw new Refusal("missing_spec", "the run spec is missing from Redis");
    let spec: RunSpec;
    try {
      spec = decodeRunSpec(json);
    } catch (e) {
      throw new CannotServe("spec_mismatch", (e as Error).message);
    }
    if (spec.runId !== this.opts.runId) {
      throw new CannotServe(
        "spec_mismatch",
        `the spec is for run ${spec.runId}, this worker serves ${this.opts.runId}`,
      );
    }
    // Work of an older session made us look: the published session may be
    // the one already loaded, whose caches (weights, lanes' progress) stay.
    if (this.session?.spec.session === spec.session) return this.session;
    try {
      return await this.loadSessionOf(spec);
    } catch (e) {
      // Data and spec do not change under a session: remember the verdict
      // instead of loading the dataset again for every job.
      if (e instanceof CannotServe) this.unservable = { session: spec.session, refusal: e, spec };
      throw e;
    }
  }

  /** Loads the dataset and kernel of a parsed run spec; refuses a spec this worker cannot serve. */
  private async loadSessionOf(spec: RunSpec): Promise<SessionState> {
    let data: DataBundle;
    try {
      data = await this.dataset(spec.data.trainLimit, spec.data.testLimit);
    } catch (e) {
      // This worker's data cannot give what the run needs (too few
      // examples for its limits, unreadable files): it cannot serve the run.
      if (e instanceof DataError) throw new CannotServe("data_mismatch", e.message);
      throw e;
    }
    if (data.fingerprint !== spec.data.fingerprint) {
      throw new CannotServe(
        "data_mismatch",
        `dataset ${data.source} has fingerprint ${data.fingerprint.slice(0, 12)}…, the run needs ` +
          `${spec.data.fingerprint.slice(0, 12)}… (same files and --train-limit/--test-limit on every process?)`,
      );
    }
    if (spec.config.spec.layers[0] !== data.train.pixels) {
      throw new CannotServe(
        "spec_mismatch",
        `the model takes ${spec.config.spec.layers[0]} inputs, the data has ${data.train.pixels}`,
      );
    }
    const kernel = makeKernel(spec.config.kernel, spec.config.spec);
    this.session = {
      spec,
      data,
      kernel,
      weights: new Map(),
      latest: -1,
      announcedBuffers: Array.from({ length: WEIGHT_BUFFERS }, () => new Float32Array(spec.paramCount)),
      nextBuffer: 0,
      grad: new Float32Array(spec.paramCount),
    };
    this.opts.log.info({ session: spec.session, config: spec.config }, "joined run session");
    return this.session;
  }

  private dataset(trainLimit: number | null, testLimit: number | null): Promise<DataBundle> {
    const key = `${trainLimit}/${testLimit}`;
    let p = this.datasets.get(key);
    if (!p) {
      p = loadDataset({
        dir: this.opts.dataDir,
        trainLimit: trainLimit ?? undefined,
        testLimit: testLimit ?? undefined,
      });
      // Keep at most the default and the latest limited variant.
      for (const k of this.datasets.keys()) if (k !== "null/null") this.datasets.delete(k);
      this.datasets.set(key, p);
      p.catch(() => this.datasets.delete(key));
    }
    return p;
  }

  /** The job must be exactly a shard of the run's plan. */
  private checkPlan(spec: RunSpec, j: ShardJob): void {
    const c = spec.config;
    const ranges = shardRanges(spec.data.trainN, c.batch, c.shards, j.step);
    const r = ranges.find((x) => x.shard === j.shard);
    if (!r || r.start !== j.start || r.end !== j.end || j.epoch >= c.epochs) {
      throw new Refusal(
        "bad_job",
        `job epoch ${j.epoch} step ${j.step} shard ${j.shard} [${j.start}, ${j.end}) is not in the run's shard plan`,
      );
    }
    // Weights version v are the weights after v updates, one per step: a job
    // naming another step's samples under version v would have its gradient
    // accepted as the result of (v, shard), computed on the wrong samples.
    const version = j.epoch * stepsPerEpoch(spec.data.trainN, c.batch) + j.step;
    if (j.version !== version) {
      throw new Refusal(
        "bad_job",
        `job for weights version ${j.version} names epoch ${j.epoch} step ${j.step}, which is version ${version}`,
      );
    }
  }

  private releaseFrameBuffer(b: Buffer): void {
    if (this.frameBuffers.length < MAX_SPARE_FRAME_BUFFERS) this.frameBuffers.push(b);
  }

  /**
   * A version was announced with its weights: keep them for the jobs and
   * lanes that need them, and wake the lanes waiting for it. An announcement
   * of another session, or of the wrong size, is ignored (a job that needs
   * those weights reads them from their key, and refuses them there).
   */
  private announced(message: Buffer): void {
    const s = this.session;
    const a = parseWeightsAnnouncement(message);
    if (!s || !a || a.session !== s.spec.session) return;
    if (a.bytes.byteLength !== s.spec.paramCount * 4) {
      this.opts.log.error(
        { version: a.version, bytes: a.bytes.byteLength, expected: s.spec.paramCount * 4 },
        "ignored a weights announcement of the wrong size",
      );
      return;
    }
    if (!s.weights.has(a.version)) {
      const params = s.announcedBuffers[s.nextBuffer];
      s.nextBuffer = (s.nextBuffer + 1) % s.announcedBuffers.length;
      new Uint8Array(params.buffer).set(a.bytes);
      this.keepWeights(s, a.version, Promise.resolve(params));
      this.opts.observer?.onWeightsAnnounced?.(a.bytes.byteLength);
    }
    if (a.version > s.latest) s.latest = a.version;
    this.wakeLanes();
  }

  /** Weights version `version` (null when Redis has none), fetched once per version. */
  private weights(s: SessionState, version: number): Promise<Float32Array | null> {
    const p = s.weights.get(version);
    if (p) return p;
    return this.keepWeights(s, version, this.fetchWeights(s, version));
  }

  /** Caches the weights of `version` (fetched, being fetched or announced). */
  private keepWeights(
    s: SessionState,
    version: number,
    p: Promise<Float32Array | null>,
  ): Promise<Float32Array | null> {
    s.weights.set(version, p);
    // Keep the newest two versions: the current step's and possibly the next.
    for (const v of s.weights.keys()) if (v < version - 1) s.weights.delete(v);
    // A miss or a failure is not kept: the weights may be published (again) later.
    const forget = () => {
      if (s.weights.get(version) === p) s.weights.delete(version);
    };
    p.then((w) => w || forget(), forget);
    return p;
  }

  private async fetchWeights(s: SessionState, version: number): Promise<Float32Array | null> {
    const t0 = performance.now();
    const buf = await this.redis.getBuffer(this.keys.weights(version));
    if (buf === null) return null;
    if (buf.length !== s.spec.paramCount * 4) {
      throw new Refusal(
        "spec_mismatch",
        `weights version ${version} have ${buf.length} bytes, expected ${s.spec.paramCount * 4}`,
      );
    }
    const params = new Float32Array(s.spec.paramCount);
    new Uint8Array(params.buffer).set(buf);
    this.opts.observer?.onWeightsFetch?.((performance.now() - t0) / 1000, buf.length);
    return params;
  }

  private permutation(s: SessionState, epoch: number): Uint32Array {
    if (s.perm?.epoch !== epoch) {
      s.perm = { epoch, perm: epochPermutation(s.spec.data.trainN, s.spec.config.seed, epoch) };
    }
    return s.perm.perm;
  }
}
