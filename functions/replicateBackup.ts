import { z } from 'zod';
import { listBackups } from '../lib/catalog/catalog.js';
import { requireDataset } from '../lib/datasets.js';
import { catchUpReplica, type ReplicaOutcome } from '../lib/replica/catchUp.js';
import { ReplicationFailedError } from '../lib/replica/errors.js';
import { replicasOf } from '../lib/replica/view.js';
import { defineFunction } from '../queue/define.js';

export type { ReplicaOutcome } from '../lib/replica/catchUp.js';

export const replicateBackup = defineFunction({
  name: 'replicateBackup',
  description: "Copies each verified backup to the dataset's replicas (a dir on another disk, another S3), re-hashes and verifies the copy there, catches up on anything missing and applies the replica's retention.",
  input: z.object({
    /** One dataset; without it, every dataset with replicas. */
    dataset: z.string().min(1).optional(),
    /** Set by the schedule; a run always fills in everything missing, this only says why it ran. */
    catchUp: z.boolean().optional(),
  }),
  triggers: [
    {
      event: 'backup.verified',
      input: (e: { dataset: string }) => ({ dataset: e.dataset }),
      // The scrub re-verifies old backups daily: one copy job per backup, not one per check.
      dedupe: (e: { dataset: string; key: string }) => `${e.dataset}/${e.key}`,
      filter: (e: { dataset: string }, config) => config.datasets.some((d) => d.id === e.dataset && replicasOf(d).length > 0),
    },
    // One scheduler per dataset with replicas, so each run holds that dataset's lock.
    { cron: (config) => config.datasets.filter((d) => replicasOf(d).length > 0).map((d) => ({ id: d.id, pattern: config.replication.schedule, input: { dataset: d.id, catchUp: true } })) },
  ],
  kinds: ['postgres', 'etcd'],
  // With the dataset's lock, an event's copy and the catch-up never write the same replica folder at once.
  lock: 'dataset',
  retries: { attempts: 4, backoffMs: 60_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const datasets = input.dataset ? [requireDataset(ctx.deps.config, input.dataset)] : ctx.deps.config.datasets.filter((d) => replicasOf(d).length > 0);
    const outcomes: ReplicaOutcome[] = [];
    for (const dataset of datasets) {
      if (replicasOf(dataset).length === 0) {
        ctx.log.info({ dataset: dataset.id }, 'dataset has no replicas; nothing to copy');
        continue;
      }
      const verified = (await listBackups(ctx.deps.storeFor(dataset), dataset, { signal: ctx.signal })).filter((b) => b.status === 'verified');
      for (const replica of replicasOf(dataset)) outcomes.push(await catchUpReplica(ctx, dataset, replica, verified));
    }
    const failed = outcomes.filter((o) => o.error);
    if (failed.length > 0) throw new ReplicationFailedError(failed.map((o) => ({ dataset: o.dataset, replica: o.replica, error: o.error! })));
    return { replicas: outcomes };
  },
});
