import { S3ServiceException } from '@aws-sdk/client-s3';
import { PermanentError } from '../../queue/errors.js';

/** Where a request went; every target error names all three, so an operator knows which hub and bucket to look at. */
export interface TargetLocation {
  target: string;
  endpoint: string;
  bucket: string;
}

/** What the request was, for the message: "GetObject nightly/main/…/manifest.json". */
export interface TargetRequest {
  operation: string;
  key?: string;
}

/** S3 error codes no retry can change: the bucket is gone, or the keys or permissions are wrong. */
const PERMANENT_CODES: Record<string, string> = {
  NoSuchBucket: 'the bucket does not exist',
  AccessDenied: 'these credentials may not do this (bucket policy or user permissions)',
  InvalidAccessKeyId: "the server does not know this access key; check the target's accessKeyId",
  SignatureDoesNotMatch: "the request signature does not match; check the target's secretAccessKey",
  Unauthorized: 'the server (or a proxy in front of it) wants other credentials',
  // A 403 or 404 without a code (HEAD responses have no body) cannot turn into a success either.
  Forbidden: 'access denied: wrong access key, wrong secret or a missing permission (a HEAD response names no reason)',
  NotFound: 'not found',
};

/** Node's codes for a server that cannot be reached or dropped the connection. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ETIMEDOUT']);

/** Names the SDK gives an error whose body it could not parse: not codes. */
const NOT_A_CODE = new Set(['Unknown', 'UnknownError', 'NotFound', 'Error', 'S3ServiceException']);

const STATUS_CODES: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict',
  411: 'LengthRequired', 412: 'PreconditionFailed', 416: 'InvalidRange', 500: 'InternalError', 502: 'BadGateway',
  503: 'ServiceUnavailable', 504: 'GatewayTimeout',
};

const seconds = (ms: number) => `${ms / 1000} s`;

function place(at: TargetLocation, request?: TargetRequest): string {
  const what = request ? `, ${request.operation}${request.key !== undefined ? ` ${request.key}` : ''}` : '';
  return `target ${at.target} (${at.endpoint}), bucket ${at.bucket}${what}`;
}

/** The S3 error code the server sent, else one derived from the HTTP status (RGW's HEAD errors have no parseable body). */
export function s3ErrorCode(err: S3ServiceException): string {
  const sent = (err as { Code?: unknown }).Code;
  if (typeof sent === 'string' && sent) return sent;
  if (!NOT_A_CODE.has(err.name)) return err.name;
  const status = err.$metadata.httpStatusCode;
  return status === undefined ? 'UnknownError' : (STATUS_CODES[status] ?? `HTTP${status}`);
}

/** "NoSuchBucket (HTTP 404)", plus the server's message when it says more than the code (the SDK's is often just "UnknownError"). */
export function describeS3Error(err: S3ServiceException): string {
  const code = s3ErrorCode(err);
  const status = err.$metadata.httpStatusCode;
  const informative = err.message && err.message !== code && err.message !== err.name && err.message !== 'UnknownError';
  return `${code}${status ? ` (HTTP ${status})` : ''}${informative ? `: ${err.message}` : ''}`;
}

/** The target refused the request in a way retrying cannot change: a missing bucket, unknown keys, no permission. */
export class TargetError extends PermanentError {
  override name = 'TargetError';
  readonly target: string;
  readonly endpoint: string;
  readonly bucket: string;
  constructor(
    at: TargetLocation,
    readonly code: string,
    readonly httpStatus: number | undefined,
    request?: TargetRequest,
    options?: { cause?: unknown },
  ) {
    super(`${place(at, request)}: ${code} (HTTP ${httpStatus ?? 'status unknown'}): ${PERMANENT_CODES[code] ?? 'refused'}`, options);
    ({ target: this.target, endpoint: this.endpoint, bucket: this.bucket } = at);
  }
}

/** Any other error response (5xx, throttling, an unexpected 4xx): retried like any transient failure, but named. */
export class TargetRequestError extends Error {
  override name = 'TargetRequestError';
  readonly target: string;
  readonly endpoint: string;
  readonly bucket: string;
  constructor(
    at: TargetLocation,
    readonly code: string,
    readonly httpStatus: number | undefined,
    detail: string,
    request?: TargetRequest,
    options?: { cause?: unknown },
  ) {
    super(`${place(at, request)}: ${detail}`, options);
    ({ target: this.target, endpoint: this.endpoint, bucket: this.bucket } = at);
  }
}

/** The target could not be reached or dropped the connection (ECONNREFUSED, ENOTFOUND, …). Retryable: the hub may be back soon. */
export class TargetUnreachableError extends Error {
  override name = 'TargetUnreachableError';
  readonly target: string;
  readonly endpoint: string;
  readonly bucket: string;
  constructor(
    at: TargetLocation,
    /** ECONNREFUSED, ENOTFOUND, … or "timeout". */
    readonly causeCode: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    ({ target: this.target, endpoint: this.endpoint, bucket: this.bucket } = at);
  }
}

/** A request got no connection, or no bytes for too long, and was aborted. Retryable, like any unreachable target. */
export class TargetTimeoutError extends TargetUnreachableError {
  override name = 'TargetTimeoutError';
  constructor(
    at: TargetLocation,
    readonly phase: 'connect' | 'idle',
    readonly timeoutMs: number,
    request?: TargetRequest,
    options?: { cause?: unknown },
  ) {
    const what = request ? ` (${request.operation}${request.key !== undefined ? ` ${request.key}` : ''})` : '';
    super(
      at,
      'timeout',
      phase === 'connect'
        ? `could not connect to target ${at.target} (${at.endpoint}) within ${seconds(timeoutMs)}, bucket ${at.bucket}${what}`
        : `timed out after ${seconds(timeoutMs)} without data from target ${at.target} (${at.endpoint}), bucket ${at.bucket}${what}`,
      options,
    );
  }
}

/**
 * A request hit the HTTP handler's connect or idle timeout. Thrown in place of the handler's TimeoutError
 * so the SDK does not retry it: a hung hub would otherwise hold each request for three timeouts in a row.
 * The handler's error is kept as `handlerError`, not as `cause`: the SDK's retry check follows `cause`.
 */
export class StalledRequestError extends Error {
  override name = 'StalledRequestError';
  constructor(
    readonly phase: 'connect' | 'idle',
    readonly timeoutMs: number,
    readonly handlerError: Error,
  ) {
    super(handlerError.message);
  }
}

/**
 * The HTTP handler's own connect or idle timeout. @smithy/node-http-handler names those TimeoutError,
 * but also renames socket errors (ECONNRESET, EPIPE, ETIMEDOUT) so; those keep their errno code.
 */
export function handlerTimeoutPhase(err: unknown): 'connect' | 'idle' | undefined {
  if (!(err instanceof Error) || err.name !== 'TimeoutError' || err instanceof S3ServiceException) return undefined;
  if ((err as NodeJS.ErrnoException).code !== undefined) return undefined;
  return /establish a connection/.test(err.message) ? 'connect' : 'idle';
}

function networkCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code && UNREACHABLE_CODES.has(code)) return code;
  }
  return undefined;
}

export interface ClassifyOptions {
  request?: TargetRequest;
  timeouts: { connectTimeoutMs: number; idleTimeoutMs: number };
}

/**
 * The one place S3 failures get their meaning: permanent (TargetError) where retrying cannot help,
 * retryable and named otherwise. Errors that are not the target's (a body's own, an abort, an already
 * classified one) come back unchanged. A missing object is the caller's to recognise before calling this.
 */
export function classifyS3Error(err: unknown, at: TargetLocation, options: ClassifyOptions): unknown {
  const { request } = options;
  if (err instanceof TargetError || err instanceof TargetRequestError || err instanceof TargetUnreachableError) return err;
  if (err instanceof StalledRequestError) return new TargetTimeoutError(at, err.phase, err.timeoutMs, request, { cause: err.handlerError });
  const phase = handlerTimeoutPhase(err);
  if (phase) return new TargetTimeoutError(at, phase, phase === 'connect' ? options.timeouts.connectTimeoutMs : options.timeouts.idleTimeoutMs, request, { cause: err });
  if (err instanceof S3ServiceException) {
    const code = s3ErrorCode(err);
    const status = err.$metadata.httpStatusCode;
    if (Object.hasOwn(PERMANENT_CODES, code)) return new TargetError(at, code, status, request, { cause: err });
    return new TargetRequestError(at, code, status, describeS3Error(err), request, { cause: err });
  }
  const unreachable = networkCode(err);
  if (unreachable) {
    const detail = err instanceof Error && err.message ? ` (${err.message})` : '';
    return new TargetUnreachableError(at, unreachable, `cannot reach target ${at.target} (${at.endpoint}), bucket ${at.bucket}: ${unreachable}${detail}`, { cause: err });
  }
  return err;
}

/** Whether a failure says the server is gone or hung, not that one object is bad: a run should stop, not go on object by object. */
export function isUnreachable(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof TargetUnreachableError || e instanceof StalledRequestError || handlerTimeoutPhase(e) !== undefined) return true;
  }
  return networkCode(err) !== undefined;
}
