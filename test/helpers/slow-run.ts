/**
 * The flags of the fault tests' runs: shards big enough (256 samples through
 * 784-128-64-10 with the reference kernel, tens of ms) that a worker is
 * caught computing one, on 8,192 training samples in batches of 1,024.
 */

export const SLOW_TRAIN = 8_192;
export const SLOW_BATCH = 1_024;

/** Flags of a run of `epochs` epochs with the `--json` summary. */
export function slowRun(epochs: number, testLimit: number): string[] {
  return [
    "--kernel",
    "ref",
    "--layers",
    "784,128,64,10",
    "--batch",
    String(SLOW_BATCH),
    "--shards",
    "4",
    "--train-limit",
    String(SLOW_TRAIN),
    "--test-limit",
    String(testLimit),
    "--epochs",
    String(epochs),
    "--json",
  ];
}
