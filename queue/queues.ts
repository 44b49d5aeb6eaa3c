import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, type JobState, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { tickStamp } from '../lib/catalog/layout.js';
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
export interface JobStatus {
  state: string;
  progress: unknown;
  attemptsMade: number;
  data: unknown;
  result?: unknown;
  failedReason?: string;
  finishedAt?: string;
}

export function jobOptions(fn: AnyFunction): JobsOptions {
  return {
    attempts: fn.retries.attempts,
    backoff: { type: 'exponential', delay: fn.retries.backoffMs },
    removeOnComplete: { age: 14 * DAY, count: 5000 },
    removeOnFail: { age: 30 * DAY, count: 5000 },
  };
}

/**
 * The job id of one tick of a function: `dumpPostgres-main-20261126T020000Z`, plus a hash of any other
 * input (a verify's --backup, a dry run), so only the same request twice is the same job.
 */
export function tickJobId(fnName: string, data: { dataset?: unknown; tick: string } & Record<string, unknown>): string {
  const { dataset, tick, ...rest } = data;
  const at = new Date(tick);
  if (Number.isNaN(at.getTime())) throw new InvalidInputError(fnName, [`tick: not a date-time: ${tick}`]);
  // Job ids must not contain ":"; dataset ids never do, but a hand-made payload might.
  const id = `${fnName}-${typeof dataset === 'string' ? encodeURIComponent(dataset) : 'all'}-${tickStamp(at)}`;
  const keys = Object.keys(rest).sort();
  if (keys.length === 0) return id;
  const canonical = JSON.stringify(keys.map((k) => [k, rest[k]]));
  return `${id}-${createHash('sha256').update(canonical).digest('hex').slice(0, 12)}`;
}

export interface TickEnqueued {
  job: Job;
  /** False when the job of this tick already existed: nothing was added. */
  created: boolean;
  state: JobState | 'unknown';
}

// queue.add() returns the id whether it made the job or found it; the first caller to mark the job
// made it, so of any number of concurrent callers exactly one hears `created`.
const CLAIM = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'lifeboatEnqueuedBy', ARGV[1])`;

// A scheduler's next run is the job `repeat:<scheduler id>:<its next millis>` (the score in the repeat
// set): counted while it is delayed. A scheduler's earlier run retrying after a backoff is not it.
const SCHEDULED_NEXT_RUNS = `local schedulers = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local n = 0
for i = 1, #schedulers, 2 do
  if redis.call('ZSCORE', KEYS[2], 'repeat:' .. schedulers[i] .. ':' .. schedulers[i + 1]) then n = n + 1 end
end
return n`;

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

  /** Adds a job after validating its payload, so bad input never becomes a job. A payload with a tick is one job per tick. */
  async enqueue(name: string, data: unknown, options: { jobId?: string } = {}): Promise<Job> {
    if (options.jobId === undefined && hasTick(data)) return (await this.enqueueTick(name, data)).job;
    const fn = this.validated(name, data);
    return this.queue(name).add(fn.name, data, { ...jobOptions(fn), jobId: options.jobId });
  }

  /**
   * Adds the job of one tick (what `lifeboat run` does), once: the same function, input and tick again,
   * from any process, finds the first job instead. Finished jobs are kept (jobOptions), so the id stays taken.
   */
  async enqueueTick(name: string, data: { tick: string } & Record<string, unknown>): Promise<TickEnqueued> {
    const fn = this.validated(name, data);
    const queue = this.queue(name);
    const jobId = tickJobId(fn.name, data);
    const added = await queue.add(fn.name, data, { ...jobOptions(fn), jobId });
    const created = (await this.connection.eval(CLAIM, 1, queue.toKey(jobId), randomUUID())) === 1;
    const job = created ? added : ((await Job.fromId(queue, jobId)) ?? added);
    return { job, created, state: await job.getState() };
  }

  /** A job's state as the web UI shows it, or undefined when there is no such job. */
  async jobStatus(name: string, jobId: string): Promise<JobStatus | undefined> {
    const job = await Job.fromId(this.queue(name), jobId);
    if (!job) return undefined;
    return {
      state: await job.getState(), progress: job.progress, attemptsMade: job.attemptsMade, data: job.data,
      ...(job.returnvalue !== undefined && job.returnvalue !== null ? { result: job.returnvalue } : {}),
      ...(job.failedReason ? { failedReason: job.failedReason } : {}),
      ...(job.finishedOn ? { finishedAt: new Date(job.finishedOn).toISOString() } : {}),
    };
  }

  private validated(name: string, data: unknown): AnyFunction {
    const fn = this.function(name);
    const parsed = fn.input.safeParse(data);
    if (!parsed.success) throw new InvalidInputError(fn.name, formatIssues(parsed.error));
    return fn;
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
  /** Polls the job until it ends; `onProgress` sees its progress (ctx.progress) on every poll while it runs. */
  async waitFor(name: string, jobId: string, timeoutMs: number, onProgress?: (progress: unknown) => void): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
      const job = await Job.fromId(this.queue(name), jobId);
      if (!job) throw new Error(`job ${jobId} not found in queue ${name}`);
      const state = await job.getState();
      if (state === 'active' && job.progress && typeof job.progress === 'object') onProgress?.(job.progress);
      // The job may have finished after it was read: read it again for its result.
      const done = state === 'completed' || state === 'failed' ? ((await Job.fromId(this.queue(name), jobId)) ?? job) : job;
      if (state === 'completed') return done.returnvalue;
      if (state === 'failed') throw new Error(done.failedReason);
      if (Date.now() >= deadline) throw new Error(`job ${name} ${jobId} did not finish within ${timeoutMs} ms (state: ${state})`);
      await sleep(delay);
    }
  }

  /**
   * Jobs per queue and state. A job scheduler keeps its next run as a delayed job, so BullMQ's `delayed`
   * counts every schedule as work to do; here `scheduled` is those next runs and `delayed` the rest
   * (retry backoffs, jobs added with a delay).
   */
  async depths(): Promise<QueueDepth[]> {
    return Promise.all(
      [...this.queues].map(async ([fn, queue]) => {
        const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children');
        const scheduled = Number(await this.connection.eval(SCHEDULED_NEXT_RUNS, 2, queue.toKey('repeat'), queue.toKey('delayed')));
        // Read apart from the counts: a run that became due in between must not make delayed negative.
        return { fn, counts: { ...counts, delayed: Math.max(0, (counts.delayed ?? 0) - scheduled), scheduled } };
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}

function hasTick(data: unknown): data is { tick: string } & Record<string, unknown> {
  return typeof (data as { tick?: unknown } | null)?.tick === 'string';
}
