import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Deps } from '../lib/plumbing/deps.js';
import type { AnyFunction, Progress } from './define.js';
import { errorMessage, isPermanent } from './errors.js';
import { eventSchemas } from './events.js';
import { deliveriesFor } from './fanout.js';
import { runFunction, type Emit } from './runner.js';

export interface InlineResult {
  fn: string;
  jobId: string;
  ok: boolean;
  attempts: number;
  result?: unknown;
  error?: string;
  /** The error the last attempt threw, for callers that print what it carries (a drill record, verify findings). */
  failure?: unknown;
}

/** Retries for someone waiting at a terminal: `attempts` in all, a fixed `backoffMs` apart. */
export interface InlineRetries {
  attempts: number;
  backoffMs: number;
}

/** What the CLI's inline commands use unless told `--retries`: a function's production backoff is minutes. */
export const INLINE_RETRIES: InlineRetries = { attempts: 2, backoffMs: 2000 };

/** An attempt that failed and will be retried. */
export interface AttemptFailure {
  /** The function, or the step, that failed. */
  what: string;
  attempt: number;
  attempts: number;
  error: unknown;
  retryInMs: number;
}

/** "dumpPostgres attempt 1/2 failed: Error: …; retrying in 2 s", on one line (psql's messages span several). */
export function describeAttemptFailure(f: AttemptFailure): string {
  const message = errorMessage(f.error).replace(/\s*\n\s*/g, ' ');
  return `${f.what} attempt ${f.attempt}/${f.attempts} failed: ${message}; retrying in ${Math.round(f.retryInMs / 100) / 10} s`;
}

export interface RetryOptions {
  attempts: number;
  /** The delay before attempt `attempt + 1`. */
  delayMs: (attempt: number) => number;
  signal?: AbortSignal;
  onAttemptFailed?: (failure: AttemptFailure) => void;
}

/** Runs `step` until it succeeds, throws a PermanentError, runs out of attempts or is aborted; then throws the last error. */
export async function retrying<T>(what: string, step: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step(attempt);
    } catch (err) {
      if (isPermanent(err) || attempt >= options.attempts || options.signal?.aborted) throw err;
      const retryInMs = options.delayMs(attempt);
      options.onAttemptFailed?.({ what, attempt, attempts: options.attempts, error: err, retryInMs });
      await sleep(retryInMs, undefined, { signal: options.signal }).catch(() => {});
    }
  }
}

/**
 * Runs a function in this process without Redis, then everything its events fan out to, in order.
 * Same validation and dedupe as the queue runtime; retries as the function declares, or as `retries` says.
 * No dataset lock: nothing else runs in this process.
 */
export async function runInline(
  functions: readonly AnyFunction[],
  name: string,
  data: unknown,
  deps: Deps,
  options: { signal?: AbortSignal; maxBackoffMs?: number; retries?: InlineRetries; onAttemptFailed?: (failure: AttemptFailure) => void; onProgress?: (fn: string, progress: Progress) => void } = {},
): Promise<InlineResult[]> {
  const root = functions.find((f) => f.name === name);
  if (!root) throw new Error(`unknown function "${name}" (known: ${functions.map((f) => f.name).join(', ')})`);
  const pending: Array<{ fn: AnyFunction; data: unknown; jobId: string }> = [{ fn: root, data, jobId: `inline-${randomUUID()}` }];
  const seen = new Set<string>();
  const results: InlineResult[] = [];

  const emit: Emit = async (event, payload) => {
    eventSchemas[event].parse(payload);
    for (const d of deliveriesFor(functions, event, payload, deps.config)) {
      if (d.jobId && seen.has(d.jobId)) continue;
      if (d.jobId) seen.add(d.jobId);
      pending.push({ fn: d.fn, data: d.input, jobId: d.jobId ?? `inline-${randomUUID()}` });
    }
    await deps.metrics.onEvent(event, payload);
  };

  while (pending.length > 0) {
    const job = pending.shift()!;
    const createdAt = Date.now();
    const policy = options.retries;
    const maxAttempts = policy?.attempts ?? job.fn.retries.attempts;
    let attempts = 0;
    try {
      const result = await retrying(
        job.fn.name,
        (attempt) => {
          attempts = attempt;
          const onProgress = options.onProgress && ((p: Progress) => options.onProgress!(job.fn.name, p));
          return runFunction(job.fn, job.data, { jobId: job.jobId, attempt, maxAttempts, createdAt }, { deps, emit, shutdown: options.signal, onProgress });
        },
        {
          attempts: maxAttempts,
          delayMs: (attempt) => policy?.backoffMs ?? Math.min(job.fn.retries.backoffMs * 2 ** (attempt - 1), options.maxBackoffMs ?? Infinity),
          signal: options.signal,
          onAttemptFailed: options.onAttemptFailed,
        },
      );
      results.push({ fn: job.fn.name, jobId: job.jobId, ok: true, attempts, result });
    } catch (err) {
      results.push({ fn: job.fn.name, jobId: job.jobId, ok: false, attempts, error: errorMessage(err), failure: err });
    }
  }
  return results;
}
