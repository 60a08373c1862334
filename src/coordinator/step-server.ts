/**
 * The coordinator's data port for direct steps: workers seated by BullMQ dial
 * it, say who they are (with the session's token from the run spec), then
 * get STEP frames and answer with RESULT frames (see shared/step-frames.ts).
 * This module only keeps the connections; what to send is the step
 * dispatch's (step-dispatch.ts) and what a result means the result intake's
 * (result-intake.ts).
 */
import { createServer, type Server, type Socket } from "node:net";
import type { Logger } from "../shared/log.js";
import {
  decodeControl,
  decodeResultFile,
  encodeControl,
  FrameReader,
  FrameType,
  type Hello,
  MAX_FRAME_BYTES,
} from "../shared/step-frames.js";
import { MEMORY_ID } from "../shared/step-memory.js";
import type { SessionMemory } from "./session-memory.js";

/** A worker must say hello within this long after connecting. */
const HELLO_MS = 10_000;

/** One connected worker. */
export class WorkerLink {
  /** Ranges of the step in hand this worker holds: sent to it, not back yet, not sent to another since (see StepDispatch). */
  busy = 0;
  closed = false;
  /** Missed a deadline and has not answered since: given no new work while others can take it. */
  late = false;
  /** The worker said it is leaving: it gets no new work, and is released once its work is back. */
  leaving = false;

  /**
   * @param memoryId set when the worker proved it sees the session's shared
   *   memory: its weights and results go through files named by this id
   */
  constructor(
    readonly workerId: string,
    private readonly socket: Socket,
    readonly memoryId?: string,
  ) {}

  /** How many of the worker's result files have been read (told in every STEP header: see shared/step-memory.ts). */
  resultsRead = 0;

  /** Whether this worker takes the weights and leaves its results in shared memory. */
  get viaMemory(): boolean {
    return this.memoryId !== undefined;
  }

  /** Bytes written to this connection that the kernel has not taken yet. */
  get unsent(): number {
    return this.socket.writableLength;
  }

  /** Sends the pieces of one frame in one go (corked: one writev); false once the connection is gone. */
  sendAll(pieces: Buffer[]): boolean {
    if (this.closed) return false;
    this.socket.cork();
    for (const p of pieces) this.socket.write(p);
    this.socket.uncork();
    return true;
  }

  /** Ends the connection, telling the worker why. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end(encodeControl(FrameType.bye, { reason }));
  }
}

/** What the server reports to its owner. */
export interface StepServerEvents {
  /** A worker of this session joined. */
  onJoin(link: WorkerLink): void;
  /** A worker that had joined is gone (closed, crashed, or said bye). */
  onLeave(link: WorkerLink, why: string): void;
  /** A worker said it is leaving (its work in hand still comes back). */
  onLeaving(link: WorkerLink): void;
  /** A RESULT body (valid until the callback returns), from a frame or (`fromFile`) a result file in shared memory. */
  onResult(link: WorkerLink, body: Buffer, fromFile: boolean): void;
  /** A worker said it cannot serve this session, and why. */
  onRefusal(workerId: string, reason: string, message: string): void;
}

/** Accepts workers' connections for one session. */
export class StepServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  /**
   * @param session what a worker's HELLO must match, and the largest RESULT body
   * @param memory the session's shared memory, when it has one
   */
  constructor(
    private readonly session: { session: string; token: string; maxFrameBytes: number },
    private readonly events: StepServerEvents,
    private readonly log: Logger,
    private readonly memory?: SessionMemory,
  ) {
    this.server = createServer((socket) => this.accept(socket));
  }

  /** Listens on host:port (port 0: any free port); resolves with the port. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        const addr = this.server.address();
        resolve(typeof addr === "object" && addr ? addr.port : port);
      });
    });
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    let link: WorkerLink | undefined;
    const helloTimer = setTimeout(() => drop("no hello in time"), HELLO_MS);
    const drop = (why: string) => {
      clearTimeout(helloTimer);
      if (!socket.destroyed) socket.destroy();
      this.sockets.delete(socket);
      const gone = link;
      link = undefined;
      if (gone) {
        gone.closed = true;
        if (gone.memoryId) this.memory?.forget(gone.memoryId);
        this.events.onLeave(gone, why);
      }
    };
    const reader = new FrameReader(
      (type, body) => {
        if (!link) {
          link = this.hello(socket, type, body);
          if (link) {
            clearTimeout(helloTimer);
            this.events.onJoin(link);
          }
          return;
        }
        if (type === FrameType.result) this.events.onResult(link, body, false);
        else if (type === FrameType.resultFile)
          this.events.onResult(link, this.resultFromMemory(link, body), true);
        else if (type === FrameType.bye) {
          link.leaving = true;
          this.events.onLeaving(link);
        } else throw new Error(`unexpected frame type ${type}`);
      },
      Math.min(this.session.maxFrameBytes, MAX_FRAME_BYTES),
    );
    socket.on("data", (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        this.log.warn({ worker: link?.workerId, err: (e as Error).message }, "dropped a worker connection");
        drop((e as Error).message);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => drop("connection closed"));
  }

  /** Checks a worker's first frame; returns its link, or undefined (and closes) when refused. */
  private hello(socket: Socket, type: number, body: Buffer): WorkerLink | undefined {
    let h: Partial<Hello>;
    try {
      if (type !== FrameType.hello) throw new Error(`first frame has type ${type}`);
      h = decodeControl(body) as Partial<Hello>;
    } catch (e) {
      socket.destroy();
      this.log.warn({ err: (e as Error).message }, "refused a data connection that did not say hello");
      return undefined;
    }
    const workerId = typeof h.workerId === "string" ? h.workerId.slice(0, 128) : "?";
    if (h.token !== this.session.token || h.session !== this.session.session) {
      // Another session's worker (the run was restarted) or a stranger.
      socket.end(encodeControl(FrameType.bye, { reason: "wrong session or token" }));
      this.log.warn({ worker: workerId }, "refused a data connection with another session or a wrong token");
      return undefined;
    }
    if (h.refusal && typeof h.refusal === "object") {
      const reason = String(h.refusal.reason).slice(0, 64);
      const message = String(h.refusal.message).slice(0, 2000);
      socket.end(encodeControl(FrameType.bye, { reason: "refusal noted" }));
      this.events.onRefusal(workerId, reason, message);
      return undefined;
    }
    return new WorkerLink(workerId, socket, this.memoryIdOf(h));
  }

  /** The result-file id of a HELLO that shows the session's shared-memory proof (undefined otherwise: the worker uses the socket). */
  private memoryIdOf(h: Partial<Hello>): string | undefined {
    const m = h.memory;
    if (!this.memory || !m || typeof m !== "object") return undefined;
    return m.proof === this.memory.proof && typeof m.id === "string" && MEMORY_ID.test(m.id)
      ? m.id
      : undefined;
  }

  /** The RESULT body a RESULT_FILE frame names (throws, dropping the worker, when it cannot be read). */
  private resultFromMemory(link: WorkerLink, body: Buffer): Buffer {
    if (!this.memory || !link.memoryId)
      throw new Error("result-file frame from a worker that did not prove shared memory");
    const ref = decodeResultFile(body);
    // A worker numbers its result files one after another and TCP keeps their
    // order: any other number is a broken or hostile peer, whose word on
    // which files are free cannot be taken.
    if (ref.seq !== link.resultsRead) {
      throw new Error(`result-file frame names result ${ref.seq}, the worker's next is ${link.resultsRead}`);
    }
    const result = this.memory.takeResult(link.memoryId, ref.seq, ref.bytes, this.session.maxFrameBytes);
    link.resultsRead++;
    return result;
  }
}
