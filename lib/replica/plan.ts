import type { BackupEntry } from '../catalog/catalog.js';
import { planRetention, type RetentionPolicy } from '../catalog/retention.js';

/** Whether the replica already holds a verified copy of exactly this backup (same artifact sha256). */
export function hasVerifiedCopy(copy: BackupEntry | undefined, entry: BackupEntry): boolean {
  return copy?.status === 'verified' && copy.manifest.artifact.sha256 === entry.manifest.artifact.sha256;
}

/**
 * What a replica should hold of the primary's verified backups: those its own retention would keep,
 * so a replica that keeps fewer than the primary is not filled with copies its retention then deletes
 * (and the next run copies again). `missing` is oldest first, so a replica that was away fills in in order.
 */
export function replicaPlan(primaryVerified: BackupEntry[], onReplica: BackupEntry[], policy: RetentionPolicy, now: Date): { wanted: BackupEntry[]; missing: BackupEntry[] } {
  const wanted = planRetention(primaryVerified, policy, now).keep.map((k) => k.entry);
  const there = new Map(onReplica.map((b) => [b.id, b]));
  const missing = wanted.filter((e) => !hasVerifiedCopy(there.get(e.id), e)).sort((a, b) => a.tick.getTime() - b.tick.getTime());
  return { wanted, missing };
}

/** How far the replica's newest verified copy is behind the primary's newest verified backup. */
export function lagSeconds(primaryNewest: BackupEntry | undefined, replicaNewest: BackupEntry | undefined): number {
  if (!primaryNewest || !replicaNewest) return 0;
  return Math.max(0, (primaryNewest.tick.getTime() - replicaNewest.tick.getTime()) / 1000);
}
