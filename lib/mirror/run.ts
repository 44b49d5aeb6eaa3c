/** What a mirror run and a bucket restore both keep while they go: tallies, failures, a sample, when to stop. */
import type { Logger } from 'pino';
import { TargetUnreachableError } from '../targets/errors.js';
import type { S3Store } from '../targets/s3.js';

export interface Tally {
  count: number;
  bytes: number;
}

export const tally = (): Tally => ({ count: 0, bytes: 0 });

export function add(t: Tally, size: number): void {
  t.count += 1;
  t.bytes += size;
}

export interface Failures {
  count: number;
  first: Array<{ key: string; error: string }>;
}

/** Counts a failed object and keeps the first 100 with their error. */
export function recordFailure(failed: Failures, log: Logger, key: string, error: string): void {
  failed.count += 1;
  if (failed.first.length < 100) failed.first.push({ key, error });
  log.warn({ key, err: error }, 'object failed');
}

/** A run stopped because a side stopped answering; retryable, naming both sides. */
export class MirrorStoppedError extends Error {
  override name = 'MirrorStoppedError';
}

/**
 * The error that ends a run: a hung or gone side ends it (retried by policy) instead of failing object
 * after object. An unreachable target or an abort is passed on as it is.
 */
export function stopError(err: unknown, message: string, sides: Record<string, S3Store>, signal?: AbortSignal): unknown {
  if (err instanceof TargetUnreachableError || signal?.aborted) return err;
  const where = Object.entries(sides).map(([name, store]) => `${name} ${store.label} (${store.endpoint})`).join(', ');
  return new MirrorStoppedError(`${message}; ${where}`, { cause: err });
}

/** A uniform random sample of up to `size` items in constant memory (reservoir sampling). */
export class Reservoir<T> {
  readonly items: T[] = [];
  private seen = 0;

  constructor(private readonly size: number) {}

  offer(item: T): void {
    this.seen += 1;
    if (this.items.length < this.size) this.items.push(item);
    else if (this.size > 0 && Math.random() * this.seen < this.size) this.items[Math.floor(Math.random() * this.size)] = item;
  }
}
