/**
 * A worker's seat in a direct-dispatch session (see shared/step-frames.ts):
 * dial the coordinator's data port named in the run spec, say hello with the
 * session's token, then for every STEP frame compute the range of shards it
 * names on the weights it carries and answer with one RESULT frame. The
 * kernel writes straight into the outgoing frame; a range that starts at
 * shard 0 is summed here, in shard order in float64 from +0, exactly as the
 * coordinator would have summed it.
 */
import { connect, type Socket } from "node:net";
import type { DataBundle } from "../core/dataset.js";
import type { Kernel } from "../core/kernel.js";
import { shardRanges, stepsPerEpoch } from "../core/plan.js";
import type { Logger } from "../shared/log.js";
import type { RunSpec } from "../shared/run-spec.js";
import {
  decodeJson,
  decodeStep,
  encodeJson,
  FrameReader,
  FrameType,
  type Hello,
  resultFrameBytes,
  resultFrameIn,
  type StepOrder,
} from "../shared/step-frames.js";
import { type Trace, traceNow } from "../shared/trace.js";

/** How long dialling the coordinator may take. */
const CONNECT_MS = 5000;
/** How long a leaving worker waits for the coordinator to release it. */
const LEAVE_MS = 10_000;

/** What a seat computes with: the worker's session state. */
export interface SeatSession {
  spec: RunSpec;
  data: DataBundle;
  kernel: Kernel;
  /** Scratch gradient of one shard (for a prefix range's running sum). */
  grad: Float32Array;
  /** The epoch's permutation (cached by the worker). */
  permutation(epoch: number): Uint32Array;
}

/** A seat's settings. */
export interface SeatOptions {
  workerId: string;
  log: Logger;
  /** Called after each range computed: seconds of compute and bytes sent. */
  onRange?(computeSeconds: number, bytes: number): void;
  /** Registers a function that ends the seat (the worker is closing). */
  onStop(stop: () => void): void;
  /** Spans of each step (wait, compute, send), when `--trace` is set. */
  trace?: Trace;
}

/** Why a seat ended. */
export type SeatEnd = "run over" | "unreachable" | "dropped" | "stopped";

/**
 * Serves the session's steps until the coordinator ends the connection, the
 * connection fails, or the worker stops.
 */
export function serveSeat(s: SeatSession, o: SeatOptions): Promise<SeatEnd> {
  const direct = s.spec.direct;
  if (!direct) throw new Error("the run spec has no data port (not a direct-dispatch run)");
  const { host, port } = direct;
  return new Promise((resolve) => {
    let connected = false;
    let end: SeatEnd = "dropped";
    const socket = connect({ host, port });
    socket.setNoDelay(true);
    const connectTimer = setTimeout(() => socket.destroy(new Error("timed out")), CONNECT_MS);
    o.onStop(() => {
      // Leaving gracefully: say so, then compute what was already sent until
      // the coordinator lets go ("released"); bounded, should it not answer.
      end = "stopped";
      if (!connected) socket.destroy();
      else socket.write(encodeJson(FrameType.bye, { reason: "leaving" }));
      setTimeout(() => socket.destroy(), LEAVE_MS).unref();
    });
    const compute = rangeComputer(s, socket, o);
    const reader = new FrameReader((type, body) => {
      if (type === FrameType.step) compute(body);
      else if (type === FrameType.bye) {
        const why = String(decodeJson(body).reason ?? "");
        if (why === "run over") end = "run over";
        else if (why !== "released") end = "dropped";
        if (why !== "run over" && why !== "released")
          o.log.warn({ why }, "the coordinator ended the step connection");
        socket.end();
      } else throw new Error(`unexpected frame type ${type} from the coordinator`);
    });
    socket.on("connect", () => {
      connected = true;
      clearTimeout(connectTimer);
      const hello: Hello = { token: direct.token, session: s.spec.session, workerId: o.workerId };
      socket.write(encodeJson(FrameType.hello, hello));
      o.log.info(
        { session: s.spec.session, coordinator: `${host}:${port}` },
        "seated: steps come over the data port",
      );
    });
    socket.on("data", (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        o.log.error({ err: (e as Error).message }, "bad frame from the coordinator; leaving the seat");
        socket.destroy();
      }
    });
    socket.on("error", (e) => {
      if (!connected) {
        end = "unreachable";
        o.log.error(
          { coordinator: `${host}:${port}`, err: e.message },
          "cannot reach the coordinator's data port (the coordinator's --advertise-host and --data-port must be reachable from this worker)",
        );
      }
    });
    socket.on("close", () => {
      clearTimeout(connectTimer);
      resolve(end);
    });
  });
}

/**
 * Tells the coordinator on its data port that this worker cannot serve the
 * session, and why (it logs it and stops a run that no worker can serve).
 */
export function reportRefusal(
  spec: RunSpec,
  workerId: string,
  reason: string,
  message: string,
): Promise<void> {
  const direct = spec.direct;
  if (!direct) return Promise.resolve();
  return new Promise((resolve) => {
    const socket = connect({ host: direct.host, port: direct.port });
    const timer = setTimeout(() => socket.destroy(), CONNECT_MS);
    socket.on("connect", () => {
      const hello: Hello = {
        token: direct.token,
        session: spec.session,
        workerId,
        refusal: { reason, message },
      };
      socket.end(encodeJson(FrameType.hello, hello));
    });
    socket.on("data", () => {});
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The STEP handler of one connection: checks the order, computes, sends the RESULT. */
function rangeComputer(s: SeatSession, socket: Socket, o: SeatOptions): (body: Buffer) => void {
  const spec = s.spec;
  const c = spec.config;
  const P = spec.paramCount;
  const perEpoch = stepsPerEpoch(spec.data.trainN, c.batch);
  // Frames are reused once the socket has handed the last one to the kernel.
  let out = Buffer.alloc(0);
  let sentAt = 0;
  return (body) => {
    const arrived = o.trace ? traceNow() : 0;
    if (o.trace && sentAt) o.trace.span("wait for step", sentAt, arrived);
    const { order, params } = decodeStep(body, P);
    const ranges = shardRanges(spec.data.trainN, c.batch, c.shards, order.step);
    const bad = checkOrder(order, perEpoch, c.epochs, ranges.length);
    if (bad) throw new Error(bad);
    const size = resultFrameBytes(order.lo, order.hi, P);
    if (out.length < size || socket.writableLength > 0) {
      // Body at an 8-byte boundary: 3 bytes of slack put the 5-byte frame head before it.
      out = Buffer.allocUnsafeSlow(size + 3).subarray(3);
    }
    const r = resultFrameIn(out, order.version, order.lo, order.hi, P);
    const perm = s.permutation(order.epoch);
    const t0 = performance.now();
    if (order.lo === 0) {
      const sum = r.grads as Float64Array;
      sum.fill(0);
      let cost = 0;
      let count = 0;
      for (let k = 0; k < order.hi; k++) {
        const g = s.kernel.gradSum(params, s.data.train, perm, ranges[k].start, ranges[k].end, s.grad);
        const grad = s.grad;
        for (let p = 0; p < P; p++) sum[p] += grad[p];
        cost += g.cost;
        count += g.count;
      }
      r.costs[0] = cost;
      r.counts[0] = count;
    } else {
      const grads = r.grads as Float32Array;
      for (let k = order.lo; k < order.hi; k++) {
        const i = k - order.lo;
        const g = s.kernel.gradSum(
          params,
          s.data.train,
          perm,
          ranges[k].start,
          ranges[k].end,
          grads.subarray(i * P, (i + 1) * P),
        );
        r.costs[i] = g.cost;
        r.counts[i] = g.count;
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    r.setSeconds(seconds);
    const t1 = o.trace ? traceNow() : 0;
    socket.write(r.frame);
    o.onRange?.(seconds, r.frame.length);
    if (o.trace) {
      sentAt = traceNow();
      const args = { version: order.version, shards: `${order.lo}-${order.hi - 1}` };
      o.trace.span("compute", t1 - seconds * 1e6, t1, args);
      o.trace.span("send result", t1, sentAt, { bytes: r.frame.length });
    }
  };
}

/** Why a STEP order is not one of the run's plan, or undefined when it is. */
function checkOrder(order: StepOrder, perEpoch: number, epochs: number, shards: number): string | undefined {
  if (order.epoch >= epochs || order.step >= perEpoch)
    return `step order for epoch ${order.epoch} step ${order.step} is outside the run`;
  if (order.version !== order.epoch * perEpoch + order.step)
    return `step order names version ${order.version} for epoch ${order.epoch} step ${order.step}`;
  if (!(order.lo < order.hi && order.hi <= shards))
    return `step order names shards [${order.lo}, ${order.hi}) of ${shards}`;
  return undefined;
}
