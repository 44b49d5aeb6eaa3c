import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Deps } from '../lib/plumbing/deps.js';
import type { AnyFunction } from './define.js';
import { errorMessage, isPermanent } from './errors.js';
import { runFunction, type Emit } from './runner.js';

export interface WorkerGroupOptions {
  functions: readonly AnyFunction[];
  deps: Deps;
  emit: Emit;
  connection: Redis;
  prefix: string;
  /** How long close() lets running jobs finish before aborting them. */
  shutdownGraceMs: number;
}

/** One BullMQ worker per function, sharing a shutdown signal. */
export class WorkerGroup {
  readonly workers: Worker[] = [];
  readonly #shutdown = new AbortController();
  #closing: Promise<void> | undefined;

  constructor(private readonly options: WorkerGroupOptions) {
    for (const fn of options.functions) {
      const worker = new Worker(fn.name, (job: Job) => this.#process(fn, job), {
        connection: options.connection,
        prefix: options.prefix,
        concurrency: fn.concurrency,
        autorun: true,
      });
      // Connection hiccups are retried by ioredis; log them instead of crashing on an unhandled 'error'.
      worker.on('error', (err) => options.deps.logger.warn({ fn: fn.name, err: errorMessage(err) }, 'worker error'));
      this.workers.push(worker);
    }
  }

  async #process(fn: AnyFunction, job: Job): Promise<unknown> {
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
        { deps: this.options.deps, emit: this.options.emit, shutdown: this.#shutdown.signal },
      );
    } catch (err) {
      // BullMQ's way of saying "do not retry"; the message keeps our error's name.
      if (isPermanent(err)) throw new UnrecoverableError(errorMessage(err));
      throw err;
    }
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  /**
   * Stops taking jobs and lets running ones finish; after the grace period (or at once with `force`)
   * aborts them, so they fail retryably and run again elsewhere.
   */
  close(options: { force?: boolean } = {}): Promise<void> {
    if (options.force) this.#shutdown.abort();
    this.#closing ??= (async () => {
      const timer = setTimeout(() => this.#shutdown.abort(), this.options.shutdownGraceMs);
      try {
        await Promise.all(this.workers.map((w) => w.close()));
      } finally {
        clearTimeout(timer);
      }
    })();
    return this.#closing;
  }
}
