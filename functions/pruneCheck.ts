import { z } from 'zod';
import { listBackups, type BackupEntry, type OrphanFolder } from '../lib/catalog/catalog.js';
import { appendSample, forecast, type CapacitySample } from '../lib/catalog/capacity.js';
import type { Dataset } from '../lib/config/schema.js';
import { requireDataset } from '../lib/datasets.js';
import { MANIFEST_FILE, LIFEBOAT_RECORDS } from '../lib/catalog/layout.js';
import { targetEvents } from '../lib/metrics/rebuild.js';
import { GRACE_MS, planRetention } from '../lib/catalog/retention.js';
import type { TargetStore } from '../lib/targets/store.js';
import { verifyArtifact } from '../lib/catalog/verify.js';
import { defineFunction, type Ctx } from '../queue/define.js';

interface DatasetOutcome {
  dataset: string;
  kept: Array<{ id: string; status: string; reasons: string[] }>;
  deleted: string[];
  orphanFolders: string[];
  /** Folders kept because their manifest cannot be read: reported, never deleted, never silently dropped. */
  unreadable: string[];
  /** Backups re-verified in this run before anything was deleted. */
  reproved: Array<{ id: string; ok: boolean }>;
  guarded?: string;
  bytes: number;
}

const DAY = 86400_000;

/**
 * Lists the catalog and plans retention; before the plan deletes anything, every backup it keeps as a
 * verified slot whose check is older than verify.scrub.everyDays, and every unverified backup past the
 * grace period, is re-read now. A re-read that fails changes the plan (a corrupt copy never fills a
 * slot), so the loop plans again until nothing new needs proving.
 */
async function planWithProof(ctx: Ctx, store: TargetStore, dataset: Exclude<Dataset, { kind: 'velero' }>, outcome: DatasetOutcome) {
  const now = ctx.deps.clock();
  const freshAfter = now.getTime() - ctx.deps.config.verify.scrub.everyDays * DAY;
  const proved = new Set<string>();
  for (;;) {
    const orphans: OrphanFolder[] = [];
    const entries = await listBackups(store, dataset, { signal: ctx.signal, onOrphan: (o) => orphans.push(o) });
    const plan = planRetention(entries, dataset.retention, now);
    const needsProof = (e: BackupEntry) =>
      !proved.has(e.id) &&
      ((e.status === 'verified' && (e.checkedAt?.getTime() ?? 0) < freshAfter) || (e.status === 'unverified' && now.getTime() - e.tick.getTime() >= GRACE_MS));
    const unproved = plan.delete.length === 0 ? [] : [...plan.keep.map((k) => k.entry), ...plan.delete].filter(needsProof);
    if (unproved.length === 0) return { entries, plan, orphans };
    for (const entry of unproved) {
      proved.add(entry.id);
      const record = await verifyArtifact(ctx, dataset, entry.manifest.artifact.key, 'retention');
      outcome.reproved.push({ id: entry.id, ok: record.ok });
    }
  }
}

/** Deletes a backup folder, manifest first: a half-deleted backup must not look like a backup. */
async function deleteFolder(store: TargetStore, keys: string[], signal: AbortSignal): Promise<void> {
  const manifests = keys.filter((k) => k.endsWith(`/${MANIFEST_FILE}`));
  await store.delete(manifests, { signal });
  await store.delete(keys.filter((k) => !manifests.includes(k)), { signal });
}

/** Bytes under a prefix: a mirror's objects, or Velero's, which the backup catalog does not list. */
async function bytesUnder(store: TargetStore, prefix: string, signal: AbortSignal): Promise<number> {
  let bytes = 0;
  for await (const o of store.list(prefix, { signal })) bytes += o.size;
  return bytes;
}

async function pruneDataset(ctx: Ctx, dataset: Dataset, dryRun: boolean): Promise<DatasetOutcome> {
  const store = ctx.deps.storeFor(dataset);
  const now = ctx.deps.clock();
  const outcome: DatasetOutcome = { dataset: dataset.id, kept: [], deleted: [], orphanFolders: [], unreadable: [], reproved: [], bytes: 0 };
  // Velero prunes its own backups (its TTL); Lifeboat only watches them.
  if (dataset.kind !== 'velero') {
    const { entries, plan, orphans } = await planWithProof(ctx, store, dataset, outcome);
    // The catalog listing already saw every object of a dump or snapshot dataset: count what stays.
    let kept = entries.reduce((a, e) => a + e.bytes, 0) + orphans.reduce((a, o) => a + o.bytes, 0);
    outcome.kept = plan.keep.map((k) => ({ id: k.entry.id, status: k.entry.status, reasons: k.reasons }));
    outcome.guarded = plan.guarded;
    if (plan.guarded) ctx.log.error({ guard: plan.guarded }, 'retention guard stopped all deletions');
    for (const entry of plan.delete) {
      if (!dryRun) await deleteFolder(store, entry.keys, ctx.signal);
      outcome.deleted.push(entry.id);
      if (!dryRun) kept -= entry.bytes;
    }
    // A folder without a manifest is an upload that died (or a half-finished delete) once it is old enough.
    for (const orphan of orphans) {
      if (orphan.reason === 'unreadable manifest') {
        outcome.unreadable.push(orphan.id);
        ctx.log.warn({ backup: orphan.id, keys: orphan.keys.length }, 'backup folder with an unreadable manifest kept; restore or remove it by hand');
        continue;
      }
      if (now.getTime() - orphan.lastModified.getTime() < GRACE_MS) continue;
      if (!dryRun) await store.delete(orphan.keys, { signal: ctx.signal });
      outcome.orphanFolders.push(orphan.id);
      if (!dryRun) kept -= orphan.bytes;
    }
    outcome.bytes = dataset.kind === 'bucket' ? await bytesUnder(store, dataset.target.prefix, ctx.signal) : kept;
    for (const { event, payload } of await targetEvents(ctx.deps, dataset, entries.filter((e) => !outcome.deleted.includes(e.id)), ctx.signal)) {
      await ctx.emit(event, payload as never);
    }
  } else {
    for (const { event, payload } of await targetEvents(ctx.deps, dataset, undefined, ctx.signal)) await ctx.emit(event, payload as never);
    outcome.bytes = await bytesUnder(store, dataset.target.prefix, ctx.signal);
  }
  return outcome;
}

export const pruneCheck = defineFunction({
  name: 'pruneCheck',
  description: 'Enforces retention (never below N verified backups), reads freshness from the target, measures capacity and aborts orphaned uploads.',
  input: z.object({
    /** One dataset, or all of them. */
    dataset: z.string().min(1).optional(),
    dryRun: z.boolean().optional(),
  }),
  triggers: [{ cron: (config) => [{ id: 'daily', pattern: config.prune.schedule, input: {} }] }],
  retries: { attempts: 3, backoffMs: 300_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const { config } = ctx.deps;
    const dryRun = input.dryRun ?? false;
    const datasets = input.dataset ? [requireDataset(config, input.dataset)] : config.datasets;
    const results: DatasetOutcome[] = [];
    for (const dataset of datasets) {
      results.push(await pruneDataset(ctx, dataset, dryRun));
      ctx.log.info({ dataset: dataset.id, deleted: results.at(-1)!.deleted.length, kept: results.at(-1)!.kept.length, dryRun }, 'retention applied');
    }

    // Capacity per target: what its datasets hold, against its configured size, with a forecast from the history kept on the target.
    const capacity: Array<{ target: string; usedBytes: number; daysUntilFull?: number; growthBytesPerDay?: number }> = [];
    const now = ctx.deps.clock();
    for (const target of new Set(datasets.map((d) => d.target.name))) {
      const onTarget = datasets.filter((d) => d.target.name === target);
      const usedBytes = results.filter((r) => onTarget.some((d) => d.id === r.dataset)).reduce((a, r) => a + r.bytes, 0);
      const home = ctx.deps.storeFor(onTarget[0]!);
      const historyKey = `${LIFEBOAT_RECORDS}capacity/${target}.json`;
      const history = ((await home.getJson<{ samples?: CapacitySample[] }>(historyKey, { signal: ctx.signal })) ?? {}).samples ?? [];
      const samples = appendSample(history, { at: now.toISOString(), usedBytes });
      if (!dryRun && !input.dataset) await home.putJson(historyKey, { target, samples }, { signal: ctx.signal });
      const capacityBytes = config.targets[target]?.capacityBytes;
      const f = forecast(samples, capacityBytes);
      capacity.push({ target, usedBytes, daysUntilFull: f.daysUntilFull, growthBytesPerDay: f.growthPerDay });
      if (!input.dataset) {
        await ctx.emit('capacity.measured', {
          target, usedBytes, capacityBytes, growthBytesPerDay: f.growthPerDay, daysUntilFull: f.daysUntilFull, measuredAt: now.toISOString(),
          datasets: results.filter((r) => onTarget.some((d) => d.id === r.dataset)).map((r) => ({ dataset: r.dataset, kind: onTarget.find((d) => d.id === r.dataset)!.kind, bytes: r.bytes })),
        });
      }
    }

    // Uploads a killed process left open hold space invisibly; abort them once they are old enough.
    let abortedUploads = 0;
    const cutoff = now.getTime() - config.prune.abortUploadsAfterHours * 3600_000;
    const seen = new Set<string>();
    for (const dataset of datasets) {
      const store = ctx.deps.storeFor(dataset);
      if (seen.has(store.label)) continue;
      seen.add(store.label);
      for await (const upload of store.incompleteUploads({ signal: ctx.signal })) {
        if (upload.initiated.getTime() > cutoff) continue;
        if (!dryRun) await store.abortIncomplete(upload);
        abortedUploads += 1;
      }
    }
    if (abortedUploads && !dryRun) await ctx.deps.metrics.count('lifeboat_orphan_uploads_aborted_total', {}, abortedUploads);
    return { dryRun, datasets: results, capacity, abortedUploads };
  },
});
