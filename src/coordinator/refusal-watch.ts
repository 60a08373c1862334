/**
 * Workers' refusals as the DirectExecutor meets them: each one said on the
 * data port is logged (once per worker and reason) and counted, and while
 * no worker is connected the workers' heartbeats in Redis are read for
 * RefusingFleet's verdict on a run that no worker can serve.
 */
import type { Redis } from "ioredis";
import { LIVE_WORKER_WINDOW_MS, type RunKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import { refusalLabel } from "../shared/reasons.js";
import type { ClusterStats } from "./cluster-stats.js";
import { RefusingFleet } from "./refusing-fleet.js";

/** What the watch is built with. */
export interface RefusalWatchOptions {
  redis: Redis;
  keys: RunKeys;
  log: Logger;
  stats: ClusterStats;
  /** How long every live worker must have refused, none connected, before the run stops (`--step-timeout`), ms. */
  timeoutMs: number;
  /** How many workers are connected now. */
  connected(): number;
}

/** The refusals of one run, and the look at them. */
export class RefusalWatch {
  private readonly fleet = new RefusingFleet();

  constructor(private readonly o: RefusalWatchOptions) {}

  /** Whether any worker has refused (and is not known to be gone). */
  get any(): boolean {
    return this.fleet.any;
  }

  /** Worker `workerId` said it cannot serve the run, and why. */
  refused(workerId: string, reason: string, message: string): void {
    if (this.fleet.refused(workerId, reason)) {
      this.o.log.error({ worker: workerId, reason }, `a worker cannot serve this run: ${message}`);
    }
    this.o.stats.countRejected(refusalLabel(reason));
  }

  /** A worker joined (it can serve the run after all). */
  joined(workerId: string): void {
    this.fleet.joined(workerId);
  }

  /**
   * On a step's tick: whether to look (check) now, that is no worker is
   * connected and some refused; else the fleet's clock starts again.
   */
  due(): boolean {
    if (this.o.connected() > 0 || !this.fleet.any) {
      this.fleet.reset();
      return false;
    }
    return true;
  }

  /** No worker is connected and some refused the run: `stop` it if none can serve it (see RefusingFleet). */
  async check(stop: (e: Error) => void): Promise<void> {
    const { redis, keys } = this.o;
    let live: string[];
    try {
      live = await redis.zrangebyscore(keys.workers, Date.now() - LIVE_WORKER_WINDOW_MS, "+inf");
    } catch {
      return; // Redis unreachable: no verdict now
    }
    const e = this.fleet.check(live, this.o.connected(), this.o.timeoutMs);
    if (e) stop(e);
  }
}
