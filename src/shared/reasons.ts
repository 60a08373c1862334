/**
 * The reasons that cross a process boundary, in one place: why a worker
 * refuses a run (said in its HELLO on the data port) and why the coordinator
 * rejects a result (the `reason` label of `gradfleet_results_rejected_total`).
 */

/**
 * Why a worker cannot serve a published run at all: other training data than
 * the spec's fingerprint (`data_mismatch`), or a spec it cannot take
 * (`spec_mismatch`: unparseable, another run's, a kernel or layer it lacks).
 */
export const REFUSAL_REASONS = ["data_mismatch", "spec_mismatch"] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/**
 * Values of the `reason` label of `gradfleet_results_rejected_total`: the
 * coordinator's own checks of a result (decode, wrong_shard, non_finite),
 * workers that cannot serve the run (spec_mismatch for other data or spec,
 * refused for any other reason they give), and the duplicate and
 * stale results it drops. Anything else is `other`, so the label stays
 * bounded whatever a worker sends.
 */
export const REJECT_REASONS = [
  "duplicate",
  "stale",
  "non_finite",
  "decode",
  "spec_mismatch",
  "wrong_shard",
  "refused",
  "other",
] as const;
export type RejectLabel = (typeof REJECT_REASONS)[number];

/** The bounded `reason` label of a rejection (`decode`, `non_finite`, ...); `other` for anything unknown. */
export function rejectLabel(reason: string): RejectLabel {
  return (REJECT_REASONS as readonly string[]).includes(reason) ? (reason as RejectLabel) : "other";
}

/**
 * The label of a worker's refusal: `spec_mismatch` for either of
 * {@link REFUSAL_REASONS} (the run and the worker disagree on data or spec),
 * `refused` for a reason this version does not know (a newer or rogue worker).
 */
export function refusalLabel(reason: string): RejectLabel {
  return (REFUSAL_REASONS as readonly string[]).includes(reason) ? "spec_mismatch" : "refused";
}
