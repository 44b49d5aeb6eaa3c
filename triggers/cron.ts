import type { Logger } from 'pino';
import type { Config } from '../lib/config/schema.js';
import type { AnyFunction } from '../queue/define.js';
import { jobOptions, type QueueSet } from '../queue/queues.js';

export interface SchedulerSync {
  upserted: Array<{ fn: string; id: string; pattern: string }>;
  removed: Array<{ fn: string; id: string }>;
}

/**
 * Makes each function's BullMQ job schedulers equal to what the config asks for: upserts every cron
 * entry (in the configured time zone) and removes schedulers that are no longer configured.
 */
export async function syncSchedulers(functions: readonly AnyFunction[], config: Config, queues: QueueSet, logger: Logger): Promise<SchedulerSync> {
  const result: SchedulerSync = { upserted: [], removed: [] };
  for (const fn of functions) {
    const queue = queues.queue(fn.name);
    const wanted = fn.triggers.flatMap((t) => ('cron' in t ? t.cron(config) : []));
    for (const entry of wanted) {
      await queue.upsertJobScheduler(
        entry.id,
        { pattern: entry.pattern, tz: config.server.timezone },
        { name: fn.name, data: entry.input, opts: jobOptions(fn) },
      );
      result.upserted.push({ fn: fn.name, id: entry.id, pattern: entry.pattern });
    }
    const keep = new Set(wanted.map((e) => e.id));
    for (const existing of await queue.getJobSchedulers()) {
      if (!keep.has(existing.key)) {
        await queue.removeJobScheduler(existing.key);
        result.removed.push({ fn: fn.name, id: existing.key });
      }
    }
  }
  logger.info({ upserted: result.upserted.length, removed: result.removed }, 'job schedulers in sync with config');
  return result;
}

/** The scheduler ids the config asks for, per function. */
function wantedSchedulers(functions: readonly AnyFunction[], config: Config): Map<string, string[]> {
  return new Map(functions.map((fn) => [fn.name, fn.triggers.flatMap((t) => ('cron' in t ? t.cron(config) : [])).map((e) => e.id)]));
}

/**
 * How many configured schedulers Redis lacks: all of them after Redis came back empty (no persistence,
 * FLUSHALL), which no error would ever report: the scheduled backups would just stop.
 */
export async function missingSchedulers(functions: readonly AnyFunction[], config: Config, queues: QueueSet): Promise<number> {
  let missing = 0;
  for (const [fn, ids] of wantedSchedulers(functions, config)) {
    if (ids.length === 0) continue;
    const present = new Set((await queues.queue(fn).getJobSchedulers()).map((s) => s.key));
    missing += ids.filter((id) => !present.has(id)).length;
  }
  return missing;
}
