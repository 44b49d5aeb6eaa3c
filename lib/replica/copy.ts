import type { Logger } from 'pino';
import type { BackupEntry } from '../catalog/catalog.js';
import { datasetPrefix, MANIFEST_FILE, siblingKey } from '../catalog/layout.js';
import type { VerifyRecord } from '../catalog/manifest.js';
import { verifyArtifact } from '../catalog/verify.js';
import type { Dataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import type { TargetStore } from '../targets/store.js';
import { CorruptBackupError } from '../../queue/errors.js';

/** What copying one backup needs from the job. */
export interface CopyScope {
  deps: Deps;
  log: Logger;
  signal: AbortSignal;
}

/**
 * Copies one backup folder to a replica: the artifact (streamed, re-hashed on arrival), then its
 * manifest, which makes the folder a backup there, so a copy killed midway is never taken for one. The
 * keys are the primary's under the replica's prefix, so a re-run overwrites. Then the copy is verified where it lies and gets its
 * own verify.json; the primary's verify and drill records are not copied.
 */
export async function copyBackup(scope: CopyScope, entry: BackupEntry, from: TargetStore, to: TargetStore, dataset: Dataset, replicaView: Dataset, label: string): Promise<VerifyRecord> {
  const { artifact } = entry.manifest;
  // The same folder and file names under the replica's prefix; the copy's manifest names its own key.
  const key = datasetPrefix(replicaView) + artifact.key.slice(datasetPrefix(dataset).length);
  const put = await to.put(key, await from.get(artifact.key, { signal: scope.signal }), {
    contentType: artifact.contentType,
    metadata: { 'lifeboat-dataset': entry.dataset, ...(artifact.encryption && { 'lifeboat-encryption': 'age' }) },
    signal: scope.signal,
    replaceUnfinished: true,
  });
  if (put.sha256 !== artifact.sha256 || put.size !== artifact.size) {
    // What arrived is not what the manifest vouches for: never give it a manifest on the replica.
    await to.delete([key], { signal: scope.signal });
    throw new CorruptBackupError(`${label}: backup ${entry.id} arrived as sha256 ${put.sha256} (${put.size} bytes), its manifest says ${artifact.sha256} (${artifact.size} bytes); the copy was removed`, []);
  }
  await to.putJson(siblingKey(key, MANIFEST_FILE), { ...entry.manifest, artifact: { ...artifact, key, etag: put.etag } }, { signal: scope.signal });
  // The verdict on the copy is the replica's own: no backup.verified event (that would speak for the primary).
  const record = await verifyArtifact({ deps: scope.deps, log: scope.log, signal: scope.signal, emit: async () => {} }, replicaView, key, 'replicate');
  if (!record.ok) throw new CorruptBackupError(`${label}: the copy of backup ${entry.id} failed verification: ${record.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ')}`, []);
  return record;
}
