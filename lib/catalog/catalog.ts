import type { Dataset } from '../config/schema.js';
import { datasetPrefix, DRILL_FILE, MANIFEST_FILE, parseTickStamp, VERIFY_FILE } from './layout.js';
import { manifestSchema, verifyRecordSchema, type Manifest, type VerifyRecord } from './manifest.js';
import type { ObjectInfo, TargetStore } from '../targets/store.js';

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
  /** The artifact as the listing saw it; absent when the manifest names an object that is not there. */
  artifact?: ObjectInfo;
  /** When the newest verification of this artifact ran. */
  checkedAt?: Date;
  /** Why a verify record that said ok no longer vouches for the artifact (overwritten, gone). */
  changedSinceVerified?: string;
}

/** A folder that is not a backup: no manifest (an unfinished upload) or one that cannot be read. */
export interface OrphanFolder {
  id: string;
  keys: string[];
  lastModified: Date;
  bytes: number;
  reason: 'no manifest' | 'unreadable manifest';
}

/**
 * Whether the artifact the listing shows is the one the verification read. A record without an etag
 * predates this check and is trusted on its sha256 alone.
 */
function changedSince(record: VerifyRecord, manifest: Manifest, listed: ObjectInfo | undefined): string | undefined {
  if (!listed) return 'the artifact is missing from the target';
  if (listed.size !== manifest.artifact.size) return `the artifact is ${listed.size} bytes, the manifest says ${manifest.artifact.size}`;
  const seen = record.actual.etag?.replace(/"/g, '');
  if (seen !== undefined && seen !== listed.etag.replace(/"/g, '')) return `the artifact was rewritten after it was verified (ETag ${listed.etag.replace(/"/g, '')}, verified ${seen})`;
  return undefined;
}

/**
 * The backups of a dataset, newest first, read from the target alone (no Redis, no cluster). A folder
 * counts as a backup only once its manifest exists: the manifest is written after the artifact.
 */
export async function listBackups(
  store: TargetStore,
  dataset: Pick<Dataset, 'id' | 'target' | 'kind'>,
  options: { signal?: AbortSignal; /** Folders that are not backups: unfinished, half-deleted, or with a damaged manifest. */ onOrphan?: (folder: OrphanFolder) => void } = {},
): Promise<BackupEntry[]> {
  const prefix = datasetPrefix(dataset);
  const folders = new Map<string, { manifest?: string; verify?: string; drill?: string; keys: string[]; objects: Map<string, ObjectInfo>; bytes: number; lastModified: Date }>();
  for await (const object of store.list(prefix, { signal: options.signal })) {
    const rest = object.key.slice(prefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) continue;
    const id = rest.slice(0, slash);
    const name = rest.slice(slash + 1);
    const folder = folders.get(id) ?? { keys: [], objects: new Map<string, ObjectInfo>(), bytes: 0, lastModified: object.lastModified };
    folder.keys.push(object.key);
    folder.objects.set(object.key, object);
    folder.bytes += object.size;
    if (object.lastModified > folder.lastModified) folder.lastModified = object.lastModified;
    if (name === MANIFEST_FILE) folder.manifest = object.key;
    else if (name === VERIFY_FILE) folder.verify = object.key;
    else if (name === DRILL_FILE) folder.drill = object.key;
    folders.set(id, folder);
  }
  const entries: BackupEntry[] = [];
  for (const [id, folder] of folders) {
    const orphan = (reason: OrphanFolder['reason']) => options.onOrphan?.({ id, keys: folder.keys, lastModified: folder.lastModified, bytes: folder.bytes, reason });
    if (!folder.manifest) {
      orphan('no manifest');
      continue;
    }
    const manifest = manifestSchema.safeParse(await store.getJson(folder.manifest, options).catch((err: unknown) => {
      if (err instanceof SyntaxError) return undefined;
      throw err;
    }));
    // Folders are tick stamps, or (etcd) snapshot names whose time the manifest holds.
    const tick = manifest.success ? (parseTickStamp(id) ?? new Date(manifest.data.tick)) : undefined;
    if (!manifest.success || !tick || Number.isNaN(tick.getTime())) {
      orphan('unreadable manifest');
      continue;
    }
    const verifyRaw = folder.verify ? await store.getJson(folder.verify, options).catch(() => undefined) : undefined;
    const verify = verifyRaw === undefined ? undefined : verifyRecordSchema.safeParse(verifyRaw);
    const record = verify?.success ? verify.data : undefined;
    // A verify record for an older upload of the same tick does not vouch for the current artifact.
    const current = record && record.expected.sha256 === manifest.data.artifact.sha256 ? record : undefined;
    const artifact = folder.objects.get(manifest.data.artifact.key);
    // A good verdict stands only for the bytes it read; a failed one stands until a newer check passes.
    const changed = current?.ok ? changedSince(current, manifest.data, artifact) : undefined;
    entries.push({
      dataset: dataset.id,
      id,
      tick,
      manifest: manifest.data,
      verify: current,
      status: current && !changed ? (current.ok ? 'verified' : 'corrupt') : 'unverified',
      keys: folder.keys,
      bytes: folder.bytes,
      drillKey: folder.drill,
      artifact,
      checkedAt: current ? new Date(current.checkedAt) : undefined,
      changedSinceVerified: changed,
    });
  }
  return entries.sort((a, b) => b.tick.getTime() - a.tick.getTime());
}
