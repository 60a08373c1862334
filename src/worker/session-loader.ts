/**
 * A worker's session: the published run spec, parsed and checked, with the
 * dataset and kernel it needs. Loaded once per coordinator session and kept
 * while seats of that session come; a session this worker cannot serve
 * (other data, a spec it cannot take) is remembered with its verdict
 * instead of being loaded again for every seat.
 */
import type { Redis } from "ioredis";
import { DataError } from "../core/data/index.js";
import type { DataBundle } from "../core/dataset.js";
import { fastImplementation, makeKernel } from "../core/kernel.js";
import { epochPermutation } from "../core/prng.js";
import type { RunKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import { decodeRunSpec, type RunSpec } from "../shared/run-spec.js";
import type { DatasetCache } from "./datasets.js";
import type { SeatSession } from "./direct-seat.js";
import { CannotServe, NoRunSpec, OtherSession } from "./refusals.js";

/**
 * The run spec published in Redis, parsed: null when there is none. A spec
 * that does not parse, or names another run, is one this worker cannot serve.
 */
export async function readPublishedSpec(redis: Redis, keys: RunKeys, runId: string): Promise<RunSpec | null> {
  const json = await redis.get(keys.spec);
  if (json === null) return null;
  let spec: RunSpec;
  try {
    spec = decodeRunSpec(json);
  } catch (e) {
    // Another gradfleet version's spec, or a damaged one.
    throw new CannotServe("spec_mismatch", (e as Error).message);
  }
  if (spec.runId !== runId) {
    throw new CannotServe("spec_mismatch", `the spec is for run ${spec.runId}, this worker serves ${runId}`);
  }
  return spec;
}

/** Loads sessions of one run for a worker; see the module comment. */
export class SessionLoader {
  private current?: SeatSession;
  private loading?: Promise<SeatSession>;
  /** A session this worker found it cannot serve, and why. */
  private unservable?: { session: string; error: CannotServe; spec?: RunSpec };

  constructor(
    private readonly redis: Redis,
    private readonly keys: RunKeys,
    private readonly runId: string,
    private readonly datasets: DatasetCache,
    private readonly log: Logger,
  ) {}

  /**
   * The loaded session `session`. Throws OtherSession when the published
   * spec is of another session, NoRunSpec when none is published, and
   * CannotServe (the same error again for later seats) when this worker
   * cannot serve it.
   */
  async sessionFor(session: string): Promise<SeatSession> {
    if (this.current?.spec.session === session) return this.current;
    if (this.unservable?.session === session) throw this.unservable.error;
    // Seats that come together share one load.
    this.loading ??= this.loadPublished().finally(() => {
      this.loading = undefined;
    });
    const s = await this.loading;
    if (s.spec.session !== session) {
      throw new OtherSession(`seat of session ${session}, the published run spec is ${s.spec.session}`);
    }
    return s;
  }

  /** The spec of session `session` when this worker found it cannot serve it (to say so to its coordinator). */
  unservableSpec(session: string): RunSpec | undefined {
    return this.unservable?.session === session ? this.unservable.spec : undefined;
  }

  private async loadPublished(): Promise<SeatSession> {
    const spec = await readPublishedSpec(this.redis, this.keys, this.runId);
    if (spec === null) throw new NoRunSpec("the run spec is missing from Redis");
    // A seat of an older session made us look: the published session may be
    // the one already loaded, whose caches stay.
    if (this.current?.spec.session === spec.session) return this.current;
    try {
      this.current = await this.loadSession(spec);
    } catch (e) {
      // Data and spec do not change under a session: keep the verdict
      // instead of loading the dataset again for every seat.
      if (e instanceof CannotServe) this.unservable = { session: spec.session, error: e, spec };
      throw e;
    }
    this.log.info(
      {
        session: spec.session,
        config: spec.config,
        kernelImplementation: spec.config.kernel === "fast" ? fastImplementation() : "ref",
      },
      "joined run session",
    );
    return this.current;
  }

  /** The dataset and kernel of a parsed run spec; throws CannotServe for one this worker cannot serve. */
  private async loadSession(spec: RunSpec): Promise<SeatSession> {
    // Before the dataset: a worker whose GRADFLEET_FAST_KERNEL cannot be
    // met (native without the addon) cannot serve a run whatever its data,
    // and says why. Without it, a worker computes `fast` by whichever
    // implementation it has: the same bits.
    if (spec.config.kernel === "fast") {
      try {
        fastImplementation();
      } catch (e) {
        throw new CannotServe("spec_mismatch", (e as Error).message);
      }
    }
    let data: DataBundle;
    try {
      data = await this.datasets.get(spec.data.trainLimit, spec.data.testLimit);
    } catch (e) {
      // This worker's data cannot give what the run needs (too few
      // examples for its limits, unreadable files): it cannot serve the run.
      if (e instanceof DataError) throw new CannotServe("data_mismatch", e.message);
      throw e;
    }
    if (data.fingerprint !== spec.data.fingerprint) {
      throw new CannotServe(
        "data_mismatch",
        `dataset ${data.source} has fingerprint ${data.fingerprint.slice(0, 12)}…, the run needs ` +
          `${spec.data.fingerprint.slice(0, 12)}… (same files and --train-limit/--test-limit on every process?)`,
      );
    }
    if (spec.config.spec.layers[0] !== data.train.pixels) {
      throw new CannotServe(
        "spec_mismatch",
        `the model takes ${spec.config.spec.layers[0]} inputs, the data has ${data.train.pixels}`,
      );
    }
    const kernel = makeKernel(spec.config.kernel, spec.config.spec);
    kernel.prepare?.(data.train);
    // The epoch's permutation, kept: every step of an epoch needs it.
    let perm: { epoch: number; perm: Uint32Array } | undefined;
    return {
      spec,
      data,
      kernel,
      permutation: (epoch) => {
        if (perm?.epoch !== epoch) {
          perm = { epoch, perm: epochPermutation(spec.data.trainN, spec.config.seed, epoch) };
        }
        return perm.perm;
      },
    };
  }
}
