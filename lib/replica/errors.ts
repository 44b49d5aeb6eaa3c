import { errorMessage } from '../../queue/errors.js';

/**
 * A replica's target could not be read or written (down, refused, a dir that is not a directory).
 * Retried like any transient failure; the catch-up fills in whatever it missed once the target is back.
 */
export class ReplicaUnreachableError extends Error {
  override name = 'ReplicaUnreachableError';
  constructor(
    readonly dataset: string,
    readonly replica: string,
    readonly label: string,
    cause: unknown,
  ) {
    super(`cannot reach replica ${replica} (${label}) of dataset ${dataset}: ${errorMessage(cause)}`, { cause });
  }
}

/**
 * One or more replicas could not be brought up to date. Thrown after every replica was tried, so one
 * that is down neither hides nor holds back the others; retried, never a quiet success.
 */
export class ReplicationFailedError extends Error {
  override name = 'ReplicationFailedError';
  constructor(readonly failures: Array<{ dataset: string; replica: string; error: string }>) {
    super(`replication failed for ${failures.map((f) => `${f.dataset} → ${f.replica}: ${f.error}`).join('; ')}`);
  }
}
