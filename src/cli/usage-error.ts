/**
 * The error of the command line: a bad flag, value or combination. The CLI
 * prints its message on one line and exits 2.
 */

/**
 * A mistake in the command line or the environment. The message is one line
 * that names the flag (and the environment variable when the value came from
 * there), the bad value and what is accepted; the CLI prints it as
 * `gradfleet: <message>` and exits with {@link UsageError.exitCode}.
 */
export class UsageError extends Error {
  /** The conventional exit code of a usage error. */
  readonly exitCode = 2;
  /** The flag at fault, e.g. `--epochs`, when there is one. */
  readonly flag?: string;
  /** The environment variable the bad value came from, when it did. */
  readonly envVar?: string;

  constructor(message: string, where: { flag?: string; envVar?: string } = {}) {
    super(message);
    this.name = "UsageError";
    this.flag = where.flag;
    this.envVar = where.envVar;
  }
}
