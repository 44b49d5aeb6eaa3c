/** Exit codes: what a script calling lifeboat can rely on. */
export const EXIT = {
  ok: 0,
  /** A job or check ran and failed (including a corrupt backup). */
  failed: 1,
  /** Bad command line or bad config: nothing ran. */
  usage: 2,
  /** A service Lifeboat needs (Redis, the target) could not be reached. */
  unavailable: 3,
} as const;

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}
