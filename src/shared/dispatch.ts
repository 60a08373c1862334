/**
 * How a coordinator hands out a step's shards (`--dispatch`): only `direct`
 * now (workers take a BullMQ seat, then get steps over the coordinator's
 * data port; see coordinator/direct-executor.ts). The Redis-only `lanes` and
 * `jobs` were removed; the option stays so that existing scripts work.
 */

/** `--dispatch`'s one value. */
export const DISPATCHES = ["direct"] as const;
/** A dispatch mode. */
export type Dispatch = (typeof DISPATCHES)[number];
