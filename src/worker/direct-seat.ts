/**
 * A worker's seat in a direct-dispatch session (see shared/step-frames.ts):
 * dial the coordinator's data port named in the run spec, say hello with the
 * session's token, then for every STEP frame compute the range of shards it
 * names on the weights it carries and answer with one RESULT frame: the sums
 * of the nodes of the step's shard tree that tile the range, added up here
 * exactly as the coordinator would have (core/shard-tree.ts). A node of one
 * shard goes straight from the kernel into the outgoing frame.
 */
import { connect, type Socket } from "node:net";
import type { DataBundle } from "../core/dataset.js";
import { treeHeap } from "../core/f32-heap.js";
import type { Kernel } from "../core/kernel.js";
import { shardRanges, stepsPerEpoch } from "../core/plan.js";
import { blocksOf, type GradBlock, ShardTree } from "../core/shard-tree.js";
import type { Logger } from "../shared/log.js";
import type { RunSpec } from "../shared/run-spec.js";
import {
  decodeControl,
  decodeStep,
  encodeControl,
  encodeResultFile,
  FrameReader,
  FrameType,
  type Hello,
  resultFrameBytes,
  resultFrameIn,
  type StepOrder,
} from "../shared/step-frames.js";
import { type Trace, traceNow } from "../shared/trace.js";
import { SeatMemory } from "./seat-memory.js";

/** How long dialling the coordinator may take. */
const CONNECT_MS = 5000;
/** The seat's read buffer: a STEP frame of 784-16-16-10 (52 KB) in one read. */
const READ_BUFFER_BYTES = 256 * 1024;
/** How long a leaving worker waits for the coordinator to release it. */
const LEAVE_MS = 10_000;

/** What a seat computes with: the worker's session state. */
export interface SeatSession {
  spec: RunSpec;
  data: DataBundle;
  kernel: Kernel;
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
  const { host, port } = direct;
  return new Promise((resolve) => {
    let connected = false;
    let end: SeatEnd = "dropped";
    // Reads land in one buffer of the seat's (the reader copies them out at
    // once): no buffer allocated per read, so no garbage per step.
    const socket = connect({
      host,
      port,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (n: number, buf: Uint8Array) => {
          onBytes(buf.subarray(0, n));
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    const connectTimer = setTimeout(() => socket.destroy(new Error("timed out")), CONNECT_MS);
    o.onStop(() => {
      // Leaving gracefully: say so, then compute what was already sent until
      // the coordinator lets go ("released"); bounded, should it not answer.
      end = "stopped";
      if (!connected) socket.destroy();
      else socket.write(encodeControl(FrameType.bye, { reason: "leaving" }));
      setTimeout(() => socket.destroy(), LEAVE_MS).unref();
    });
    // On the coordinator's host the weights and results go through shared memory.
    const memory = SeatMemory.tryOpen(direct.memory);
    const compute = rangeComputer(s, socket, o, memory);
    const reader = new FrameReader((type, body) => {
      if (type === FrameType.step) compute(body);
      else if (type === FrameType.bye) {
        const why = String(decodeControl(body).reason ?? "");
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
      if (memory) hello.memory = { proof: memory.proof, id: memory.id };
      socket.write(encodeControl(FrameType.hello, hello));
      o.log.info(
        {
          session: s.spec.session,
          coordinator: `${host}:${port}`,
          sharedMemory: memory ? direct.memory : undefined,
        },
        memory
          ? "seated: steps come over the data port, weights and results through shared memory"
          : "seated: steps come over the data port",
      );
    });
    const onBytes = (chunk: Uint8Array) => {
      try {
        reader.push(chunk);
      } catch (e) {
        o.log.error({ err: (e as Error).message }, "bad frame from the coordinator; leaving the seat");
        socket.destroy();
      }
    };
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
      memory?.close();
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
      socket.end(encodeControl(FrameType.hello, hello));
    });
    socket.on("data", () => {});
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * The STEP handler of one connection: checks the order, computes, sends the
 * RESULT (or, for an order whose weights are in shared memory, leaves it
 * there and sends a RESULT_FILE frame naming it).
 */
function rangeComputer(
  s: SeatSession,
  socket: Socket,
  o: SeatOptions,
  memory: SeatMemory | undefined,
): (body: Buffer) => void {
  const spec = s.spec;
  const c = spec.config;
  const P = spec.paramCount;
  const perEpoch = stepsPerEpoch(spec.data.trainN, c.batch);
  // Frames are reused once the socket has handed the last one to the kernel.
  let out = Buffer.alloc(0);
  let sentAt = 0;
  // Leaf gradients of a node of several shards, the tree that adds them and
  // where it puts the node's sum: in a heap of the kernel's SIMD additions
  // when it fits (see F32Heap), else in plain arrays.
  const heap = treeHeap(P, c.shards);
  const buffer = () => heap?.alloc() ?? new Float32Array(P);
  const leaf: Float32Array[] = [];
  const tree = new ShardTree(P, heap);
  let nodeSum: Float32Array | undefined;
  // The weights of an order whose weights are in shared memory, read here.
  let shared: Float32Array | undefined;
  return (body) => {
    const arrived = o.trace ? traceNow() : 0;
    if (o.trace && sentAt) o.trace.span("wait for step", sentAt, arrived);
    const step = decodeStep(body, P);
    const { order } = step;
    const ranges = shardRanges(spec.data.trainN, c.batch, c.shards, order.step);
    const bad = checkOrder(order, perEpoch, c.epochs, ranges.length);
    if (bad) throw new Error(bad);
    memory?.noteRead(step.resultsRead);
    let params = step.params;
    if (!params) {
      if (!memory)
        throw new Error("step order's weights are in shared memory, which this worker did not offer");
      shared ??= new Float32Array(P);
      // Another version: the coordinator has moved past this one (the range went to another worker).
      if (!memory.readWeights(order.version, shared)) return;
      params = shared;
    }
    const blocks = blocksOf(order.lo, order.hi, ranges.length);
    const size = resultFrameBytes(blocks.length, P);
    if (out.length < size || socket.writableLength > 0) {
      // Body at an 8-byte boundary: 3 bytes of slack put the 5-byte frame head before it.
      out = Buffer.allocUnsafeSlow(size + 3).subarray(3);
    }
    const r = resultFrameIn(out, order.version, order.lo, order.hi, blocks.length, P);
    const perm = s.permutation(order.epoch);
    const t0 = performance.now();
    for (const [i, [lo, hi]] of blocks.entries()) {
      const into = r.grads.subarray(i * P, (i + 1) * P);
      let b: GradBlock;
      if (hi - lo === 1) {
        // A one-shard node: the kernel writes it into the frame.
        const g = s.kernel.gradSum(params, s.data.train, perm, ranges[lo].start, ranges[lo].end, into);
        b = { lo, hi, grad: into, ...g };
      } else {
        const leaves: GradBlock[] = [];
        for (let k = lo; k < hi; k++) {
          leaf[k - lo] ??= buffer();
          const g = s.kernel.gradSum(
            params,
            s.data.train,
            perm,
            ranges[k].start,
            ranges[k].end,
            leaf[k - lo],
          );
          leaves.push({ lo: k, hi: k + 1, grad: leaf[k - lo], ...g });
        }
        nodeSum ??= buffer();
        b = tree.sum(leaves, lo, hi, ranges.length, nodeSum);
        if (b.grad !== into) into.set(b.grad);
      }
      r.costs[i] = b.cost;
      r.counts[i] = b.count;
    }
    const seconds = (performance.now() - t0) / 1000;
    r.setSeconds(seconds);
    const t1 = o.trace ? traceNow() : 0;
    const ref = order.inMemory ? leaveInMemory(memory, r.frame, o.log) : undefined;
    socket.write(ref ?? r.frame);
    o.onRange?.(seconds, r.frame.length);
    if (o.trace) {
      sentAt = traceNow();
      const args = { version: order.version, shards: `${order.lo}-${order.hi - 1}` };
      o.trace.span("compute", t1 - seconds * 1e6, t1, args);
      o.trace.span("send result", t1, sentAt, { bytes: r.frame.length });
    }
  };
}

/**
 * Leaves a RESULT frame's body in shared memory; returns the RESULT_FILE frame
 * naming it, or undefined when it cannot (the coordinator has not read the
 * file's last result yet, or the directory is full): the frame then goes over
 * the socket, which the coordinator takes as well.
 */
function leaveInMemory(memory: SeatMemory | undefined, frame: Buffer, log: Logger): Buffer | undefined {
  if (!memory) return undefined;
  const body = frame.subarray(5);
  try {
    const seq = memory.writeResult(body);
    return seq === undefined ? undefined : encodeResultFile({ seq, bytes: body.length });
  } catch (e) {
    if (!memory.failedOnce) {
      memory.failedOnce = true;
      log.warn(
        { err: (e as Error).message },
        "cannot leave a result in shared memory; sending it (and any other that does not fit) over the data port",
      );
    }
    return undefined;
  }
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
