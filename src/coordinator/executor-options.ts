/** What the cluster executor (DirectExecutor) is built with. */
import type { Redis } from "ioredis";
import type { DataBundle } from "../core/dataset.js";
import type { RunConfig } from "../core/run-config.js";
import type { RunKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import type { ClusterStats } from "./cluster-stats.js";

/** Settings shared by the executors of a coordinator run. */
export interface ExecutorOptions {
  runId: string;
  keys: RunKeys;
  /** Producer connection (fail fast) for commands and the queue. */
  redis: Redis;
  config: RunConfig;
  data: DataBundle;
  trainLimit: number | null;
  testLimit: number | null;
  log: Logger;
  /** Seconds a shard (or a range of shards) may take before it is sent out again. */
  stepTimeoutSeconds: number;
  stats?: ClusterStats;
}
