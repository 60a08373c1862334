/**
 * How a coordinator hands out a step's shards (`--dispatch`); see
 * src/coordinator/cluster-executor.ts and docs/design-notes.md, "Lanes".
 * Not part of the run spec: both give the same bits.
 */

/**
 * The choices of `--dispatch`: direct (BullMQ seats, steps over the
 * coordinator's data port), lanes (seats, shards claimed and results through
 * Redis) or a BullMQ job per shard.
 */
export const DISPATCHES = ["direct", "lanes", "jobs"] as const;

/** A dispatch mode. */
export type Dispatch = (typeof DISPATCHES)[number];
