/**
 * Workers that said they cannot serve the run (other data, a spec they
 * cannot take), and the verdict that stops a run no worker can serve: every
 * live worker (heartbeat in the last LIVE_WORKER_WINDOW_MS; a worker beats
 * from the moment Redis answers, before its data loads) has refused it, for
 * a whole step timeout, while none is connected. A good worker still
 * starting keeps the run waiting. Pure apart from the injected clock.
 */

/** The refusals of one run. */
export class RefusingFleet {
  private readonly refusing = new Map<string, string>();
  private allSince: number | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** Whether any worker has refused (and is not known to be gone). */
  get any(): boolean {
    return this.refusing.size > 0;
  }

  /** Notes a refusal; true when it is news (a new worker, or a new reason). */
  refused(workerId: string, reason: string): boolean {
    const news = this.refusing.get(workerId) !== reason;
    this.refusing.set(workerId, reason);
    return news;
  }

  /** A worker joined (it can serve the run after all). */
  joined(workerId: string): void {
    this.refusing.delete(workerId);
  }

  /**
   * Looks again with the live workers' ids and how many are connected; the
   * error that stops the run once every live worker has refused it for
   * `timeoutMs`, else undefined.
   */
  check(live: string[], connected: number, timeoutMs: number): Error | undefined {
    for (const w of this.refusing.keys()) if (!live.includes(w)) this.refusing.delete(w);
    if (connected > 0 || live.length === 0 || !live.every((w) => this.refusing.has(w))) {
      this.allSince = undefined;
      return undefined;
    }
    this.allSince ??= this.now();
    return this.now() - this.allSince >= timeoutMs ? this.error() : undefined;
  }

  /** Forgets when the fleet started refusing (a worker is connected). */
  reset(): void {
    this.allSince = undefined;
  }

  private error(): Error {
    const ids = [...this.refusing.keys()];
    const reasons = [...new Set(this.refusing.values())].join(", ");
    return new Error(
      `no live worker can serve this run: ${ids.length === 1 ? "the only one" : `all ${ids.length}`} ` +
        `(${ids
          .slice(0, 5)
          .map((w) => JSON.stringify(w.slice(0, 64)))
          .join(", ")}${ids.length > 5 ? ", ..." : ""}) refused it (last reason: ${reasons}); ` +
        "check the workers' logs (same dataset and --train-limit/--test-limit, same gradfleet version?)",
    );
  }
}
