/**
 * A graceful stop, asked for by SIGINT or SIGTERM: the run stops after the
 * step in hand, writes a checkpoint and ends as "stopped". A signal that
 * comes while the run is still being set up (a coordinator publishing its
 * run) is kept for the session rather than left to kill the process.
 *
 * The first request is the stop; its subscribers hear every request, so the
 * session can end the process at once on a second one.
 */

/** Hears a request: the signal's name, and whether a stop had been asked for already. */
export type StopListener = (signal: string, repeat: boolean) => void;

/** The stop signal of one run. */
export class StopSignal {
  private first: string | undefined;
  private readonly listeners = new Set<StopListener>();
  /** Callers of {@link listenToProcess} that have not let go. */
  private holds = 0;
  private readonly onSigint = () => this.request("SIGINT");
  private readonly onSigterm = () => this.request("SIGTERM");

  /** The signal that asked for the stop, if one did. */
  get signal(): string | undefined {
    return this.first;
  }

  /** Whether a stop was asked for. */
  get requested(): boolean {
    return this.first !== undefined;
  }

  /** Asks for the stop (the first request wins) and tells the listeners. */
  request(signal: string): void {
    const repeat = this.first !== undefined;
    this.first ??= signal;
    for (const listen of [...this.listeners]) listen(signal, repeat);
  }

  /**
   * Calls `listener` on every request from now on; when a stop was asked for
   * already, at once with that signal (as a first request).
   * @returns a function that stops calling it
   */
  subscribe(listener: StopListener): () => void {
    this.listeners.add(listener);
    if (this.first !== undefined) listener(this.first, false);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * Turns this process's SIGINT and SIGTERM into requests (and keeps them
   * from ending the process) until the returned function is called.
   *
   * Counted: the process listeners go on at the first call and off when
   * every caller has let go. A hand-over (a coordinator's publishing phase
   * to its session) must take the new hold before it lets go of the old
   * one: with no listener at all for an instant, Node drops a signal that
   * has arrived but is not yet delivered, and the process neither stops nor
   * dies.
   */
  listenToProcess(): () => void {
    if (this.holds++ === 0) {
      process.on("SIGINT", this.onSigint);
      process.on("SIGTERM", this.onSigterm);
    }
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.holds === 0) {
        process.off("SIGINT", this.onSigint);
        process.off("SIGTERM", this.onSigterm);
      }
    };
  }
}
