/**
 * Worker processes for fault tests: start real `gradfleet worker` processes
 * of one run, find one in the middle of a shard, and replace the ones the
 * test kills.
 */
import { readFileSync } from "node:fs";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { shardRanges, stepsPerEpoch } from "../../src/core/plan.js";
import { QUEUE_NAME, type RunKeys, runKeys } from "../../src/shared/keys.js";
import type { ShardJob } from "../../src/shared/messages.js";
import { decodeRunSpec } from "../../src/shared/run-spec.js";
import { type CliProcess, startCli, stopCli, waitFor } from "./cli.js";

/**
 * The scheduler state of a process's main thread (`R` running or runnable,
 * `S` sleeping, `T` stopped, ...), from /proc; undefined where /proc is missing.
 */
export function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/**
 * Whether a worker process is computing: its main thread is running (or
 * runnable) now and 5 ms later. A worker waiting on Redis sleeps. True where
 * /proc is missing.
 */
export async function computing(pid: number): Promise<boolean> {
  const first = procState(pid);
  if (first === undefined) return process.platform !== "linux";
  if (first !== "R") return false;
  await new Promise((r) => setTimeout(r, 5));
  return procState(pid) === "R";
}

/** A worker caught holding a shard (a job, or a claim in a lane) whose result is not written yet. */
export interface BusyWorker {
  worker: CliProcess;
  version: number;
  shard: number;
}

/** Real worker processes of one run, replaced as the test kills them. */
export class Fleet {
  readonly live: CliProcess[] = [];
  readonly all: CliProcess[] = [];
  readonly client: Redis;
  readonly queue: Queue;
  readonly keys: RunKeys;
  private readonly ids = new Map<string, CliProcess>();

  constructor(
    readonly redisUrl: string,
    readonly runId: string,
    readonly extraArgs: string[] = [],
    /** How to start a process (a test file's Tracked.start, so afterAll can kill leftovers). */
    private readonly start: (args: string[]) => CliProcess = startCli,
  ) {
    this.keys = runKeys(runId);
    this.client = new Redis(redisUrl);
    this.queue = new Queue(QUEUE_NAME, { connection: this.client, prefix: this.keys.queuePrefix });
  }

  /** Starts one worker and waits until it takes jobs. */
  async add(): Promise<CliProcess> {
    const id = `w${this.ids.size + 1}`;
    const w = this.start([
      "worker",
      "--redis-url",
      this.redisUrl,
      "--run-id",
      this.runId,
      "--worker-id",
      id,
      "--metrics-port",
      "0",
      ...this.extraArgs,
    ]);
    this.ids.set(id, w);
    this.live.push(w);
    this.all.push(w);
    await waitFor(() => w.stderr().includes('"msg":"worker ready"') || w.child.exitCode !== null, 30_000);
    if (w.child.exitCode !== null) throw new Error(`worker ${id} exited: ${w.stderr()}`);
    return w;
  }

  /** The current weights version (= updates done), or -1 before the run is published and after it ends. */
  async version(): Promise<number> {
    const v = await this.client.get(this.keys.version);
    return v === null ? -1 : Number(v);
  }

  /** Whether the result of (version, shard) has been written. */
  async hasResult(version: number, shard: number): Promise<boolean> {
    return (await this.client.exists(this.keys.result(version, shard))) === 1;
  }

  /**
   * The shards of the current version that workers hold and have not
   * delivered: active shard jobs (BullMQ's processedBy) and lane claims (the
   * claims hash names the claimant of each claim index, which is the index
   * of a non-empty shard: with full batches, the shard itself).
   */
  private async held(v: number): Promise<{ workerId: string; shard: number }[]> {
    const out: { workerId: string; shard: number }[] = [];
    for (const job of await this.queue.getActive()) {
      const j = job.data as ShardJob;
      if (job.processedBy === undefined) {
        throw new Error(
          "active jobs carry no processedBy: GradWorker must give BullMQ its worker id as `name`",
        );
      }
      if (j.version === v) out.push({ workerId: job.processedBy, shard: j.shard });
    }
    // Claims past the step's shards (a worker asking for more when none
    // was left) hold nothing.
    const json = await this.client.get(this.keys.spec);
    const spec = json ? decodeRunSpec(json) : undefined;
    const c = spec?.config;
    const count =
      spec && c
        ? shardRanges(spec.data.trainN, c.batch, c.shards, v % stepsPerEpoch(spec.data.trainN, c.batch))
            .length
        : 0;
    const claims = await this.client.hgetall(this.keys.claim(v));
    for (const [field, workerId] of Object.entries(claims)) {
      if (/^\d+$/.test(field) && Number(field) < count) out.push({ workerId, shard: Number(field) });
    }
    return out;
  }

  /**
   * Waits for a live worker in the middle of a shard: it holds a shard of
   * the current version (see held) whose result is not written yet; with
   * `mustCompute`, also {@link computing} (past the version check and the
   * weights fetch). Undefined when `giveUp()` says so first.
   */
  async busyWorker(
    opts: { giveUp?: () => boolean; mustCompute?: boolean } = {},
    timeoutMs = 60_000,
  ): Promise<BusyWorker | undefined> {
    let found: BusyWorker | undefined;
    await waitFor(
      async () => {
        if (opts.giveUp?.()) return true;
        const v = await this.version();
        for (const h of await this.held(v)) {
          const w = this.ids.get(h.workerId);
          if (!w || !this.live.includes(w)) continue;
          if (await this.hasResult(v, h.shard)) continue;
          if (opts.mustCompute && !(await computing(w.child.pid!))) continue;
          found = { worker: w, version: v, shard: h.shard };
          return true;
        }
        return false;
      },
      timeoutMs,
      2,
    );
    return found;
  }

  /** Takes a worker out of the live set (after the test killed it). */
  remove(w: CliProcess): void {
    this.live.splice(this.live.indexOf(w), 1);
  }

  /** Continues stopped workers and stops every worker; closes the connections. */
  async close(): Promise<void> {
    for (const w of this.all)
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGCONT");
    await Promise.all(this.all.map((w) => stopCli(w, "SIGKILL")));
    await this.queue.close();
    this.client.disconnect();
  }
}
