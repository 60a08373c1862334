/**
 * The coordinator lease: one live coordinator per run id. Taken with
 * SET NX PX, renewed by a timer while the coordinator lives; a second
 * coordinator for the same run is refused until the first stops or its
 * lease expires (a SIGKILLed coordinator blocks its run for at most the TTL).
 */
import type { Redis } from "ioredis";
import { type LeaseScripts, leaseScripts } from "../shared/scripts.js";

export const LEASE_TTL_MS = 5_000;
/** How long a new coordinator waits for a dead one's lease to expire before giving up. */
export const LEASE_WAIT_MS = LEASE_TTL_MS + 1_500;

/** Raised in a coordinator whose lease another coordinator took (it was paused past the TTL, say). */
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
}

/** Raised when another coordinator holds the run. */
export class LeaseTakenError extends Error {
  override name = "LeaseTakenError";
}

/** A held lease; call release() when the run ends. */
export class Lease {
  private timer?: NodeJS.Timeout;
  private readonly scripts: LeaseScripts;
  lost = false;
  /** Called once when the lease turns out to be another coordinator's (see renew). */
  onLost?: (holder: string | null) => void;

  private constructor(
    private readonly redis: Redis,
    private readonly key: string,
    readonly owner: string,
  ) {
    this.scripts = leaseScripts(redis);
  }

  /**
   * Takes the lease, waiting up to LEASE_WAIT_MS for a holder that stopped
   * renewing it (a crashed coordinator, so a restarted one can resume at
   * once); throws LeaseTakenError naming the holder if it stays taken.
   */
  static async acquire(
    redis: Redis,
    key: string,
    owner: string,
    runId: string,
    onWait?: () => void,
  ): Promise<Lease> {
    const deadline = Date.now() + LEASE_WAIT_MS;
    let ok = await redis.set(key, owner, "PX", LEASE_TTL_MS, "NX");
    if (ok !== "OK") onWait?.();
    while (ok !== "OK" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      ok = await redis.set(key, owner, "PX", LEASE_TTL_MS, "NX");
    }
    if (ok !== "OK") {
      const holder = await redis.get(key);
      const ttl = await redis.pttl(key);
      throw new LeaseTakenError(
        `run "${runId}" already has a live coordinator (${holder}, lease renewed ${Math.round((LEASE_TTL_MS - Math.max(ttl, 0)) / 1000)} s ago); ` +
          "stop it or use another --run-id",
      );
    }
    const lease = new Lease(redis, key, owner);
    lease.timer = setInterval(() => lease.renew(), LEASE_TTL_MS / 3);
    lease.timer.unref();
    return lease;
  }

  private renew(): void {
    this.scripts
      .renewLease(this.key, this.owner, LEASE_TTL_MS)
      .then(async (r) => {
        if (r === 1) return;
        // Lost (e.g. Redis restarted empty): take it back if nobody else has.
        const ok = await this.redis.set(this.key, this.owner, "PX", LEASE_TTL_MS, "NX");
        if (ok === "OK" || this.lost) return;
        // Another coordinator took the run: this one must stop at once, and
        // leave the run's keys (now the other's) alone.
        this.lost = true;
        if (this.timer) clearInterval(this.timer);
        this.onLost?.(await this.redis.get(this.key).catch(() => null));
      })
      .catch(() => {
        // Redis unreachable: the run's own commands will report it.
      });
  }

  /** Stops renewing and deletes the lease if still ours. */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.scripts.releaseLease(this.key, this.owner).catch(() => {});
  }
}
