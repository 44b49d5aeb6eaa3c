import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';

/** How long the startup check waits for Redis (connect and PING) before the command gives up. */
export const REDIS_CHECK_TIMEOUT_MS = 3000;
/** The longest pause between two reconnection attempts of a long-lived connection. */
export const RECONNECT_MAX_DELAY_MS = 5000;

/** Redis did not answer: at startup, or for a command bounded by a timeout. */
export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
  constructor(
    readonly url: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot reach Redis at ${url}: ${reason}`, options);
  }
}

/** The Redis URL for messages: a password in it is masked. */
export function redisUrlForDisplay(config: Config): string {
  try {
    const url = new URL(config.redis.url);
    if (url.password) url.password = '***';
    return url.toString().replace(/\/$/, '');
  } catch {
    return config.redis.url;
  }
}

/** Reconnection backoff: doubling from 100 ms, capped, never giving up (ioredis' retryStrategy). */
export function reconnectDelay(attempt: number): number {
  return Math.min(100 * 2 ** Math.min(attempt - 1, 16), RECONNECT_MAX_DELAY_MS);
}

/**
 * A long-lived connection suitable for BullMQ, which requires maxRetriesPerRequest: null: commands wait
 * through an outage instead of failing, and the connection reconnects by itself.
 */
export function createRedis(config: Config, options: { lazyConnect?: boolean } = {}): Redis {
  return new Redis(config.redis.url, {
    password: config.redis.password?.reveal(),
    maxRetriesPerRequest: null,
    retryStrategy: reconnectDelay,
    lazyConnect: options.lazyConnect,
  });
}

/**
 * Fails fast when Redis is not there. A separate short-lived connection: BullMQ's connections wait
 * forever by design, so a PING on one of them would hang instead of failing.
 */
export async function checkRedis(config: Config, timeoutMs = REDIS_CHECK_TIMEOUT_MS): Promise<void> {
  const url = redisUrlForDisplay(config);
  const probe = new Redis(config.redis.url, {
    password: config.redis.password?.reveal(),
    lazyConnect: true,
    connectTimeout: timeoutMs,
    // ioredis waits this long on disconnect() for a socket that is already closed (refused): 2 s by default, holding the process.
    disconnectTimeout: 0,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  // connect() itself only rejects with "Connection is closed."; the cause arrives as an 'error' event.
  let cause: Error | undefined;
  probe.on('error', (err: Error) => (cause ??= err));
  try {
    await bounded(probe.connect().then(() => probe.ping()), timeoutMs, `no answer within ${timeoutMs} ms`);
  } catch (err) {
    const reason = cause ?? (err as Error);
    throw new RedisUnavailableError(url, reason.message, { cause: reason });
  } finally {
    probe.disconnect();
  }
}

/** Waits for `promise` at most `timeoutMs`; then rejects with `reason` (the promise is left to settle). */
export function bounded<T>(promise: Promise<T>, timeoutMs: number, reason: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(reason)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs a command on a long-lived connection, but gives up after `timeoutMs`, and at once while the
 * connection waits to reconnect (the command would only sit in the offline queue).
 */
export async function withinTimeout<T>(redis: Redis, url: string, command: () => Promise<T>, timeoutMs: number): Promise<T> {
  if (redis.status === 'reconnecting' || redis.status === 'end' || redis.status === 'close') throw new RedisUnavailableError(url, `connection ${redis.status}`);
  try {
    return await bounded(command(), timeoutMs, `no answer within ${timeoutMs} ms`);
  } catch (err) {
    throw new RedisUnavailableError(url, (err as Error).message, { cause: err });
  }
}

const CONNECTION_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** Whether an error only says the connection is gone (which the watch reports), not what went wrong with a job. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === 'string' && CONNECTION_ERROR_CODES.has(e.code)) return true;
  return typeof e?.message === 'string' && /Connection is closed|connect ETIMEDOUT|Stream isn't writeable|ECONNREFUSED|ECONNRESET/.test(e.message);
}

/**
 * Follows the state of the process's main Redis connection and logs each change once, as a warning:
 * "Redis connection lost" (with the error) and "Redis connection restored". A drop that reconnects at
 * the first attempt logs nothing. Other emitters on the same Redis (BullMQ's queues and workers) report
 * their errors through `reportError`, so one outage is one pair of lines, not one per connection.
 */
export class RedisWatch {
  #lostReported = false;
  #closedSinceReady = false;
  readonly #onReconnect = new Set<() => void>();

  constructor(
    readonly redis: Redis,
    readonly url: string,
    private readonly logger: Logger,
  ) {
    redis.on('error', this.#error);
    redis.on('close', this.#close);
    redis.on('ready', this.#ready);
  }

  /** Whether the connection is ready for commands now. */
  get up(): boolean {
    return this.redis.status === 'ready';
  }

  /** Calls `listener` whenever the connection is ready again after it was closed. */
  onReconnect(listener: () => void): () => void {
    this.#onReconnect.add(listener);
    return () => this.#onReconnect.delete(listener);
  }

  /** An error from another emitter on this Redis: a symptom of an outage is debug, anything else a warning. */
  reportError(err: unknown, context: Record<string, unknown>): void {
    const message = err instanceof Error ? err.message : String(err);
    if (!this.up || isConnectionError(err)) this.logger.debug({ ...context, redis: this.url, err: message }, 'Redis error while the connection is down');
    else this.logger.warn({ ...context, redis: this.url, err: message }, 'Redis error');
  }

  close(): void {
    this.redis.off('error', this.#error);
    this.redis.off('close', this.#close);
    this.redis.off('ready', this.#ready);
    // ioredis prints any later 'error' it cannot deliver; the connection is being closed anyway.
    this.redis.on('error', () => {});
    this.#onReconnect.clear();
  }

  readonly #error = (err: Error): void => {
    if (this.#lostReported) return;
    this.#lostReported = true;
    this.logger.warn({ redis: this.url, err: err.message }, 'Redis connection lost');
  };

  readonly #close = (): void => {
    this.#closedSinceReady = true;
  };

  readonly #ready = (): void => {
    if (this.#lostReported) this.logger.warn({ redis: this.url }, 'Redis connection restored');
    this.#lostReported = false;
    if (!this.#closedSinceReady) return;
    this.#closedSinceReady = false;
    for (const listener of this.#onReconnect) listener();
  };
}

export function metricsKey(config: Config): string {
  return `${config.redis.prefix}:metrics`;
}

/** Held by the serve replica that rebuilds the metric state, so only one replays the targets. */
export function metricsRebuildKey(config: Config): string {
  return `${config.redis.prefix}:metrics-rebuild`;
}
