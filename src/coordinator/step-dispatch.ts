/**
 * The step in hand of direct dispatch: its ranges sent as STEP frames (the
 * step's header and the weights), the timer for the next deadline, and a
 * range sent again when its worker leaves, misses its deadline (`--step-timeout`)
 * or sends a result that is refused. The bookkeeping is StepRound's; which
 * worker is whose is the WorkerPool's; what a result means is
 * ResultIntake's. The step ends when every range is accepted, or fails
 * (given up after a stop, or the run failed).
 */
import { StepAbortedError, type StepRequest } from "../core/trainer.js";
import type { Logger } from "../shared/log.js";
import { encodeStepHeader } from "../shared/step-frames.js";
import type { ClusterStats } from "./cluster-stats.js";
import { StepRound, type Unit } from "./step-round.js";
import type { PoolLink, WorkerPool } from "./worker-pool.js";

/** How often a waiting step looks at its deadlines, a stop and the refusing fleet, at the least. */
export const TICK_MS = 1000;

/** A worker's connection as a step uses it: the pool's view, and sending a frame (a WorkerLink). */
export interface StepLink extends PoolLink {
  /** Sends the pieces of one frame in one go; false once the connection is gone. */
  sendAll(pieces: Buffer[]): boolean;
  /** The worker takes the weights from shared memory (its STEP frames are headers only). */
  readonly viaMemory?: boolean;
  /** How many of its result files have been read (see shared/step-memory.ts). */
  readonly resultsRead?: number;
}

/** What every step of a run shares: built once by the executor. */
export interface StepContext<L extends StepLink> {
  pool: WorkerPool<L>;
  stats: ClusterStats;
  log: Logger;
  /** Float32 parameters of the model (a STEP frame's header names it). */
  paramCount: number;
  /** How long a worker has for its range (`--step-timeout`), ms. */
  timeoutMs: number;
  /** When a stop gives the step in hand up (ms on `now`'s clock; Infinity while no stop was asked for). */
  abandonAt(): number;
  /** Called on every tick before overdue ranges are sent again (the executor looks at the refusing fleet). */
  onTick(step: StepDispatch<L>): void;
  /** The clock of deadlines and ticks (Date.now but in tests). */
  now(): number;
  /**
   * Puts a version's weights in shared memory (once per version), for the
   * workers that take them there; false when it cannot (they are then sent in
   * the frame).
   */
  publishWeights?(version: number, weights: Buffer): boolean;
}

function noop(): void {}

/** One step in hand, for workers of type L. */
export class StepDispatch<L extends StepLink> {
  readonly round: StepRound<L>;
  /** Ranges whose result was refused once as non-finite (a second one is divergence). */
  readonly nonFinite = new Set<Unit<L>>();
  /** Seconds of compute of each worker's accepted results. */
  readonly perWorker = new Map<string, number>();
  /** When the step's frames were sent (trace only; 0 when not traced). */
  sentAt = 0;
  private timer?: NodeJS.Timeout;
  private resolve: () => void = noop;
  private reject: (e: Error) => void = noop;
  private over = false;

  /**
   * @param workers the workers to share the step among (the first gets shard 0)
   * @param weights the weights as sent with every STEP frame of the step
   */
  constructor(
    readonly req: StepRequest,
    workers: readonly L[],
    private readonly weights: Buffer,
    private readonly ctx: StepContext<L>,
  ) {
    this.round = new StepRound(req.shards.length, workers, ctx.timeoutMs, ctx.now);
  }

  /** Sends each worker of the round its range; `resolve` once every range is accepted, `reject` when the step fails. */
  start(resolve: () => void, reject: (e: Error) => void): void {
    this.resolve = resolve;
    this.reject = reject;
    // The round gave each unit its holder and deadline when it was made.
    for (const u of this.round.units) if (u.holder) this.send(u, u.holder);
  }

  /** Ends the step with `e` (nothing once the step is over). */
  fail(e: Error): void {
    if (!this.over) this.reject(e);
  }

  /** The step is over (done or failed): its timer is stopped and nothing may act on it later. */
  end(): void {
    this.over = true;
    clearTimeout(this.timer);
    // A step given up leaves ranges out: their workers hold nothing of the next one.
    for (const u of this.round.units) if (!u.done) unhold(u);
  }

  /** (Re)arms the timer for the round's next deadline, the stop's, or the next tick, whichever comes first. */
  arm(): void {
    if (this.over) return;
    clearTimeout(this.timer);
    const now = this.ctx.now();
    const at = Math.min(this.round.nextDeadline(), this.ctx.abandonAt(), now + TICK_MS);
    this.timer = setTimeout(() => this.tick(), Math.max(0, at - now));
  }

  /** Worker `l` joined: it takes every range nobody holds. */
  joined(l: L): void {
    for (const u of this.round.unheld()) this.hand(u, l, false);
  }

  /** Worker `l` is gone: each range it held goes to the least busy other worker, or waits for one. Returns how many it held. */
  left(l: L): number {
    const held = this.round.heldBy(l);
    for (const u of held) {
      const to = this.ctx.pool.pick(l);
      this.ctx.stats.retriedShards += u.hi - u.lo;
      this.hand(u, to, true);
    }
    return held.length;
  }

  /**
   * Sends a range whose result from worker `from` was refused to another
   * worker (or the same one when it is alone). Its holder, `from` or not,
   * holds it no more.
   */
  again(u: Unit<L>, from: L): void {
    this.ctx.stats.retriedShards += u.hi - u.lo;
    this.hand(u, this.ctx.pool.pick(from) ?? (from.closed ? undefined : from), true);
  }

  /**
   * Range `u`'s result from worker `l` is kept: the range is done, and the
   * step once every range is. Its holder may be another worker (`l` was
   * late, and the range sent again): that one's copy will be a duplicate, so
   * it holds the range no more from now.
   */
  accept(u: Unit<L>, l: L, computeSeconds: number): void {
    const holder = u.holder;
    unhold(u);
    this.round.accept(u);
    this.ctx.pool.releaseIfIdle(l, this.round);
    if (holder && holder !== l) this.ctx.pool.releaseIfIdle(holder, this.round);
    this.ctx.stats.workersSeen.add(l.workerId);
    this.perWorker.set(l.workerId, (this.perWorker.get(l.workerId) ?? 0) + computeSeconds);
    if (this.round.complete) this.resolve();
  }

  /**
   * Hands range `u` from its holder to worker `to` (none: it waits for one)
   * with a fresh deadline, and sends it there.
   */
  private hand(u: Unit<L>, to: L | undefined, retry: boolean): void {
    unhold(u);
    this.round.assign(u, to, retry);
    if (to) this.send(u, to);
  }

  /** Sends range `u` to `to`, its holder now: the weights in the frame, or in shared memory for a worker that takes them there. */
  private send(u: Unit<L>, to: L): void {
    to.busy++;
    const { version, epoch, step } = this.req;
    const inMemory = to.viaMemory === true && this.ctx.publishWeights?.(version, this.weights) === true;
    const header = encodeStepHeader(
      { version, epoch, step, lo: u.lo, hi: u.hi, inMemory },
      this.ctx.paramCount,
      to.resultsRead ?? 0,
    );
    to.sendAll(inMemory ? [header] : [header, this.weights]);
  }

  private tick(): void {
    if (this.over) return;
    const { ctx, round } = this;
    if (ctx.now() >= ctx.abandonAt()) {
      this.reject(new StepAbortedError("the step did not finish within --step-timeout of the stop"));
      return;
    }
    ctx.onTick(this);
    for (const u of round.overdue()) {
      const from = u.holder;
      const to = ctx.pool.pick(from) ?? from;
      ctx.log.warn(
        { version: this.req.version, shards: `${u.lo}-${u.hi - 1}`, from: from?.workerId, to: to?.workerId },
        "shards overdue (--step-timeout); sending them again",
      );
      ctx.stats.retriedShards += u.hi - u.lo;
      if (from) from.late = true;
      this.hand(u, to && !to.closed ? to : undefined, true);
    }
    this.arm();
  }
}

/**
 * Range `u`'s holder holds it no more (its `busy` count goes down): every
 * handover, acceptance and end of a step goes through here, so a worker's
 * `busy` is the number of ranges of the step in hand it holds.
 */
function unhold<L extends StepLink>(u: Unit<L>): void {
  if (u.holder) u.holder.busy = Math.max(0, u.holder.busy - 1);
}
