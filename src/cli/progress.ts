/**
 * Progress output: a one-line bar on a TTY (epoch, step, loss, samples/s),
 * redrawn at most ten times a second on stderr; one line per epoch with the
 * test accuracy on stdout in every case.
 */
import type { EpochInfo, StepInfo } from "../core/trainer.js";

/** Reports training progress to the terminal. */
export class Progress {
  private lastDraw = 0;
  private windowStart = performance.now();
  private windowSamples = 0;
  private rate = 0;
  private readonly tty: boolean;

  constructor(
    private readonly epochs: number,
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly bar: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(bar.isTTY);
  }

  /** After every step. */
  step(info: StepInfo): void {
    this.windowSamples += info.batchSamples;
    const now = performance.now();
    if (now - this.windowStart >= 1000) {
      this.rate = (this.windowSamples * 1000) / (now - this.windowStart);
      this.windowStart = now;
      this.windowSamples = 0;
    }
    if (!this.tty || now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const frac = (info.step + 1) / info.stepsPerEpoch;
    const width = 24;
    const filled = Math.round(frac * width);
    const line =
      `epoch ${info.epoch + 1}/${this.epochs} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ` +
      `step ${info.step + 1}/${info.stepsPerEpoch} loss ${info.loss.toFixed(4)} ${Math.round(this.rate)} samples/s`;
    this.bar.write(`\r${line}\x1b[K`);
  }

  /** After every epoch's evaluation. */
  epoch(info: EpochInfo): void {
    if (this.tty) this.bar.write("\r\x1b[K");
    const sps = info.trainSeconds > 0 ? Math.round(info.samples / info.trainSeconds) : 0;
    this.out.write(
      `epoch ${info.epoch + 1}/${this.epochs}: train cost ${info.trainCost.toFixed(4)}, ` +
        `test accuracy ${(info.test.accuracy * 100).toFixed(2)}% (${info.test.correct}/${info.test.n}), ` +
        `test cost ${info.test.cost.toFixed(4)}, ${sps} samples/s\n`,
    );
  }

  /** Clears the bar (before other output). */
  clear(): void {
    if (this.tty) this.bar.write("\r\x1b[K");
  }
}
