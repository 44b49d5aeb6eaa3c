import { z } from 'zod';
import { listBackups } from '../lib/catalog/catalog.js';
import { requireDataset } from '../lib/datasets.js';
import { DRILL_FILE, siblingKey } from '../lib/catalog/layout.js';
import type { Check, DrillRecord } from '../lib/catalog/manifest.js';
import { drillChecks } from '../lib/postgres/checks.js';
import type { DatabaseStats } from '../lib/postgres/connection.js';
import { restoreDump } from '../lib/postgres/restore.js';
import { kubernetesScratch, localScratch, type ScratchServer } from '../lib/postgres/scratch.js';
import { cronPerDataset, defineFunction } from '../queue/define.js';
import { DrillFailedError, errorMessage, PermanentError } from '../queue/errors.js';
import { ObjectNotFoundError } from '../lib/targets/store.js';

/** A read error that is a verdict on the backup (gone, or not a valid gzip stream), as a failed check; undefined for any other. */
function readFinding(err: unknown, compression: string): Check | undefined {
  if (err instanceof ObjectNotFoundError) return { name: 'object', ok: false, detail: 'the backup artifact does not exist' };
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) return { name: compression === 'gzip' ? 'gzip' : 'decompress', ok: false, detail: `cannot be decompressed: ${(err as Error).message}` };
  return undefined;
}

export const drillRestore = defineFunction({
  name: 'drillRestore',
  description: 'Restores the newest verified dump into a throwaway Postgres, checks it, writes drill.json and always cleans up.',
  input: z.object({
    dataset: z.string().min(1),
    /** A backup id (its tick folder); default: the newest verified one. */
    backup: z.string().optional(),
  }),
  triggers: [cronPerDataset('postgres', (d) => (d.kind === 'postgres' && d.drill.enabled ? d.drill.schedule : undefined))],
  kinds: ['postgres'],
  retries: { attempts: 2, backoffMs: 300_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset, 'postgres');
    const store = ctx.deps.storeFor(dataset);
    const backups = await listBackups(store, dataset, { signal: ctx.signal });
    // Without a named backup: the newest verified one of this run's tick or before, so a retry drills the same one.
    const entry = input.backup ? backups.find((b) => b.id === input.backup) : backups.find((b) => b.status === 'verified' && b.tick.getTime() <= ctx.tick.getTime());
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
    const checks: Check[] = [];
    let restoreMs = 0;
    let where = drill.mode === 'local' ? 'local cluster (not started)' : 'scratch namespace (not created)';
    // A failure that says the backup is bad (unreadable, damaged) is final; anything else may be retried.
    let retryable: unknown;
    let scratch: ScratchServer | undefined;
    try {
      scratch =
        drill.mode === 'local'
          ? await localScratch({ major, binDir: drill.binDir })
          : await kubernetesScratch(ctx.deps.kube(drill.kubernetes.kubeconfig), {
              image: drill.kubernetes.image ?? `postgres:${major}`,
              namespacePrefix: drill.kubernetes.namespacePrefix,
              readyTimeoutSeconds: drill.kubernetes.readyTimeoutSeconds,
              dataset: dataset.id,
              signal: ctx.signal,
            });
      where = scratch.where;
      const restored = await restoreDump(store, manifest, scratch.runner, { signal: ctx.signal }).catch((err: unknown) => {
        const finding = readFinding(err, manifest.artifact.compression);
        if (!finding) throw err;
        checks.push(finding);
        return undefined;
      });
      if (restored) {
        restoreMs = restored.durationMs;
        checks.push({ name: 'sha256', ok: restored.sha256 === manifest.artifact.sha256, detail: restored.sha256 === manifest.artifact.sha256 ? 'the restored bytes match the manifest' : `read ${restored.sha256}, manifest says ${manifest.artifact.sha256}` });
        checks.push({ name: 'restore', ok: restored.errors.length === 0, detail: restored.errors.length === 0 ? `psql loaded ${restored.bytes} bytes without errors` : `${restored.errors.length} errors, first: ${restored.errors[0]}` });
        checks.push(...(await drillChecks(scratch.runner, { databases: source.databases, stats: source.stats }, { tableTolerancePercent: drill.tableTolerancePercent, assertions: drill.assertions, signal: ctx.signal })));
      }
    } catch (err) {
      retryable = err;
      checks.push({ name: scratch ? 'restore' : 'scratch server', ok: false, detail: errorMessage(err) });
    } finally {
      await scratch?.stop().catch((err: unknown) => ctx.log.error({ err: (err as Error).message, where }, 'drill cleanup failed'));
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
      where,
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationMs: finished.getTime() - started.getTime(),
      restoreMs,
      checks,
    };
    // Every outcome is on the target before the job ends, a restore error included.
    await store.putJson(siblingKey(manifest.artifact.key, DRILL_FILE), record, { signal: ctx.signal });
    const final = !retryable || ctx.attempt >= ctx.maxAttempts || ctx.signal.aborted;
    if (record.ok || final) {
      await ctx.emit('drill.completed', { dataset: dataset.id, kind: dataset.kind, key: manifest.artifact.key, ok: record.ok, startedAt: record.startedAt, finishedAt: record.finishedAt, failedChecks: failed.map((c) => c.name) });
    }
    const message = `drill of ${dataset.id} backup ${entry.id} failed: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`;
    if (!final) throw new Error(message, { cause: retryable });
    if (!record.ok) throw new DrillFailedError(message, record);
    ctx.log.info({ backup: entry.id, durationMs: record.durationMs, checks: checks.length }, 'drill passed');
    return record;
  },
});
