import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Deps } from '../lib/plumbing/deps.js';
import type { Config, Dataset } from '../lib/config/schema.js';
import type { EventName, EventPayload } from './events.js';

/** What a handler gets besides its validated input. */
export interface Ctx {
  fn: string;
  jobId: string;
  /** 1 on the first try. */
  attempt: number;
  maxAttempts: number;
  /** The scheduled tick this run belongs to; object keys derive from it so a re-run overwrites. */
  tick: Date;
  log: Logger;
  /** Fires on timeout and on shutdown. Pass it to every stream and request. */
  signal: AbortSignal;
  /** Fan-out: reaches every function subscribed to the event, and the metrics recorder. */
  emit<E extends EventName>(event: E, payload: EventPayload<E>): Promise<void>;
  /** How far the run is; the queue runtime shows it as the job's progress (Bull Board, the web UI). Cheap to call often. */
  progress(progress: Progress): void;
  deps: Deps;
}

/** A running job's progress: what it is doing and how much of it is done. */
export interface Progress {
  phase: string;
  bytes?: number;
  /** The bytes the phase will have read or written in all, when known. */
  total?: number;
  objects?: number;
  totalObjects?: number;
}

/** One schedule entry produced by a cron trigger. */
export interface CronEntry {
  /** Stable id: the scheduler is upserted under it and removed when it disappears from config. */
  id: string;
  pattern: string;
  input: Record<string, unknown>;
}

export type Trigger<I> =
  | { cron: (config: Config) => CronEntry[] }
  | {
      event: EventName;
      /** Maps the event payload to this function's input (default: the payload itself). */
      input?: (payload: any) => unknown;
      /** Events with the same key run the function once. */
      dedupe?: (payload: any) => string;
      /** Skip events this function does not care about. */
      filter?: (payload: any, config: Config) => boolean;
    };

export interface RetryPolicy {
  attempts: number;
  /** First retry delay; doubles each attempt. */
  backoffMs: number;
}

export interface FunctionDefinition<S extends z.ZodType = z.ZodType, R = unknown> {
  name: string;
  description: string;
  input: S;
  triggers: Trigger<z.infer<S>>[];
  retries: RetryPolicy;
  concurrency: number;
  timeoutMs: number;
  /** The dataset kinds it takes (absent: any); `run` refuses another kind before a job exists. */
  kinds?: readonly Dataset['kind'][];
  /**
   * 'dataset': one job per dataset at a time, whatever its tick or origin (schedule, `run`). The queue
   * runtime holds a lock in Redis while the handler runs; inline runs take none.
   */
  lock?: 'dataset';
  handler: (input: z.infer<S>, ctx: Ctx) => Promise<R>;
}

export type AnyFunction = FunctionDefinition<any, any>;

export function defineFunction<S extends z.ZodType, R>(def: FunctionDefinition<S, R>): FunctionDefinition<S, R> {
  if (!/^[a-zA-Z][a-zA-Z0-9]*$/.test(def.name)) throw new Error(`function name ${JSON.stringify(def.name)} must be alphanumeric`);
  if (def.retries.attempts < 1) throw new Error(`${def.name}: retries.attempts must be at least 1`);
  return def;
}

/** Why `fn` cannot take `dataset` (naming both), or undefined if it can. */
export function datasetKindMismatch(fn: AnyFunction, dataset: Pick<Dataset, 'id' | 'kind'>): string | undefined {
  if (!fn.kinds || fn.kinds.includes(dataset.kind)) return undefined;
  return `${fn.name} takes ${fn.kinds.join(' or ')} datasets, but dataset "${dataset.id}" is a ${dataset.kind} dataset`;
}

/** A cron trigger with one scheduler per dataset of `kind` that has a schedule. */
export function cronPerDataset(kind: Dataset['kind'], schedule: (dataset: Dataset) => string | undefined = (d) => ('schedule' in d ? d.schedule : undefined)) {
  return {
    cron: (config: Config): CronEntry[] =>
      config.datasets.flatMap((dataset) => {
        const pattern = dataset.kind === kind ? schedule(dataset) : undefined;
        return pattern ? [{ id: dataset.id, pattern, input: { dataset: dataset.id } }] : [];
      }),
  };
}
