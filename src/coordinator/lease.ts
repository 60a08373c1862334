/**
 * The coordinator lease: one live coordinator per run id. Taken with
 * SET NX PX, renewed by a timer while the coordinator lives; a second
 * coordinator for the same run is refused until the first stops or its
 * lease expires (a SIGKILLed coordinator blocks its run for at most the TTL).
 */
import type { Redis } from "ioredis";
import { RELEASE_LEASE, RENEW_LEASE } from "../shared/scripts.js";

export const LEASE_TTL_MS = 10_000;

/** Raised when another coordinator holds the run. */
export class LeaseTakenError extends Error {
  override name = "LeaseTakenError";
}

/** A held lease; call release() when the run ends. */
export class Lease {
  private timer?: NodeJS.Timeout;
  lost = false;

  private constructor(
    private readonly redis: Redis,
    private readonly key: string,
    readonly owner: string,
  ) {}

  /** Takes the lease or throws LeaseTakenError naming the holder. */
  static async acquire(redis: Redis, key: string, owner: string, runId: string): Promise<Lease> {
    const ok = await redis.set(key, owner, "PX", LEASE_TTL_MS, "NX");
    if (ok !== "OK") {
      const holder = await redis.get(key);
      const ttl = await redis.pttl(key);
      throw new LeaseTakenError(
        `run "${runId}" already has a live coordinator (${holder}); stop it, wait ${Math.ceil(Math.max(ttl, 0) / 1000)} s ` +
          "for its lease to expire if it died, or use another --run-id",
      );
    }
    const lease = new Lease(redis, key, owner);
    lease.timer = setInterval(() => lease.renew(), LEASE_TTL_MS / 3);
    lease.timer.unref();
    return lease;
  }

  private renew(): void {
    this.redis
      .eval(RENEW_LEASE, 1, this.key, this.owner, String(LEASE_TTL_MS))
      .then(async (r) => {
        if (r === 1) return;
        // Lost (e.g. Redis restarted empty): take it back if nobody else has.
        const ok = await this.redis.set(this.key, this.owner, "PX", LEASE_TTL_MS, "NX");
        this.lost = ok !== "OK";
      })
      .catch(() => {
        // Redis unreachable: the run's own commands will report it.
      });
  }

  /** Stops renewing and deletes the lease if still ours. */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.redis.eval(RELEASE_LEASE, 1, this.key, this.owner).catch(() => {});
  }
}
