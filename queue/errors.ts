/**
 * Errors a handler can throw. Anything that is not a PermanentError is retried with backoff.
 */

/** Fails the job once: retrying cannot help (bad input, missing resource, forbidden, corrupt data). */
export class PermanentError extends Error {
  override name = 'PermanentError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The job payload did not match the function's input schema; the handler never ran. */
export class InvalidInputError extends PermanentError {
  override name = 'InvalidInputError';
  constructor(
    readonly fn: string,
    readonly problems: string[],
  ) {
    super(`invalid input for ${fn}: ${problems.join('; ')}`);
  }
}

/** A stored object does not match what its manifest promises. */
export class CorruptBackupError extends PermanentError {
  override name = 'CorruptBackupError';
  constructor(
    message: string,
    /** What was checked, good and bad, for a caller that prints it (the CLI's table). */
    readonly findings?: unknown,
  ) {
    super(message);
  }
}

/** A restore drill ran and failed; carries the drill record it wrote, so a caller prints this drill, not an older one. */
export class DrillFailedError extends PermanentError {
  override name = 'DrillFailedError';
  constructor(
    message: string,
    readonly record: unknown,
  ) {
    super(message);
  }
}

/** The handler ran past the function's timeout; retried like any transient failure. */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
  constructor(readonly timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms`);
  }
}

/** The process is shutting down; the job is left for another attempt. */
export class ShutdownError extends Error {
  override name = 'ShutdownError';
  constructor() {
    super('worker is shutting down');
  }
}

export function isPermanent(err: unknown): err is PermanentError {
  return err instanceof PermanentError;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
