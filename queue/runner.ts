import { setMaxListeners } from 'node:events';
import { formatIssues } from '../lib/config/issues.js';
import type { Deps } from '../lib/plumbing/deps.js';
import { LockBusyError, type Lease, type Locks } from '../lib/plumbing/locks.js';
import type { AnyFunction, Ctx, Progress } from './define.js';
import { InvalidInputError, ShutdownError, TimeoutError, errorMessage, isPermanent } from './errors.js';
import { eventSchemas, type EventName, type EventPayload } from './events.js';

/** Delivers an event to its subscribers; the queue runtime and the inline runtime each provide one. */
export type Emit = <E extends EventName>(event: E, payload: EventPayload<E>) => Promise<void>;

export interface JobMeta {
  jobId: string;
  attempt: number;
  maxAttempts: number;
  /** When a job scheduler planned this run (ms), if it came from one. */
  scheduledAt?: number;
  /** When the job was created (ms). */
  createdAt: number;
}

export interface RunContext {
  deps: Deps;
  emit: Emit;
  /** Aborts running handlers when the process stops. */
  shutdown?: AbortSignal;
  /** Where functions with `lock: 'dataset'` take their lock; absent inline, where nothing runs beside the run. */
  locks?: Locks;
  /**
   * Whether runFunction counts a failure that ends the job for good (default: yes, for inline runs, which
   * also stop at shutdown). The queue runtime says no: it counts from BullMQ's 'failed' event, which
   * also sees the jobs no attempt reports (a job whose worker died too often).
   */
  recordFailures?: boolean;
  /** Where ctx.progress goes, at most once per PROGRESS_INTERVAL_MS (the last report always arrives). */
  onProgress?: (progress: Progress) => Promise<void> | void;
}

/** Progress reports are coalesced to one per second: a mirror reports per object, Redis needs no more. */
export const PROGRESS_INTERVAL_MS = 1000;

/** ctx.progress: leading and trailing throttle, errors logged (progress never fails a job). */
function progressReporter(sink: RunContext['onProgress'], log: Ctx['log']): { report: (p: Progress) => void; flush: () => Promise<void> } {
  let last = 0;
  let pending: Progress | undefined;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();
  const send = () => {
    timer = undefined;
    const p = pending;
    pending = undefined;
    if (!p || !sink) return;
    last = Date.now();
    inFlight = Promise.resolve(sink(p)).catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'could not report progress'));
  };
  return {
    report(p) {
      if (!sink) return;
      pending = p;
      if (timer) return;
      const wait = last + PROGRESS_INTERVAL_MS - Date.now();
      if (wait <= 0) send();
      else timer = setTimeout(send, wait);
    },
    async flush() {
      if (timer) clearTimeout(timer);
      send();
      await inFlight;
    },
  };
}

/**
 * Counts a job that failed for good: lifeboat_job_failures_total{fn} and, for a job of a configured
 * dataset, its last-failure time. A dataset this config lacks is counted under the function only.
 */
export async function recordFinalFailure(fn: AnyFunction, data: unknown, deps: Deps): Promise<void> {
  const parsed = fn.input.safeParse(data);
  const id = parsed.success ? (parsed.data as { dataset?: unknown }).dataset : undefined;
  const dataset = deps.config.datasets.find((d) => d.id === id);
  await deps.metrics.jobFailed(fn.name, dataset && { id: dataset.id, kind: dataset.kind }, deps.clock());
}

/** The tick a run belongs to: an explicit `tick` in the payload, else the scheduler's slot, else creation time. */
export function tickOf(data: unknown, meta: Pick<JobMeta, 'scheduledAt' | 'createdAt'>): Date {
  const explicit = (data as { tick?: unknown } | null)?.tick;
  if (typeof explicit === 'string' && !Number.isNaN(Date.parse(explicit))) return new Date(explicit);
  return new Date(meta.scheduledAt ?? meta.createdAt);
}

/**
 * Runs one attempt of a function: validate the payload, build ctx, enforce the timeout. The payload is
 * unknown until the function's schema accepts it; if it does not, the handler never runs.
 */
export async function runFunction(fn: AnyFunction, data: unknown, meta: JobMeta, run: RunContext): Promise<unknown> {
  const parsed = fn.input.safeParse(data);
  if (!parsed.success) {
    const error = new InvalidInputError(fn.name, formatIssues(parsed.error));
    run.deps.logger.error({ fn: fn.name, jobId: meta.jobId, problems: error.problems }, 'invalid job payload; handler not called');
    if (run.recordFailures !== false) await recordFinalFailure(fn, data, run.deps).catch(() => {});
    throw error;
  }
  const input = parsed.data as Record<string, unknown>;
  const dataset = typeof input.dataset === 'string' ? input.dataset : undefined;
  const log = run.deps.logger.child({ fn: fn.name, jobId: meta.jobId, dataset, attempt: meta.attempt });
  // Before the try below: a busy lock is no failure, the job just runs later.
  const lease = fn.lock === 'dataset' && dataset && run.locks ? await lockDataset(run.locks, dataset, `${fn.name} job ${meta.jobId}`, log) : undefined;

  const controller = new AbortController();
  // Every in-flight request listens on the signal; a mirror has dozens at once.
  setMaxListeners(1000, controller.signal);
  const timer = setTimeout(() => controller.abort(new TimeoutError(fn.timeoutMs)), fn.timeoutMs);
  const onShutdown = () => controller.abort(new ShutdownError());
  if (run.shutdown?.aborted) onShutdown();
  run.shutdown?.addEventListener('abort', onShutdown, { once: true });
  const aborted = new Promise<never>((_, reject) => {
    controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
  });
  aborted.catch(() => {});
  lease?.lost.addEventListener('abort', () => controller.abort(lease.lost.reason), { once: true });

  const progress = progressReporter(run.onProgress, log);
  const ctx: Ctx = {
    fn: fn.name,
    jobId: meta.jobId,
    attempt: meta.attempt,
    maxAttempts: meta.maxAttempts,
    tick: tickOf(data, meta),
    log,
    signal: controller.signal,
    deps: run.deps,
    emit: async (event, payload) => {
      const checked = eventSchemas[event].parse(payload) as typeof payload;
      log.debug({ event }, 'emit');
      await run.emit(event, checked);
    },
    progress: (p) => progress.report(p),
  };

  const started = Date.now();
  log.info({ maxAttempts: meta.maxAttempts, tick: ctx.tick.toISOString() }, 'job started');
  try {
    // The race makes the timeout hold even for a handler that ignores its signal.
    const result = await Promise.race([fn.handler(input, ctx), aborted]);
    log.info({ durationMs: Date.now() - started }, 'job succeeded');
    return result;
  } catch (caught) {
    const err = controller.signal.aborted && !isPermanent(caught) ? controller.signal.reason : caught;
    const final = isPermanent(err) || meta.attempt >= meta.maxAttempts;
    log.error({ durationMs: Date.now() - started, err: errorMessage(err), final }, final ? 'job failed' : 'job attempt failed; will retry');
    // An inline run ends for good at shutdown too; it is not retried elsewhere.
    if (run.recordFailures !== false && (final || run.shutdown?.aborted)) {
      await recordFinalFailure(fn, data, run.deps).catch((e: unknown) => log.warn({ err: errorMessage(e) }, 'could not record failure metric'));
    }
    throw err;
  } finally {
    clearTimeout(timer);
    await progress.flush();
    run.shutdown?.removeEventListener('abort', onShutdown);
    // Left alone it expires after its TTL; releasing lets the next job of the dataset start now.
    await lease?.release().catch((e: unknown) => log.warn({ err: errorMessage(e) }, 'could not release the dataset lock'));
  }
}

async function lockDataset(locks: Locks, dataset: string, owner: string, log: Ctx['log']): Promise<Lease> {
  const name = `dataset:${dataset}`;
  const lease = await locks.acquire(name, owner);
  if (lease) return lease;
  const busy = new LockBusyError(name, await locks.holder(name).catch(() => undefined), locks.busyRetryMs);
  log.debug({ holder: busy.holder }, busy.message);
  throw busy;
}
