/**
 * What a worker does with a seat job: the entry of all its work. A seat of
 * the published session is served over the coordinator's data port (see
 * direct-seat.ts) until the run ends, the connection goes or the worker
 * closes; a seat of a session this worker cannot serve is refused out loud,
 * to the coordinator itself; anything else ends quietly.
 */
import type { Job } from "bullmq";
import type { Redis } from "ioredis";
import type { RunKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import { seatJobSchema } from "../shared/seat-job.js";
import type { Trace } from "../shared/trace.js";
import { reportRefusal, serveSeat } from "./direct-seat.js";
import type { WorkerObserver } from "./observer.js";
import { CannotServe, NoRunSpec, OtherSession, REFUSAL_PAUSE_MS, type RefusalPacer } from "./refusals.js";
import { readPublishedSpec, type SessionLoader } from "./session-loader.js";

/** What a seat handler needs besides the sessions. */
export interface SeatHandlerOptions {
  redis: Redis;
  keys: RunKeys;
  runId: string;
  workerId: string;
  log: Logger;
  observer?: WorkerObserver;
  /** Spans of direct steps (`--trace`). */
  trace?: Trace;
}

/** Takes seat jobs; see the module comment. */
export class SeatHandler {
  /** Ranges this worker computed and sent. */
  rangesDone = 0;
  /** Ends each seat in progress, with its session (for close and checkSeats). */
  private readonly seats = new Map<() => void, string>();
  private closing = false;

  constructor(
    private readonly o: SeatHandlerOptions,
    private readonly sessions: SessionLoader,
    private readonly pacer: RefusalPacer,
  ) {}

  /** BullMQ's processor of seat jobs: resolves when the seat is over, with why (kept on the job). */
  async take(job: Job<unknown>): Promise<string> {
    const { log } = this.o;
    const parsed = seatJobSchema.safeParse(job.data);
    if (!parsed.success) {
      // Not a seat we can attribute to a session: say so, and drop it.
      const issue = parsed.error.issues[0];
      log.error(
        { job: job.id, field: issue.path.join("."), why: issue.message },
        "refused invalid seat job data",
      );
      return "refused: invalid data";
    }
    const session = parsed.data.session;
    try {
      const s = await this.sessions.sessionFor(session);
      if (this.closing) return "closing";
      return `seat ended: ${await this.sit(s)}`;
    } catch (e) {
      // A seat of a session that is over: nothing to say.
      if (e instanceof OtherSession || e instanceof NoRunSpec) return "stale";
      if (!(e instanceof CannotServe)) throw e;
      await this.pacer.turn();
      log.error({ reason: e.reason }, e.message);
      // Said on the data port: the coordinator logs it and stops a run no worker can serve.
      const spec = this.sessions.unservableSpec(session);
      if (spec) await reportRefusal(spec, this.o.workerId, e.reason, e.message);
      this.o.observer?.onShard?.("refused", 0, 0);
      return "refused";
    }
  }

  /** Serves the steps of session `s` over the data port; resolves with why the seat ended. */
  private async sit(s: Parameters<typeof serveSeat>[0]): Promise<string> {
    let stop: (() => void) | undefined;
    const end = await serveSeat(s, {
      workerId: this.o.workerId,
      log: this.o.log,
      trace: this.o.trace,
      onRange: (seconds, bytes) => {
        this.rangesDone++;
        this.o.observer?.onShard?.("ok", seconds, bytes);
      },
      onStop: (f) => {
        stop = f;
        this.seats.set(f, s.spec.session);
      },
    });
    if (stop) this.seats.delete(stop);
    // Not reachable: give the seat back after a pause rather than spin on it.
    if (end === "unreachable") await this.pacer.pause(REFUSAL_PAUSE_MS);
    return end;
  }

  /**
   * Leaves every seat whose session is no longer the published one (another
   * coordinator took the run while this seat's was frozen, say): else the
   * worker would wait on a coordinator that may never come back.
   */
  async checkSeats(): Promise<void> {
    if (this.seats.size === 0) return;
    let published: string;
    try {
      const spec = await readPublishedSpec(this.o.redis, this.o.keys, this.o.runId);
      if (spec === null) return; // Redis restarted empty: the coordinator publishes it again
      published = spec.session;
    } catch {
      return; // unreadable or unreachable now: no verdict
    }
    for (const [stop, session] of this.seats) {
      if (session === published) continue;
      this.o.log.warn({ session, published }, "leaving a seat: its session is no longer the run's");
      this.seats.delete(stop);
      stop();
    }
  }

  /** Leaves every seat gracefully (each computes what it was sent, then is released); takes no new one. */
  close(): void {
    this.closing = true;
    for (const stop of [...this.seats.keys()]) stop();
    this.seats.clear();
  }
}
