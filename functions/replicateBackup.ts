import { z } from 'zod';
import { listBackups, type BackupEntry } from '../lib/catalog/catalog.js';
import { planRetention } from '../lib/catalog/retention.js';
import type { Dataset } from '../lib/config/schema.js';
import { requireDataset } from '../lib/datasets.js';
import { copyBackup } from '../lib/replica/copy.js';
import { replicaDataset, replicaName, replicasOf, type Replica } from '../lib/replica/view.js';
import { defineFunction, type Ctx } from '../queue/define.js';
import { errorMessage } from '../queue/errors.js';

export interface ReplicaOutcome {
  dataset: string;
  replica: string;
  copied: string[];
  present: number;
  deleted: string[];
  guarded?: string;
  /** Why this replica could not be brought up to date (the job fails after trying the others). */
  error?: string;
}

export const replicateBackup = defineFunction({
  name: 'replicateBackup',
  description: "Copies each verified backup to the dataset's replicas (a dir on another disk, another S3), re-hashes and verifies the copy there, catches up on anything missing and applies the replica's retention.",
  input: z.object({
    /** One dataset; without it, every dataset with replicas (the scheduled catch-up). */
    dataset: z.string().min(1).optional(),
  }),
  triggers: [
    // A verified backup is copied at once; the same run fills in anything else the replica lacks.
    { event: 'backup.verified', input: (e: { dataset: string }) => ({ dataset: e.dataset }), filter: (e: { dataset: string }, config) => config.datasets.some((d) => d.id === e.dataset && replicasOf(d).length > 0) },
    { cron: (config) => (config.datasets.some((d) => replicasOf(d).length > 0) ? [{ id: 'catch-up', pattern: config.replication.schedule, input: {} }] : []) },
  ],
  kinds: ['postgres', 'etcd'],
  retries: { attempts: 4, backoffMs: 60_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const datasets = input.dataset ? [requireDataset(ctx.deps.config, input.dataset)] : ctx.deps.config.datasets.filter((d) => replicasOf(d).length > 0);
    const outcomes: ReplicaOutcome[] = [];
    for (const dataset of datasets) {
      const primary = ctx.deps.storeFor(dataset);
      const verified = (await listBackups(primary, dataset, { signal: ctx.signal })).filter((b) => b.status === 'verified');
      for (const replica of replicasOf(dataset)) outcomes.push(await replicate(ctx, dataset, replica, verified));
    }
    const failed = outcomes.filter((o) => o.error);
    // Every replica was tried; one that is down fails the job (retried, and alerted on by ReplicaStale), never a quiet success.
    if (failed.length > 0) throw new Error(`replication failed for ${failed.map((o) => `${o.dataset} → ${o.replica}: ${o.error}`).join('; ')}`);
    return { replicas: outcomes };
  },
});

async function replicate(ctx: Ctx, dataset: Dataset, replica: Replica, verified: BackupEntry[]): Promise<ReplicaOutcome> {
  const name = replicaName(replica);
  const view = replicaDataset(dataset, replica);
  const to = ctx.deps.storeFor(view);
  const label = `replica ${name} (${to.label}) of dataset ${dataset.id}`;
  const outcome: ReplicaOutcome = { dataset: dataset.id, replica: name, copied: [], present: 0, deleted: [] };
  try {
    const there = new Map((await listBackups(to, view, { signal: ctx.signal })).map((b) => [b.id, b]));
    // Oldest first: a replica that was away for a week fills in in order.
    for (const entry of [...verified].reverse()) {
      const copy = there.get(entry.id);
      if (copy?.status === 'verified' && copy.manifest.artifact.sha256 === entry.manifest.artifact.sha256) {
        outcome.present++;
        continue;
      }
      ctx.signal.throwIfAborted();
      await copyBackup(ctx, entry, ctx.deps.storeFor(dataset), to, dataset, view, label);
      outcome.copied.push(entry.id);
      ctx.log.info({ replica: name, backup: entry.id, size: entry.manifest.artifact.size }, 'backup replicated');
    }
    // The replica's own retention, on its own catalog: what the primary lost is never a reason to delete here.
    const after = await listBackups(to, view, { signal: ctx.signal });
    const plan = planRetention(after, (view as { retention: Parameters<typeof planRetention>[1] }).retention, ctx.deps.clock());
    outcome.guarded = plan.guarded;
    if (plan.guarded) ctx.log.error({ replica: name, guard: plan.guarded }, 'replica retention guard stopped all deletions');
    for (const entry of plan.delete) {
      await to.delete(entry.keys, { signal: ctx.signal });
      outcome.deleted.push(entry.id);
    }
    const newest = after.find((b) => b.status === 'verified' && !outcome.deleted.includes(b.id));
    const primaryNewest = verified[0];
    if (newest) {
      await ctx.emit('backup.replicated', {
        dataset: dataset.id, kind: dataset.kind, replica: name, key: newest.manifest.artifact.key,
        backupAt: newest.tick.toISOString(), checkedAt: newest.checkedAt?.toISOString() ?? ctx.deps.clock().toISOString(),
        lagSeconds: primaryNewest ? Math.max(0, (primaryNewest.tick.getTime() - newest.tick.getTime()) / 1000) : 0,
      });
    }
  } catch (err) {
    if (ctx.signal.aborted) throw err;
    outcome.error = errorMessage(err);
    ctx.log.error({ replica: name, err: outcome.error }, 'replication failed');
  }
  return outcome;
}
