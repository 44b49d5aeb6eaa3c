import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Deps } from '../lib/plumbing/deps.js';
import type { AnyFunction } from './define.js';
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

/**
 * Runs a function in this process without Redis, then everything its events fan out to, in order.
 * Same validation, retries and dedupe as the queue runtime.
 */
export async function runInline(
  functions: readonly AnyFunction[],
  name: string,
  data: unknown,
  deps: Deps,
  options: { signal?: AbortSignal; maxBackoffMs?: number } = {},
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
    let attempt = 0;
    for (;;) {
      attempt += 1;
      try {
        const result = await runFunction(job.fn, job.data, { jobId: job.jobId, attempt, maxAttempts: job.fn.retries.attempts, createdAt }, { deps, emit, shutdown: options.signal });
        results.push({ fn: job.fn.name, jobId: job.jobId, ok: true, attempts: attempt, result });
        break;
      } catch (err) {
        if (isPermanent(err) || attempt >= job.fn.retries.attempts || options.signal?.aborted) {
          results.push({ fn: job.fn.name, jobId: job.jobId, ok: false, attempts: attempt, error: errorMessage(err), failure: err });
          break;
        }
        const delay = Math.min(job.fn.retries.backoffMs * 2 ** (attempt - 1), options.maxBackoffMs ?? Infinity);
        await sleep(delay, undefined, { signal: options.signal }).catch(() => {});
      }
    }
  }
  return results;
}
