import type { Dataset } from './config/schema.js';
import { datasetPrefix, MANIFEST_FILE, parseTickStamp, VERIFY_FILE } from './layout.js';
import { manifestSchema, verifyRecordSchema, type Manifest, type VerifyRecord } from './manifest.js';
import type { TargetStore } from './targets/store.js';

export type VerifyStatus = 'verified' | 'corrupt' | 'unverified';

export interface BackupEntry {
  dataset: string;
  /** The tick folder name, e.g. 20261126T020000Z; the backup's id. */
  id: string;
  tick: Date;
  manifest: Manifest;
  verify?: VerifyRecord;
  status: VerifyStatus;
}

/**
 * The backups of a dataset, newest first, read from the target alone (no Redis, no cluster). A folder
 * counts as a backup only once its manifest exists: the manifest is written after the artifact.
 */
export async function listBackups(store: TargetStore, dataset: Pick<Dataset, 'id' | 'target' | 'kind'>, options: { signal?: AbortSignal } = {}): Promise<BackupEntry[]> {
  const prefix = datasetPrefix(dataset);
  const folders = new Map<string, { manifest?: string; verify?: string }>();
  for await (const object of store.list(prefix, { signal: options.signal })) {
    const rest = object.key.slice(prefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) continue;
    const id = rest.slice(0, slash);
    const name = rest.slice(slash + 1);
    if (name !== MANIFEST_FILE && name !== VERIFY_FILE) continue;
    const folder = folders.get(id) ?? {};
    if (name === MANIFEST_FILE) folder.manifest = object.key;
    else folder.verify = object.key;
    folders.set(id, folder);
  }
  const entries: BackupEntry[] = [];
  for (const [id, folder] of folders) {
    const tick = parseTickStamp(id);
    if (!tick || !folder.manifest) continue;
    const manifest = manifestSchema.safeParse(await store.getJson(folder.manifest, options));
    if (!manifest.success) continue;
    const verifyRaw = folder.verify ? await store.getJson(folder.verify, options) : undefined;
    const verify = verifyRaw === undefined ? undefined : verifyRecordSchema.safeParse(verifyRaw);
    const record = verify?.success ? verify.data : undefined;
    // A verify record for an older upload of the same tick does not vouch for the current artifact.
    const current = record && record.expected.sha256 === manifest.data.artifact.sha256 ? record : undefined;
    entries.push({
      dataset: dataset.id,
      id,
      tick,
      manifest: manifest.data,
      verify: current,
      status: current ? (current.ok ? 'verified' : 'corrupt') : 'unverified',
    });
  }
  return entries.sort((a, b) => b.tick.getTime() - a.tick.getTime());
}
