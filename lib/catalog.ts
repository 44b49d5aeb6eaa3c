import type { Dataset } from './config/schema.js';
import { datasetPrefix, DRILL_FILE, MANIFEST_FILE, parseTickStamp, VERIFY_FILE } from './layout.js';
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
  /** Every object in the backup's folder: what deleting the backup removes. */
  keys: string[];
  bytes: number;
  drillKey?: string;
}

/**
 * The backups of a dataset, newest first, read from the target alone (no Redis, no cluster). A folder
 * counts as a backup only once its manifest exists: the manifest is written after the artifact.
 */
export async function listBackups(
  store: TargetStore,
  dataset: Pick<Dataset, 'id' | 'target' | 'kind'>,
  options: { signal?: AbortSignal; /** Folders without a manifest: unfinished or half-deleted backups. */ onOrphan?: (folder: { id: string; keys: string[]; lastModified: Date; bytes: number }) => void } = {},
): Promise<BackupEntry[]> {
  const prefix = datasetPrefix(dataset);
  const folders = new Map<string, { manifest?: string; verify?: string; drill?: string; keys: string[]; bytes: number; lastModified: Date }>();
  for await (const object of store.list(prefix, { signal: options.signal })) {
    const rest = object.key.slice(prefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) continue;
    const id = rest.slice(0, slash);
    const name = rest.slice(slash + 1);
    const folder = folders.get(id) ?? { keys: [], bytes: 0, lastModified: object.lastModified };
    folder.keys.push(object.key);
    folder.bytes += object.size;
    if (object.lastModified > folder.lastModified) folder.lastModified = object.lastModified;
    if (name === MANIFEST_FILE) folder.manifest = object.key;
    else if (name === VERIFY_FILE) folder.verify = object.key;
    else if (name === DRILL_FILE) folder.drill = object.key;
    folders.set(id, folder);
  }
  const entries: BackupEntry[] = [];
  for (const [id, folder] of folders) {
    if (!folder.manifest) {
      options.onOrphan?.({ id, keys: folder.keys, lastModified: folder.lastModified, bytes: folder.bytes });
      continue;
    }
    const manifest = manifestSchema.safeParse(await store.getJson(folder.manifest, options));
    if (!manifest.success) continue;
    // Folders are tick stamps, or (etcd) snapshot names whose time the manifest holds.
    const tick = parseTickStamp(id) ?? new Date(manifest.data.tick);
    if (Number.isNaN(tick.getTime())) continue;
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
      keys: folder.keys,
      bytes: folder.bytes,
      drillKey: folder.drill,
    });
  }
  return entries.sort((a, b) => b.tick.getTime() - a.tick.getTime());
}
