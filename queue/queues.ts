import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { formatIssues } from '../lib/config/issues.js';
import type { Config } from '../lib/config/schema.js';
import type { MetricsRecorder } from '../lib/metrics/recorder.js';
import type { QueueDepth } from '../lib/metrics/exporter.js';
import type { AnyFunction } from './define.js';
import { InvalidInputError } from './errors.js';
import { eventSchemas } from './events.js';
import { deliveriesFor } from './fanout.js';
import type { Emit } from './runner.js';

const DAY = 24 * 3600;

/** Retry policy and retention of finished jobs. Finished jobs are kept so that dedupe ids stay taken. */
export function jobOptions(fn: AnyFunction): JobsOptions {
  return {
    attempts: fn.retries.attempts,
    backoff: { type: 'exponential', delay: fn.retries.backoffMs },
    removeOnComplete: { age: 14 * DAY, count: 5000 },
    removeOnFail: { age: 30 * DAY, count: 5000 },
  };
}

/** One BullMQ queue per function, named after it. */
export class QueueSet {
  readonly queues = new Map<string, Queue>();

  constructor(
    readonly functions: readonly AnyFunction[],
    readonly connection: Redis,
    readonly prefix: string,
  ) {
    for (const fn of functions) this.queues.set(fn.name, new Queue(fn.name, { connection, prefix }));
  }

  queue(name: string): Queue {
    const queue = this.queues.get(name);
    if (!queue) throw new Error(`unknown function "${name}" (known: ${[...this.queues.keys()].join(', ')})`);
    return queue;
  }

  function(name: string): AnyFunction {
    const fn = this.functions.find((f) => f.name === name);
    if (!fn) throw new Error(`unknown function "${name}" (known: ${this.functions.map((f) => f.name).join(', ')})`);
    return fn;
  }

  /** Adds a job after validating its payload, so bad input never becomes a job. */
  async enqueue(name: string, data: unknown, options: { jobId?: string } = {}) {
    const fn = this.function(name);
    const parsed = fn.input.safeParse(data);
    if (!parsed.success) throw new InvalidInputError(fn.name, formatIssues(parsed.error));
    return this.queue(name).add(fn.name, data, { ...jobOptions(fn), jobId: options.jobId });
  }

  /** Fan-out through the queues: one (deduplicated) job per subscriber, and the metrics recorder. */
  emitter(config: Config, recorder: MetricsRecorder): Emit {
    return async (event, payload) => {
      eventSchemas[event].parse(payload);
      for (const delivery of deliveriesFor(this.functions, event, payload, config)) {
        await this.queue(delivery.fn.name).add(delivery.fn.name, delivery.input, { ...jobOptions(delivery.fn), jobId: delivery.jobId });
      }
      await recorder.onEvent(event, payload);
    };
  }

  /**
   * Waits until a job completes (its return value) or fails for good (its failure reason, thrown).
   * Polls the job's state: QueueEvents can miss an event that lands while its first read is being set up.
   */
  async waitFor(name: string, jobId: string, timeoutMs: number): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
      const job = await Job.fromId(this.queue(name), jobId);
      if (!job) throw new Error(`job ${jobId} not found in queue ${name}`);
      const state = await job.getState();
      // The job may have finished after it was read: read it again for its result.
      const done = state === 'completed' || state === 'failed' ? ((await Job.fromId(this.queue(name), jobId)) ?? job) : job;
      if (state === 'completed') return done.returnvalue;
      if (state === 'failed') throw new Error(done.failedReason);
      if (Date.now() >= deadline) throw new Error(`job ${name} ${jobId} did not finish within ${timeoutMs} ms (state: ${state})`);
      await sleep(delay);
    }
  }

  async depths(): Promise<QueueDepth[]> {
    return Promise.all(
      [...this.queues].map(async ([fn, queue]) => ({
        fn,
        counts: await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children'),
      })),
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
