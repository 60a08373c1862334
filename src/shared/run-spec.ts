/**
 * The run spec: what the coordinator publishes under `keys.spec` so that
 * workers compute exactly what the run needs. It is small JSON (no tensors).
 * Workers validate it with a strict schema and compare the data fingerprint
 * and kernel with their own before computing anything.
 */
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { OPTIMIZERS } from "../core/optimizer.js";
import { KERNELS, type RunConfig } from "../core/run-config.js";
import { COSTS, HIDDEN_ACTIVATIONS, layoutOf, OUTPUT_ACTIVATIONS } from "../core/spec.js";

export const RUN_SPEC_FORMAT = "gradfleet-run/1";

const runConfigSchema = z
  .object({
    spec: z
      .object({
        layers: z.array(z.number().int().min(1).max(1_000_000)).min(2).max(64),
        hidden: z.enum(HIDDEN_ACTIVATIONS),
        output: z.enum(OUTPUT_ACTIVATIONS),
        cost: z.enum(COSTS),
      })
      .strict(),
    optimizer: z
      .object({
        name: z.enum(OPTIMIZERS),
        lr: z.number().positive().finite(),
        momentum: z.number().min(0).lt(1),
        weightDecay: z.number().min(0).finite(),
      })
      .strict(),
    epochs: z.number().int().min(1),
    batch: z.number().int().min(1),
    shards: z.number().int().min(1).max(4096),
    seed: z.number().int().min(0).max(0xffffffff),
    kernel: z.enum(KERNELS),
  })
  .strict();

/** Strict schema of the run spec. */
export const runSpecSchema = z
  .object({
    format: z.literal(RUN_SPEC_FORMAT),
    runId: z.string().min(1).max(64),
    /** Random id of this coordinator session: its seats and the workers' hellos on the data port carry it. */
    session: z.string().regex(/^[0-9a-f]{16}$/),
    config: runConfigSchema,
    data: z
      .object({
        fingerprint: z.string().regex(/^[0-9a-f]{64}$/),
        trainLimit: z.number().int().min(1).nullable(),
        testLimit: z.number().int().min(1).nullable(),
        trainN: z.number().int().min(1),
      })
      .strict(),
    /** Number of float32 parameters (gradient length). */
    paramCount: z.number().int().min(1),
    /**
     * Where a seated worker dials the coordinator (its data port), and the
     * token it must show (see shared/step-frames.ts).
     */
    direct: z
      .object({
        host: z.string().min(1).max(253),
        port: z.number().int().min(1).max(65535),
        token: z.string().regex(/^[0-9a-f]{32}$/),
        /**
         * The session's shared-memory directory (see shared/step-memory.ts),
         * when the coordinator has one: workers that can read its proof take
         * the weights and leave their results there.
         */
        memory: z.string().min(1).max(4096).optional(),
      })
      .strict(),
  })
  .strict();

/** The run spec. */
export type RunSpec = z.infer<typeof runSpecSchema> & { config: RunConfig };

/** What a coordinator session publishes, before the session id and data port are drawn. */
export interface RunSpecSource {
  runId: string;
  config: RunConfig;
  data: { fingerprint: string; train: { n: number } };
  trainLimit: number | null;
  testLimit: number | null;
}

/** A new session's run spec: a fresh random session id, and where its data port is. */
export function newRunSpec(o: RunSpecSource, direct: RunSpec["direct"]): RunSpec {
  return {
    format: RUN_SPEC_FORMAT,
    runId: o.runId,
    session: randomBytes(8).toString("hex"),
    config: o.config,
    data: {
      fingerprint: o.data.fingerprint,
      trainLimit: o.trainLimit,
      testLimit: o.testLimit,
      trainN: o.data.train.n,
    },
    paramCount: layoutOf(o.config.spec.layers).size,
    direct,
  };
}

/** Parses and validates spec JSON; throws with the failing field named. */
export function decodeRunSpec(json: string): RunSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new Error(`run spec is not JSON: ${(e as Error).message}`);
  }
  const parsed = runSpecSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`run spec field ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return parsed.data as RunSpec;
}
