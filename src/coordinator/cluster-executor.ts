/**
 * The cluster GradientExecutor: computes a step's shards on worker
 * processes through a BullMQ queue on Redis.
 *
 * Per step: the weights of the step's version are stored as bytes BEFORE
 * the jobs that need them are enqueued; one job per shard is enqueued; the
 * coordinator then blocks on the run's notices list (no polling) and reads
 * each shard's result by (version, shard) — never from BullMQ return values
 * or events, which may be lost or repeated. Results are validated; a bad one
 * is counted by reason, deleted and its shard enqueued again. A shard whose
 * job was picked up but has no result by the deadline is enqueued again too
 * (first valid result wins, the late one is dropped as a duplicate).
 */
import { randomBytes } from "node:crypto";
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { DataBundle } from "../core/dataset.js";
import type { RunConfig } from "../core/run-config.js";
import { type GradientExecutor, type ShardResult, StepAbortedError, type StepRequest } from "../core/trainer.js";
import type { ShardRange } from "../core/plan.js";
import { QUEUE_NAME, type RunKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import {
  decodeResult,
  parseNotice,
  ResultError,
  type ResultFrame,
  type ShardJob,
  shardJobId,
} from "../shared/messages.js";
import { RUN_SPEC_FORMAT, type RunSpec } from "../shared/run-spec.js";
import { ClusterStats } from "./cluster-stats.js";

/** How many times one shard may be refused or rejected before the run stops. */
const MAX_REJECTIONS_PER_SHARD = 6;
/** Longest single BLPOP wait (s): bounds how late a deadline is noticed. */
const MAX_WAIT_SECONDS = 0.5;

/** Settings of the cluster executor. */
export interface ClusterExecutorOptions {
  runId: string;
  keys: RunKeys;
  /** Producer connection (fail fast) for commands and the queue. */
  redis: Redis;
  /** A second connection, used only for the blocking BLPOP on notices. */
  blocking: Redis;
  config: RunConfig;
  data: DataBundle;
  trainLimit: number | null;
  testLimit: number | null;
  log: Logger;
  /** Seconds a picked-up shard may take before it is enqueued again. */
  stepTimeoutSeconds: number;
  stats?: ClusterStats;
}

interface PendingShard {
  range: ShardRange;
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
  private publishedVersion = -1;
  private lastCounters = { duplicate: 0, stale: 0 };
  /** When a stop was requested, the time after which an unfinished step is given up. */
  private abandonAt = Number.POSITIVE_INFINITY;
  private readonly counterBase = { duplicate: 0, stale: 0 };
  private publishedParams?: Float32Array;

  constructor(private readonly o: ClusterExecutorOptions) {
    this.stats = o.stats ?? new ClusterStats();
    this.spec = {
      format: RUN_SPEC_FORMAT,
      runId: o.runId,
      session: randomBytes(8).toString("hex"),
      config: o.config,
      data: {
        fingerprint: o.data.fingerprint,
        trainLimit: o.trainLimit,
        testLimit: o.testLimit,
        trainN: o.data.train.n,
      },
      paramCount: layoutSize(o.config),
    };
    this.queue = new Queue(QUEUE_NAME, {
      connection: o.redis,
      prefix: o.keys.queuePrefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: 100, attempts: 1 },
    });
    this.queue.on("error", (e) => o.log.warn({ err: e.message }, "bullmq queue error"));
  }

  /** Publishes the run spec and clears what an earlier session of this run id left. */
  async open(): Promise<void> {
    const { redis, keys } = this.o;
    // An earlier session of this run id (a crashed coordinator being resumed)
    // may have left jobs, weights and first-writer-wins results for the very
    // versions this session is about to compute: clear them all.
    await this.queue.drain(true);
    await deleteRunKeys(redis, keys.allResults);
    await deleteRunKeys(redis, keys.allWeights);
    await redis.del(keys.notices, keys.counters, keys.version);
    await redis.set(keys.spec, JSON.stringify(this.spec));
  }

  /** The BullMQ queue of this run (for metrics: job counts by state). */
  get bullQueue(): Queue {
    return this.queue;
  }

  async computeStep(req: StepRequest): Promise<{ results: ShardResult[]; computeSeconds: number }> {
    const timeoutMs = this.o.stepTimeoutSeconds * 1000;
    const pending = new Map<number, PendingShard>();
    for (const range of req.shards) {
      const job: ShardJob = {
        session: this.spec.session,
        version: req.version,
        epoch: req.epoch,
        step: req.step,
        shard: range.shard,
        start: range.start,
        end: range.end,
      };
      pending.set(range.shard, { range, job, attempt: 0, rejections: 0, deadline: Date.now() + timeoutMs, nonFinite: false });
    }
    const done = new Map<number, ResultFrame>();
    // A lost connection (Redis restarted, network blip) is not an error of
    // the run: wait for Redis, publish again what it may have lost, enqueue
    // the shards still missing and carry on. Accepted results stay accepted;
    // first-writer-wins on (version, shard) keeps late copies out.
    for (let enqueued = false; ; ) {
      try {
        await this.publishWeights(req.version, req.params);
        if (!enqueued) await this.enqueue([...pending.values()]);
        enqueued = true;
        await this.collect(req, pending, done, timeoutMs);
        break;
      } catch (e) {
        if (!isConnectionError(e)) throw e;
        this.o.log.warn({ err: (e as Error).message }, "lost the connection to Redis; waiting for it");
        await this.waitForRedis();
        await this.republish(req);
        for (const p of pending.values()) p.attempt++;
        this.stats.retriedShards += pending.size;
        enqueued = false;
      }
    }
    let computeSeconds = 0;
    const results = req.shards.map((r) => {
      const f = done.get(r.shard)!;
      computeSeconds = Math.max(computeSeconds, f.computeSeconds);
      return { shard: r.shard, grad: f.grad, cost: f.cost, count: f.count };
    });
    await this.readCounters();
    return { results, computeSeconds };
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
    const { keys, blocking, log } = this.o;
    while (pending.size > 0) {
      if (Date.now() >= this.abandonAt) {
        throw new StepAbortedError(`gave up step ${req.step + 1} of epoch ${req.epoch + 1}: ${pending.size} shard(s) missing`);
      }
      const wait = Math.max(0.01, Math.min(MAX_WAIT_SECONDS, (minDeadline(pending) - Date.now()) / 1000));
      const notice = await blocking.blpop(keys.notices, wait);
      if (notice) {
        const n = parseNotice(notice[1]);
        const p = n && n.version === req.version ? pending.get(n.shard) : undefined;
        if (!n || !p) {
          log.debug({ notice: notice[1] }, "ignored notice for another step or shard");
          continue;
        }
        if (n.kind === "refused") {
          this.stats.countRejected(`refused_${n.reason ?? "unknown"}`);
          if (n.reason === "missing_spec" || n.reason === "missing_weights") await this.republish(req);
          await this.reject(p, n.reason ?? "refused", pending);
          continue;
        }
        const frame = await this.readResult(p);
        if (frame) {
          pending.delete(p.range.shard);
          done.set(p.range.shard, frame);
          this.stats.workersSeen.add(frame.workerId);
        } else {
          await this.reject(p, p.lastReason ?? "rejected", pending);
        }
      }
      await this.checkDeadlines(pending, timeoutMs);
    }
  }

  /**
   * Duplicate and stale results are counted by the workers' submit script
   * in Redis; a Redis that restarted empty starts them from zero again, so
   * what was counted before is kept as a base.
   */
  private async readCounters(): Promise<void> {
    const c = await this.o.redis.hgetall(this.o.keys.counters).catch(() => undefined);
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
    const m = redis.multi().set(keys.weights(version), bytes, "EX", 86_400).set(keys.version, String(version));
    if (version >= 2) m.del(keys.weights(version - 2));
    if (version >= 1) for (let s = 0; s < this.o.config.shards; s++) m.del(keys.result(version - 1, s));
    m.publish(keys.versionChannel, String(version));
    await m.exec();
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

  private async enqueue(ps: PendingShard[]): Promise<void> {
    const now = Date.now();
    for (const p of ps) p.deadline = now + this.o.stepTimeoutSeconds * 1000;
    await this.queue.addBulk(
      ps.map((p) => ({ name: "shard", data: p.job, opts: { jobId: shardJobId(p.job, p.attempt) } })),
    );
  }

  /** Reads and validates a shard's result; undefined (with p.lastReason set) when refused. */
  private async readResult(p: PendingShard): Promise<ResultFrame | undefined> {
    const { keys, redis, log } = this.o;
    const key = keys.result(p.job.version, p.job.shard);
    const bytes = await redis.getBuffer(key);
    if (!bytes) {
      p.lastReason = "missing_result";
      return undefined;
    }
    let frame: ResultFrame;
    try {
      frame = decodeResult(bytes, this.spec.paramCount);
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
      log.warn({ step: p.job.step, shard: p.job.shard, reason, err: (e as Error).message }, "refused a result");
      p.lastReason = reason;
      await redis.del(key);
      return undefined;
    }
    const expected = p.range.end - p.range.start;
    if (frame.session !== this.spec.session || frame.version !== p.job.version || frame.shard !== p.job.shard) {
      p.lastReason = "spec_mismatch";
    } else if (frame.count !== expected) {
      p.lastReason = "wrong_shard";
    } else {
      return frame;
    }
    this.stats.countRejected(p.lastReason);
    log.warn({ step: p.job.step, shard: p.job.shard, reason: p.lastReason, worker: frame.workerId }, "refused a result");
    await redis.del(key);
    return undefined;
  }

  private async reject(p: PendingShard, reason: string, pending: Map<number, PendingShard>): Promise<void> {
    p.rejections++;
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

  /** Re-enqueues shards whose job was taken but produced nothing in time. */
  private async checkDeadlines(pending: Map<number, PendingShard>, timeoutMs: number): Promise<void> {
    const now = Date.now();
    for (const p of pending.values()) {
      if (now < p.deadline) continue;
      const state = await this.queue.getJobState(shardJobId(p.job, p.attempt)).catch(() => "unknown");
      if (state === "waiting" || state === "prioritized" || state === "delayed") {
        // Nobody has picked it up yet (no free worker): waiting longer is all we can do.
        p.deadline = now + timeoutMs;
        this.o.log.warn({ step: p.job.step, shard: p.job.shard }, "shard still waiting for a free worker");
        continue;
      }
      this.o.log.warn({ step: p.job.step, shard: p.job.shard, state }, "shard deadline passed; enqueueing it again");
      p.attempt++;
      this.stats.retriedShards++;
      await this.enqueue([p]);
    }
  }

  /** Closes the queue; with `cleanup`, deletes every key of the run. */
  async close(cleanup: boolean): Promise<void> {
    const { keys, redis } = this.o;
    if (cleanup) {
      await this.queue.obliterate({ force: true }).catch(() => {});
      await deleteRunKeys(redis, keys.all).catch(() => {});
    }
    await this.queue.close();
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
  return /Connection is closed|Stream isn't writeable|max retries per request|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|LOADING|Connection timeout|Socket closed/i.test(
    msg,
  );
}

function minDeadline(pending: Map<number, PendingShard>): number {
  let m = Number.POSITIVE_INFINITY;
  for (const p of pending.values()) m = Math.min(m, p.deadline);
  return m;
}

function layoutSize(cfg: RunConfig): number {
  let n = 0;
  const l = cfg.spec.layers;
  for (let i = 0; i + 1 < l.length; i++) n += l[i] * l[i + 1] + l[i + 1];
  return n;
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
