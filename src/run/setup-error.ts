/**
 * The error of a run that cannot start as asked: a layer size that does not
 * fit the data, an output path that cannot be written, a checkpoint made by
 * another config. Raised before anything trains; the CLI prints its message
 * on one line and exits 2, as for a usage error.
 */

/** A run refused before it trains; {@link RunSetupError.flag} names the flag at fault. */
export class RunSetupError extends Error {
  override name = "RunSetupError";
  /** The flag at fault, e.g. `--layers`. */
  readonly flag?: string;

  constructor(message: string, where: { flag?: string } = {}) {
    super(message);
    this.flag = where.flag;
  }
}
