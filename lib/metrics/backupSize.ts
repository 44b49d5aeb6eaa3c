import type { Manifest } from '../catalog/manifest.js';

/**
 * What lifeboat_backup_size_bytes reports for a backup: its artifact as stored, except for a mirror,
 * whose artifact is only its report: there it is the bytes mirrored (the manifest's source.bytes, the
 * API's dataBytes). The upload event and every rebuild from the target read it here, so they agree.
 */
export function backupSizeBytes(manifest: Pick<Manifest, 'kind' | 'artifact' | 'source'>): number {
  const mirrored = manifest.source.bytes;
  return manifest.kind === 'bucket' && typeof mirrored === 'number' ? mirrored : manifest.artifact.size;
}
