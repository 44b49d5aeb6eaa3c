import type { Dataset } from '../config/schema.js';
import { objectRangeSource } from '../etcd/local.js';
import { inspectZipSnapshot, parseSnapshotName } from '../etcd/snapshot.js';
import { inspectArtifact } from './inspect.js';
import type { Check } from './manifest.js';
import type { TargetStore } from '../targets/store.js';

export interface ForeignInspection {
  size: number;
  sha256: string;
  checks: Check[];
  /** A complete backup another tool finished (Velero): counts for the dataset's freshness. */
  completedAt?: string;
}

/** velero-backup.json, as much as we read of it. */
interface VeleroBackup {
  status?: { phase?: string; completionTimestamp?: string; errors?: number };
}

/**
 * Checks an object Lifeboat did not write (bucket notifications): Velero's tarballs must gunzip and its
 * velero-backup.json must say Completed; etcd snapshots k3s uploaded itself must carry their trailer;
 * anything else must be readable and as large as the notification said.
 */
export async function inspectForeignObject(store: TargetStore, dataset: Dataset, key: string, expectedSize: number | undefined, signal?: AbortSignal): Promise<ForeignInspection> {
  const name = key.slice(key.lastIndexOf('/') + 1);
  const snapshot = dataset.kind === 'etcd' ? parseSnapshotName(name) : undefined;
  const format = snapshot && !snapshot.zip ? 'etcd-snapshot' : 'object';
  const compression = key.endsWith('.tar.gz') || key.endsWith('.gz') ? 'gzip' : 'none';
  const keepWhole = name === 'velero-backup.json';
  const chunks: Buffer[] = [];
  const stream = await store.get(key, { signal });
  if (keepWhole) stream.on('data', (c: Buffer) => chunks.push(c));
  const inspected = await inspectArtifact(stream, { compression, format }, signal);
  const checks = [...inspected.checks];
  if (expectedSize !== undefined) {
    checks.unshift({ name: 'size', ok: inspected.size === expectedSize, detail: `${inspected.size} bytes, the notification said ${expectedSize}` });
  }
  if (snapshot?.zip) checks.push(...(await inspectZipSnapshot(objectRangeSource(store, key, inspected.size, signal))));
  let completedAt: string | undefined;
  if (keepWhole) {
    let backup: VeleroBackup | undefined;
    try {
      backup = JSON.parse(Buffer.concat(chunks).toString('utf8')) as VeleroBackup;
    } catch {
      checks.push({ name: 'velero-backup.json', ok: false, detail: 'not valid JSON' });
    }
    if (backup) {
      const phase = backup.status?.phase ?? 'unknown';
      const ok = phase === 'Completed';
      checks.push({ name: 'velero phase', ok, detail: `${phase}${backup.status?.completionTimestamp ? `, completed ${backup.status.completionTimestamp}` : ''}` });
      if (ok && backup.status?.completionTimestamp) completedAt = backup.status.completionTimestamp;
    }
  }
  return { size: inspected.size, sha256: inspected.sha256, checks, completedAt };
}
