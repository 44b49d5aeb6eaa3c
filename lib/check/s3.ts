import { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import type { S3TargetConfig } from '../config/schema.js';
import { createS3Client, s3ConnectionFromConfig } from '../targets/s3.js';
import { handlerTimeoutPhase, isUnreachable, s3ErrorCode, StalledRequestError } from '../targets/errors.js';
import { CHECK_TIMEOUT_MS } from './types.js';

/**
 * A client for one s3 target with the target's own connect timeout (capped at CHECK_TIMEOUT_MS) and an
 * idle timeout no longer than that: a check or `hub init` must fail fast on a hub that hangs.
 */
export function checkClient(target: S3TargetConfig): S3Client {
  return createS3Client({
    ...s3ConnectionFromConfig(target),
    connectTimeoutMs: Math.min(target.connectTimeoutMs, CHECK_TIMEOUT_MS),
    idleTimeoutMs: Math.min(target.idleTimeoutMs, CHECK_TIMEOUT_MS),
  });
}

/** Options for client.send: aborted after CHECK_TIMEOUT_MS in all. */
export function timed(): { abortSignal: AbortSignal } {
  return { abortSignal: AbortSignal.timeout(CHECK_TIMEOUT_MS) };
}

/** The S3 error code of a failed request, or undefined when the server did not answer at all. */
export function codeOf(err: unknown): string | undefined {
  return err instanceof S3ServiceException ? s3ErrorCode(err) : undefined;
}

export function statusOf(err: unknown): number | undefined {
  return err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
}

/**
 * What went wrong, in words that name no secret: the S3 code and status, "no answer within 10 s", or
 * the network error (ECONNREFUSED, …).
 */
export function describeFailure(err: unknown): string {
  if (err instanceof S3ServiceException) {
    const status = err.$metadata.httpStatusCode;
    return `${s3ErrorCode(err)}${status ? ` (HTTP ${status})` : ''}`;
  }
  if (err instanceof StalledRequestError) return `${err.phase === 'connect' ? 'no connection' : 'no answer'} within ${err.timeoutMs / 1000} s`;
  const phase = handlerTimeoutPhase(err);
  if (phase) return phase === 'connect' ? 'no connection within the connect timeout' : 'no answer within the idle timeout';
  const e = err as { name?: unknown; code?: unknown; message?: unknown };
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError') return `no answer within ${CHECK_TIMEOUT_MS / 1000} s`;
  for (let c: unknown = err, depth = 0; c && depth < 5; c = (c as { cause?: unknown }).cause, depth++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string') return `${code}${typeof (c as Error).message === 'string' && (c as Error).message !== code ? ` (${(c as Error).message})` : ''}`;
  }
  return typeof e?.message === 'string' ? e.message : String(err);
}

/** Whether the request never reached a server that answered (refused, unresolvable, timed out). */
export function noAnswer(err: unknown): boolean {
  if (err instanceof S3ServiceException) return false;
  const name = (err as { name?: unknown })?.name;
  return isUnreachable(err) || name === 'AbortError' || name === 'TimeoutError';
}
