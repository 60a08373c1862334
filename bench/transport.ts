/**
 * The transport benchmark: what one Redis hop between two processes costs on
 * this machine, and so the least coordination overhead a step can have.
 *
 * A step through Redis (the removed `lanes` dispatch: why direct steps use
 * a data port instead, see docs/design-notes.md) needed two hops at the
 * least: the weights out (a 50 KB pub/sub message) and a result back (a
 * 52 KB list push the coordinator pops). This section measures, against a private
 * redis-server and a peer process (bench/transport-peer.ts):
 * - a list ping-pong with 16-byte messages (round trip);
 * - a list ping-pong with a 52 KB reply (round trip; the 0.76 ms);
 * - a 50 KB pub/sub message (one way, timed by the receiver's clock).
 * From these: the floor of a step's overhead = pub/sub one way + the 52 KB
 * round trip - half the 16-byte round trip, and the largest speed-up two
 * workers could give over one at batch 1024 of 784-16-16-10 with that floor,
 * given the compute of one worker (timed here with the fast kernel):
 * (c + floor) / (c / 2 + floor).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { loadDataset } from "../src/core/data/index.js";
import { initParams } from "../src/core/init.js";
import { makeKernel } from "../src/core/kernel.js";
import { epochPermutation } from "../src/core/prng.js";
import type { ModelSpec } from "../src/core/spec.js";
import { startPrivateRedis } from "../src/shared/local-redis.js";
import {
  type BenchOptions,
  fastKernelLine,
  fmt,
  machineLine,
  median,
  type Reporter,
  type Section,
} from "./report.js";

const PEER = fileURLToPath(new URL("./transport-peer.js", import.meta.url));
const PREFIX = "gf-bench-transport";

export const transportSection: Section = {
  name: "transport",
  description:
    "Redis hops between two processes (list ping-pong, 50 KB pub/sub): the floor of a step's overhead",
  async run(out: Reporter, opts: BenchOptions): Promise<void> {
    const n = opts.quick ? 50 : 1000;
    const redis = await startPrivateRedis();
    const peer = spawn(process.execPath, [PEER, redis.url, PREFIX], {
      stdio: ["ignore", "inherit", "inherit"],
    });
    const cmd = new Redis(redis.url);
    const blocking = new Redis(redis.url);
    try {
      await blocking.blpop(`${PREFIX}:ready`, 30);
      const pingPong = async (replyBytes: number): Promise<number[]> => {
        const ms: number[] = [];
        for (let i = 0; i < n + 20; i++) {
          const t0 = performance.now();
          await cmd.rpush(`${PREFIX}:ping`, String(replyBytes));
          await blocking.blpopBuffer(`${PREFIX}:pong`, 10);
          if (i >= 20) ms.push(performance.now() - t0);
        }
        return ms;
      };
      const small = await pingPong(16);
      const large = await pingPong(52 * 1024);
      const body = Buffer.alloc(50 * 1024, 3);
      const oneWay: number[] = [];
      for (let i = 0; i < n + 20; i++) {
        const head = Buffer.from(`${(performance.timeOrigin + performance.now()).toFixed(4)}:`, "latin1");
        await cmd.publish(`${PREFIX}:chan`, Buffer.concat([head, body]));
        const got = await blocking.blpop(`${PREFIX}:lat`, 10);
        if (got && i >= 20) oneWay.push(Number(got[1]));
      }
      await cmd.rpush(`${PREFIX}:ping`, "stop");
      const c = await computeMs(opts.quick ? 5 : 40);
      const p = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];
      const rows = [
        ["list ping-pong, 16 B each way (round trip)", small],
        ["list ping-pong, 52 KB reply (round trip)", large],
        ["pub/sub, 50 KB (one way)", oneWay],
      ] as const;
      for (const [what, xs] of rows) {
        out.figure({
          section: "transport",
          metric: "latency_ms_p50",
          what,
          value: median([...xs]),
          unit: "ms",
        });
      }
      const floor = median([...oneWay]) + median([...large]) - median([...small]) / 2;
      const bound = (c + floor) / (c / 2 + floor);
      out.figure({ section: "transport", metric: "step_overhead_floor_ms", value: floor, unit: "ms" });
      out.figure({ section: "transport", metric: "compute_ms_batch_1024", value: c, unit: "ms" });
      out.figure({ section: "transport", metric: "max_speedup_2_workers", value: bound, unit: "x" });
      out.table(
        `transport: Redis hops between two processes, private redis-server, ${n} each${opts.quick ? " (--quick: not a measurement)" : ""}`,
        ["hop", "p50 ms", "p95 ms"],
        rows.map(([what, xs]) => [what, fmt(median([...xs])), fmt(p([...xs], 0.95))]),
        [
          `Floor of a step's coordination overhead (weights out by pub/sub, a result back by list): ${fmt(floor)} ms.`,
          `One worker's compute of a 1024 batch (784-16-16-10, ${fastKernelLine()}, 4 shards of 256): ${fmt(c)} ms; ` +
            `so 2 workers could be at most ${fmt(bound)}x one worker at batch 1024 on this machine, with no other cost.`,
          `Machine: ${machineLine()}.`,
        ],
      );
    } finally {
      peer.kill("SIGKILL");
      cmd.disconnect();
      blocking.disconnect();
      await redis.stop();
    }
  },
};

/** Median ms of computing 4 shards of 256 (one batch of 1024) with the fast kernel, 784-16-16-10. */
async function computeMs(reps: number): Promise<number> {
  const data = await loadDataset({ trainLimit: 4096, testLimit: 100 });
  const spec: ModelSpec = {
    layers: [784, 16, 16, 10],
    hidden: "sigmoid",
    output: "sigmoid",
    cost: "quadratic",
  };
  const kernel = makeKernel("fast", spec);
  const params = initParams(spec, 1);
  const grad = new Float32Array(params.length);
  const perm = epochPermutation(data.train.n, 1, 0);
  const ms: number[] = [];
  for (let r = 0; r < reps + 5; r++) {
    const t0 = performance.now();
    for (let s = 0; s < 4; s++) kernel.gradSum(params, data.train, perm, s * 256, (s + 1) * 256, grad);
    if (r >= 5) ms.push(performance.now() - t0);
  }
  return median(ms);
}
