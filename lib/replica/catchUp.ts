import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import { MANIFEST_FILE, serverTokenKey } from '../catalog/layout.js';
import { planRetention } from '../catalog/retention.js';
import type { Dataset } from '../config/schema.js';
import type { TargetStore } from '../targets/store.js';
import type { EventName, EventPayload } from '../../queue/events.js';
import { errorMessage } from '../../queue/errors.js';
import { copyBackup, type CopyScope } from './copy.js';
import { ReplicaUnreachableError } from './errors.js';
import { lagSeconds, replicaPlan } from './plan.js';
import { replicaDataset, replicaName, replicaRetention, type Replica } from './view.js';

export interface CatchUpScope extends CopyScope {
  emit<E extends EventName>(event: E, payload: EventPayload<E>): Promise<void>;
}

export interface ReplicaOutcome {
  dataset: string;
  replica: string;
  copied: string[];
  /** Backups the replica already held as verified copies: skipped without reading them. */
  present: number;
  /** Deleted by the replica's own retention. */
  deleted: string[];
  /** Backups the replica's retention wants and it still lacks after this run. */
  pending: number;
  guarded?: string;
  /** Why this replica could not be brought up to date (the job fails after trying the others). */
  error?: string;
}

/** Deletes a backup folder, manifest first: a half-deleted backup must not look like a backup. */
async function deleteFolder(store: TargetStore, keys: string[], signal: AbortSignal): Promise<void> {
  const manifests = keys.filter((k) => k.endsWith(`/${MANIFEST_FILE}`));
  await store.delete(manifests, { signal });
  await store.delete(keys.filter((k) => !manifests.includes(k)), { signal });
}

/** A restore from the replica onto a new host needs the k3s server token: it travels with the snapshots. */
async function copyServerToken(scope: CopyScope, dataset: Dataset, view: Dataset, from: TargetStore, to: TargetStore): Promise<boolean> {
  if (dataset.kind !== 'etcd' || !dataset.source.uploadToken) return false;
  const key = serverTokenKey(dataset);
  if (!(await from.head(key, { signal: scope.signal }))) return false;
  await to.put(serverTokenKey(view), await from.get(key, { signal: scope.signal }), { contentType: 'application/octet-stream', signal: scope.signal });
  return true;
}

/**
 * Brings one replica up to date with the primary's verified backups: copies what its retention wants
 * and it lacks (each copy verified where it lies), then applies its retention to its own catalog. What
 * the primary lost is never a reason to delete on the replica. A failure ends this replica's run and is
 * returned, not thrown, so the caller tries the other replicas first.
 */
export async function catchUpReplica(scope: CatchUpScope, dataset: Dataset, replica: Replica, primaryVerified: BackupEntry[]): Promise<ReplicaOutcome> {
  const name = replicaName(replica);
  const view = replicaDataset(dataset, replica);
  const from = scope.deps.storeFor(dataset);
  const to = scope.deps.storeFor(view);
  const label = `replica ${name} (${to.label}) of dataset ${dataset.id}`;
  const policy = replicaRetention(dataset, replica);
  const outcome: ReplicaOutcome = { dataset: dataset.id, replica: name, copied: [], present: 0, deleted: [], pending: 0 };
  try {
    // The first read of the replica: if it fails, the target is down or broken, and the run stops here.
    const before = await listBackups(to, view, { signal: scope.signal }).catch((err: unknown) => {
      throw scope.signal.aborted ? err : new ReplicaUnreachableError(dataset.id, name, to.label, err);
    });
    const { wanted, missing } = replicaPlan(primaryVerified, before, policy, scope.deps.clock());
    outcome.present = wanted.length - missing.length;
    outcome.pending = missing.length;
    for (const entry of missing) {
      scope.signal.throwIfAborted();
      await copyBackup(scope, entry, from, to, dataset, view, label);
      outcome.copied.push(entry.id);
      outcome.pending -= 1;
      scope.log.info({ replica: name, backup: entry.id, size: entry.manifest.artifact.size }, 'backup replicated');
    }
    await copyServerToken(scope, dataset, view, from, to);

    const after = await listBackups(to, view, { signal: scope.signal });
    const plan = planRetention(after, policy, scope.deps.clock());
    outcome.guarded = plan.guarded;
    if (plan.guarded) scope.log.error({ replica: name, guard: plan.guarded }, 'replica retention guard stopped all deletions');
    for (const entry of plan.delete) {
      await deleteFolder(to, entry.keys, scope.signal);
      outcome.deleted.push(entry.id);
    }
    const newest = after.find((b) => b.status === 'verified' && !outcome.deleted.includes(b.id));
    if (newest) {
      await scope.emit('backup.replicated', {
        dataset: dataset.id, kind: dataset.kind, replica: name, key: newest.manifest.artifact.key,
        backupAt: newest.tick.toISOString(), checkedAt: newest.verify?.checkedAt ?? scope.deps.clock().toISOString(),
        lagSeconds: lagSeconds(primaryVerified[0], newest), pendingBackups: outcome.pending,
      });
    }
  } catch (err) {
    if (scope.signal.aborted) throw err;
    outcome.error = errorMessage(err);
    scope.log.error({ replica: name, err: outcome.error, copied: outcome.copied.length, pending: outcome.pending }, 'replication failed');
    await scope.deps.metrics.count('lifeboat_replica_failures_total', { dataset: dataset.id, replica: name });
  }
  return outcome;
}
