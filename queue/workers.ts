import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Deps } from '../lib/plumbing/deps.js';
import { LockBusyError, RedisLocks, type Locks } from '../lib/plumbing/locks.js';
import type { AnyFunction } from './define.js';
import { errorMessage, isPermanent } from './errors.js';
import { recordFinalFailure, runFunction, type Emit } from './runner.js';

export interface WorkerGroupOptions {
  functions: readonly AnyFunction[];
  deps: Deps;
  emit: Emit;
  connection: Redis;
  prefix: string;
  /** How long close() lets running jobs finish before aborting them. */
  shutdownGraceMs: number;
  /** Dataset locks (default: in Redis on `connection`). */
  locks?: Locks;
  /** Where the workers' 'error' events go (default: a warning). The app routes them to its Redis watch. */
  onError?: (err: unknown, context: { fn: string }) => void;
  /** BullMQ's lock on a running job; a dead worker's job counts as stalled once it expires (default 30 s). */
  lockDurationMs?: number;
  /** How often workers look for stalled jobs (default 30 s). */
  stalledIntervalMs?: number;
  /** How often a job may stall (its worker died) and be retried before it fails for good (default 1). */
  maxStalledCount?: number;
}

/**
 * Whether a 'failed' job is done for good: out of attempts, or unrecoverable (a PermanentError, or BullMQ
 * failing a job that stalled more than maxStalledCount times).
 */
export function failedForGood(job: Job, err: Error): boolean {
  return err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
}

/** BullMQ's stall settings that were given; BullMQ takes an undefined one as a value, not as its default. */
function stallDetection(options: WorkerGroupOptions): { lockDuration?: number; stalledInterval?: number; maxStalledCount?: number } {
  return {
    ...(options.lockDurationMs !== undefined ? { lockDuration: options.lockDurationMs } : {}),
    ...(options.stalledIntervalMs !== undefined ? { stalledInterval: options.stalledIntervalMs } : {}),
    ...(options.maxStalledCount !== undefined ? { maxStalledCount: options.maxStalledCount } : {}),
  };
}

/** One BullMQ worker per function, sharing a shutdown signal. */
export class WorkerGroup {
  readonly workers: Worker[] = [];
  readonly #shutdown = new AbortController();
  readonly #locks: Locks;
  /** Failure metrics being written; close() waits for them. */
  readonly #recording = new Set<Promise<void>>();
  #closing: Promise<void> | undefined;
  #graceTimer: NodeJS.Timeout | undefined;
  /** The workers have stopped: nothing is left to abort. */
  #closed = false;

  constructor(private readonly options: WorkerGroupOptions) {
    this.#locks = options.locks ?? new RedisLocks(options.connection, options.prefix);
    for (const fn of options.functions) {
      const worker = new Worker(fn.name, (job: Job, token?: string) => this.#process(fn, job, token), {
        connection: options.connection,
        prefix: options.prefix,
        concurrency: fn.concurrency,
        autorun: true,
        ...stallDetection(options),
      });
      // Connection hiccups are retried by ioredis; report them instead of crashing on an unhandled 'error'.
      const onError = options.onError ?? ((err: unknown) => options.deps.logger.warn({ fn: fn.name, err: errorMessage(err) }, 'worker error'));
      worker.on('error', (err) => onError(err, { fn: fn.name }));
      // Every way a job ends for good passes here, a job whose worker died too often included.
      worker.on('failed', (job, err) => {
        if (job && failedForGood(job, err)) this.#recordFailure(fn, job, err);
      });
      this.workers.push(worker);
    }
  }

  async #process(fn: AnyFunction, job: Job, token: string | undefined): Promise<unknown> {
    try {
      return await runFunction(
        fn,
        job.data,
        {
          jobId: job.id ?? '?',
          attempt: job.attemptsMade + 1,
          maxAttempts: job.opts.attempts ?? 1,
          scheduledAt: job.repeatJobKey ? job.opts.prevMillis : undefined,
          createdAt: job.timestamp,
        },
        {
          deps: this.options.deps, emit: this.options.emit, shutdown: this.#shutdown.signal, locks: this.#locks, recordFailures: false,
          onProgress: (progress) => job.updateProgress({ ...progress }),
        },
      );
    } catch (err) {
      // Another job holds the dataset: come back later without spending an attempt.
      if (err instanceof LockBusyError) {
        await job.moveToDelayed(Date.now() + err.retryInMs, token);
        throw new DelayedError(err.message);
      }
      // BullMQ's way of saying "do not retry"; the message keeps our error's name.
      if (isPermanent(err)) throw new UnrecoverableError(errorMessage(err));
      throw err;
    }
  }

  #recordFailure(fn: AnyFunction, job: Job, err: Error): void {
    const { deps } = this.options;
    // The handler never ran (a job that stalled too often): nothing else logs this failure.
    if (job.deferredFailure) deps.logger.error({ fn: fn.name, jobId: job.id, err: err.message }, 'job failed');
    const recording = recordFinalFailure(fn, job.data, deps)
      .catch((e: unknown) => deps.logger.warn({ fn: fn.name, jobId: job.id, err: errorMessage(e) }, 'could not record failure metric'))
      .finally(() => this.#recording.delete(recording));
    this.#recording.add(recording);
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  /**
   * Stops taking jobs and lets running ones finish; after the grace period (or at once with `force`)
   * aborts them, so they fail retryably and run again elsewhere. With `waitForRunning` there is no grace
   * period (a config reload retires a group so); a later close() without it starts the grace period.
   */
  close(options: { force?: boolean; waitForRunning?: boolean } = {}): Promise<void> {
    if (options.force) this.#shutdown.abort();
    else if (!options.waitForRunning && !this.#closed) this.#graceTimer ??= setTimeout(() => this.#shutdown.abort(), this.options.shutdownGraceMs);
    this.#closing ??= (async () => {
      try {
        await Promise.all(this.workers.map((w) => w.close()));
      } finally {
        this.#closed = true;
        clearTimeout(this.#graceTimer);
      }
      await Promise.all(this.#recording);
    })();
    return this.#closing;
  }
}
