import { z } from 'zod';
import type { DrillRecord } from '../lib/catalog/manifest.js';
import type { Config, Dataset } from '../lib/config/schema.js';
import { requireDataset } from '../lib/datasets.js';
import { drillFor } from '../lib/drill/index.js';
import { defineFunction, type CronEntry } from '../queue/define.js';
import { DrillFailedError, PermanentError } from '../queue/errors.js';

/** The weekly default, for a kind whose config has no drill schedule of its own. */
export const DEFAULT_DRILL_SCHEDULE = '0 5 * * 0';

/** One scheduler per dataset whose kind has a drill and whose drill is enabled. */
function drillSchedules(config: Config): CronEntry[] {
  return config.datasets.flatMap((dataset) => {
    if (!drillFor(dataset)) return [];
    const drill = (dataset as Dataset & { drill?: { enabled?: boolean; schedule?: string } }).drill;
    if (drill?.enabled === false) return [];
    return [{ id: dataset.id, pattern: drill?.schedule ?? DEFAULT_DRILL_SCHEDULE, input: { dataset: dataset.id } }];
  });
}

export const drillRestore = defineFunction({
  name: 'drillRestore',
  description: 'Restores a backup of any kind into scratch space (a throwaway Postgres, a scratch prefix, a temp dir), checks it, writes drill.json and always cleans up.',
  input: z.object({
    dataset: z.string().min(1),
    /** A backup id (its tick folder); default: the newest drillable one at or before the tick. */
    backup: z.string().optional(),
  }),
  triggers: [{ cron: drillSchedules }],
  kinds: ['postgres', 'bucket', 'etcd', 'velero'],
  retries: { attempts: 2, backoffMs: 300_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset);
    const drill = drillFor(dataset);
    if (!drill) throw new PermanentError(`dataset ${dataset.id}: ${dataset.kind} datasets have no restore drill yet`);

    const started = ctx.deps.clock();
    const result = await drill(dataset, { deps: ctx.deps, log: ctx.log, signal: ctx.signal, tick: ctx.tick }, { backup: input.backup });
    const finished = ctx.deps.clock();
    const failed = result.checks.filter((c) => !c.ok);
    const record: DrillRecord = {
      format: 'lifeboat.drill/v1',
      dataset: dataset.id,
      backup: result.backup,
      key: result.key,
      ok: failed.length === 0,
      mode: result.mode,
      where: result.where,
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationMs: finished.getTime() - started.getTime(),
      restoreMs: result.restoreMs,
      checks: result.checks,
      ...(result.details ? { details: result.details } : {}),
    };
    // Every outcome is on the target before the job ends, a restore error included.
    await ctx.deps.storeFor(dataset).putJson(result.recordKey, record, { signal: ctx.signal });
    const final = !result.retryable || ctx.attempt >= ctx.maxAttempts || ctx.signal.aborted;
    if (record.ok || final) {
      await ctx.emit('drill.completed', { dataset: dataset.id, kind: dataset.kind, key: result.key, ok: record.ok, startedAt: record.startedAt, finishedAt: record.finishedAt, failedChecks: failed.map((c) => c.name) });
    }
    const message = `drill of ${dataset.id} backup ${result.backup} failed: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`;
    if (!final) throw new Error(message, { cause: result.retryable });
    if (!record.ok) throw new DrillFailedError(message, record);
    ctx.log.info({ backup: result.backup, durationMs: record.durationMs, checks: record.checks.length }, 'drill passed');
    return record;
  },
});
