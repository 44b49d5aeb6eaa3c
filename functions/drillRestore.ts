import { z } from 'zod';
import { listBackups } from '../lib/catalog.js';
import { requireDataset } from '../lib/datasets.js';
import { DRILL_FILE, siblingKey } from '../lib/layout.js';
import type { Check, DrillRecord } from '../lib/manifest.js';
import { drillChecks } from '../lib/postgres/checks.js';
import type { DatabaseStats } from '../lib/postgres/connection.js';
import { restoreDump } from '../lib/postgres/restore.js';
import { kubernetesScratch, localScratch, type ScratchServer } from '../lib/postgres/scratch.js';
import { cronPerDataset, defineFunction } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';

export const drillRestore = defineFunction({
  name: 'drillRestore',
  description: 'Restores the newest verified dump into a throwaway Postgres, checks it, writes drill.json and always cleans up.',
  input: z.object({
    dataset: z.string().min(1),
    /** A backup id (its tick folder); default: the newest verified one. */
    backup: z.string().optional(),
  }),
  triggers: [cronPerDataset('postgres', (d) => (d.kind === 'postgres' && d.drill.enabled ? d.drill.schedule : undefined))],
  retries: { attempts: 2, backoffMs: 300_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset, 'postgres');
    const store = ctx.deps.storeFor(dataset);
    const backups = await listBackups(store, dataset, { signal: ctx.signal });
    const entry = input.backup ? backups.find((b) => b.id === input.backup) : backups.find((b) => b.status === 'verified');
    if (!entry) {
      throw new PermanentError(input.backup ? `dataset ${dataset.id} has no backup ${input.backup}` : `dataset ${dataset.id} has no verified backup to drill`);
    }
    const { manifest } = entry;
    const source = manifest.source as { serverVersionNum?: number; databases?: string[]; stats?: Record<string, DatabaseStats> };
    const major = Math.floor((source.serverVersionNum ?? 0) / 10000);
    if (!major || !source.databases) throw new PermanentError(`manifest of ${manifest.artifact.key} lacks the server version or database list`);

    const drill = dataset.drill;
    const started = ctx.deps.clock();
    ctx.log.info({ backup: entry.id, key: manifest.artifact.key, mode: drill.mode }, 'drill starting');
    const scratch: ScratchServer =
      drill.mode === 'local'
        ? await localScratch({ major, binDir: drill.binDir })
        : await kubernetesScratch(ctx.deps.kube(drill.kubernetes.kubeconfig), {
            image: drill.kubernetes.image ?? `postgres:${major}`,
            namespacePrefix: drill.kubernetes.namespacePrefix,
            readyTimeoutSeconds: drill.kubernetes.readyTimeoutSeconds,
            dataset: dataset.id,
            signal: ctx.signal,
          });
    const checks: Check[] = [];
    let restoreMs = 0;
    try {
      const restored = await restoreDump(store, manifest, scratch.runner, { signal: ctx.signal });
      restoreMs = restored.durationMs;
      checks.push({ name: 'sha256', ok: restored.sha256 === manifest.artifact.sha256, detail: restored.sha256 === manifest.artifact.sha256 ? 'the restored bytes match the manifest' : `read ${restored.sha256}, manifest says ${manifest.artifact.sha256}` });
      checks.push({ name: 'restore', ok: restored.errors.length === 0, detail: restored.errors.length === 0 ? `psql loaded ${restored.bytes} bytes without errors` : `${restored.errors.length} errors, first: ${restored.errors[0]}` });
      checks.push(...(await drillChecks(scratch.runner, { databases: source.databases, stats: source.stats }, { tableTolerancePercent: drill.tableTolerancePercent, assertions: drill.assertions, signal: ctx.signal })));
    } finally {
      await scratch.stop().catch((err: unknown) => ctx.log.error({ err: (err as Error).message, where: scratch.where }, 'drill cleanup failed'));
    }

    const finished = ctx.deps.clock();
    const failed = checks.filter((c) => !c.ok);
    const record: DrillRecord = {
      format: 'lifeboat.drill/v1',
      dataset: dataset.id,
      backup: entry.id,
      key: manifest.artifact.key,
      ok: failed.length === 0,
      mode: drill.mode,
      where: scratch.where,
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationMs: finished.getTime() - started.getTime(),
      restoreMs,
      checks,
    };
    await store.putJson(siblingKey(manifest.artifact.key, DRILL_FILE), record, { signal: ctx.signal });
    await ctx.emit('drill.completed', { dataset: dataset.id, kind: dataset.kind, key: manifest.artifact.key, ok: record.ok, startedAt: record.startedAt, finishedAt: record.finishedAt, failedChecks: failed.map((c) => c.name) });
    if (!record.ok) throw new PermanentError(`drill of ${dataset.id} backup ${entry.id} failed: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`);
    ctx.log.info({ backup: entry.id, durationMs: record.durationMs, checks: checks.length }, 'drill passed');
    return record;
  },
});
