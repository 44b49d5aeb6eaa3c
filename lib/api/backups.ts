import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import { LIFEBOAT_RECORDS } from '../catalog/layout.js';
import { drillRecordSchema, verifyRecordSchema, type DrillRecord, type VerifyHistoryEntry, type VerifyRecord } from '../catalog/manifest.js';
import type { Dataset, VeleroDataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { S3Store } from '../targets/s3.js';
import type { TargetStore } from '../targets/store.js';
import { ApiError, type ApiStatus, type BackupListQuery } from './schemas.js';

/** How long a presigned download URL stays valid. */
export const DOWNLOAD_URL_SECONDS = 900;

/** One backup as the API (and `backups ls --json`) shows it. */
export interface ApiBackup {
  id: string;
  status: ApiStatus;
  finishedAt: string;
  size: number;
  sha256: string;
  checkedAt?: string;
  /** Why a passed check no longer vouches for the artifact (status changed-since-verified). */
  changedSinceVerified?: string;
  verifyHistory: VerifyHistoryEntry[];
  drill?: { ok: boolean; at: string; failedChecks: string[] };
  key: string;
}

export function apiStatus(entry: Pick<BackupEntry, 'status' | 'changedSinceVerified'>): ApiStatus {
  if (entry.status !== 'unverified') return entry.status;
  return entry.changedSinceVerified ? 'changed-since-verified' : 'pending';
}

/** The newest results first; a record written before histories existed is its own one-entry history. */
function historyOf(record: VerifyRecord | undefined): VerifyHistoryEntry[] {
  if (!record) return [];
  return record.history ?? [{ checkedAt: record.checkedAt, ok: record.ok, trigger: record.trigger }];
}

const drillSummary = (record: DrillRecord | undefined) => record && { ok: record.ok, at: record.finishedAt, failedChecks: record.checks.filter((c) => !c.ok).map((c) => c.name) };

async function readDrill(store: TargetStore, key: string | undefined, signal?: AbortSignal): Promise<DrillRecord | undefined> {
  if (!key) return undefined;
  const parsed = drillRecordSchema.safeParse(await store.getJson(key, { signal }).catch(() => undefined));
  return parsed.success ? parsed.data : undefined;
}

/** A catalog entry in the API's shape; reads its drill.json when it has one. */
export async function apiBackup(store: TargetStore, entry: BackupEntry, signal?: AbortSignal): Promise<ApiBackup> {
  return {
    id: entry.id,
    status: apiStatus(entry),
    finishedAt: entry.manifest.finishedAt,
    size: entry.manifest.artifact.size,
    sha256: entry.manifest.artifact.sha256,
    checkedAt: entry.checkedAt?.toISOString(),
    changedSinceVerified: entry.changedSinceVerified,
    verifyHistory: historyOf(entry.verify),
    drill: drillSummary(await readDrill(store, entry.drillKey, signal)),
    key: entry.manifest.artifact.key,
  };
}

/** A Velero backup Lifeboat verified: its velero-backup.json's record under _lifeboat/verify/. */
export interface VeleroBackupRecord {
  id: string;
  recordKey: string;
  record: VerifyRecord;
}

const VELERO_BACKUP_FILE = '/velero-backup.json';

export async function veleroBackups(store: TargetStore, dataset: VeleroDataset, signal?: AbortSignal): Promise<VeleroBackupRecord[]> {
  const out: VeleroBackupRecord[] = [];
  // catalog/verify.js brings age-encryption and the etcd snapshot reader; only Velero datasets need it here.
  const { foreignVerifyPrefix } = await import('../catalog/verify.js');
  for await (const o of store.list(foreignVerifyPrefix(dataset), { signal })) {
    const parsed = verifyRecordSchema.safeParse(await store.getJson(o.key, { signal }).catch(() => undefined));
    if (!parsed.success || !parsed.data.key.endsWith(VELERO_BACKUP_FILE)) continue;
    const folder = parsed.data.key.slice(0, -VELERO_BACKUP_FILE.length);
    out.push({ id: folder.slice(folder.lastIndexOf('/') + 1), recordKey: o.key, record: parsed.data });
  }
  const at = (b: VeleroBackupRecord) => b.record.completedAt ?? b.record.checkedAt;
  return out.sort((a, b) => at(b).localeCompare(at(a)));
}

const veleroDrillKey = (dataset: VeleroDataset, id: string) => `${dataset.target.prefix}${LIFEBOAT_RECORDS}drills/${id}.json`;

async function veleroApiBackup(store: TargetStore, dataset: VeleroDataset, b: VeleroBackupRecord, signal?: AbortSignal): Promise<ApiBackup> {
  return {
    id: b.id,
    status: b.record.ok ? 'verified' : 'corrupt',
    finishedAt: b.record.completedAt ?? b.record.checkedAt,
    size: b.record.actual.size,
    sha256: b.record.actual.sha256,
    checkedAt: b.record.checkedAt,
    verifyHistory: historyOf(b.record),
    drill: drillSummary(await readDrill(store, veleroDrillKey(dataset, b.id), signal)),
    key: b.record.key,
  };
}

export interface BackupPage {
  dataset: string;
  total: number;
  offset: number;
  limit: number;
  backups: ApiBackup[];
}

/** One page of a dataset's backups, filtered and sorted; drill records are read for the page only. */
export async function backupPage(deps: Deps, dataset: Dataset, query: BackupListQuery, signal?: AbortSignal): Promise<BackupPage> {
  const store = deps.storeFor(dataset);
  const dir = query.order === 'asc' ? 1 : -1;
  let rows: Array<{ time: number; size: number; id: string; status: ApiStatus; make: () => Promise<ApiBackup> }>;
  if (dataset.kind === 'velero') {
    rows = (await veleroBackups(store, dataset, signal)).map((b) => ({
      time: Date.parse(b.record.completedAt ?? b.record.checkedAt), size: b.record.actual.size, id: b.id, status: b.record.ok ? 'verified' : 'corrupt',
      make: () => veleroApiBackup(store, dataset, b, signal),
    }));
  } else {
    rows = (await listBackups(store, dataset, { signal })).map((e) => ({
      time: e.tick.getTime(), size: e.manifest.artifact.size, id: e.id, status: apiStatus(e), make: () => apiBackup(store, e, signal),
    }));
  }
  if (query.status) rows = rows.filter((r) => r.status === query.status);
  rows.sort((a, b) => dir * (query.sort === 'size' ? a.size - b.size || a.time - b.time : a.time - b.time) || dir * a.id.localeCompare(b.id));
  const page = rows.slice(query.offset, query.offset + query.limit);
  return { dataset: dataset.id, total: rows.length, offset: query.offset, limit: query.limit, backups: await Promise.all(page.map((r) => r.make())) };
}

async function findEntry(deps: Deps, dataset: Exclude<Dataset, { kind: 'velero' }>, id: string, signal?: AbortSignal): Promise<BackupEntry> {
  const entry = (await listBackups(deps.storeFor(dataset), dataset, { signal })).find((e) => e.id === id);
  if (!entry) throw new ApiError(404, `dataset "${dataset.id}" has no backup "${id}"`, 'id');
  return entry;
}

/** The exact `lifeboat restore` for this backup; what the operator must fill in is in capitals. */
export function restoreCommand(dataset: Dataset, id: string): string {
  const base = `lifeboat restore ${dataset.id} --backup ${id}`;
  switch (dataset.kind) {
    case 'postgres':
      return `${base} --to postgres://postgres@HOST:5432/postgres`;
    case 'bucket':
      return `${base} --to-target ${dataset.target.name} --to-bucket DESTINATION-BUCKET`;
    case 'etcd':
      return `${base} --to-dir ./etcd-restore`;
    case 'velero':
      return `velero restore create --from-backup ${id}`;
  }
}

export interface BackupDetail {
  dataset: string;
  id: string;
  kind: Dataset['kind'];
  status: ApiStatus;
  backup: ApiBackup;
  /** The stored records, as stored (not re-serialised through our schemas). */
  manifest?: unknown;
  verify?: unknown;
  drill?: unknown;
  /** A mirror's run report (its artifact). */
  report?: unknown;
  restoreCommand: string;
  download?: { url: string; expiresAt: string } | { path: string };
}

const siblings = (key: string) => key.slice(0, key.lastIndexOf('/') + 1);

export async function backupDetail(deps: Deps, dataset: Dataset, id: string, signal?: AbortSignal): Promise<BackupDetail> {
  const store = deps.storeFor(dataset);
  if (dataset.kind === 'velero') {
    const b = (await veleroBackups(store, dataset, signal)).find((x) => x.id === id);
    if (!b) throw new ApiError(404, `dataset "${dataset.id}" has no verified Velero backup "${id}"`, 'id');
    const backup = await veleroApiBackup(store, dataset, b, signal);
    return {
      dataset: dataset.id, id, kind: dataset.kind, status: backup.status, backup,
      verify: await store.getJson(b.recordKey, { signal }), drill: await store.getJson(veleroDrillKey(dataset, id), { signal }),
      restoreCommand: restoreCommand(dataset, id),
    };
  }
  const entry = await findEntry(deps, dataset, id, signal);
  const dir = siblings(entry.manifest.artifact.key);
  const [manifest, verify, drill, report] = await Promise.all([
    store.getJson(`${dir}manifest.json`, { signal }),
    store.getJson(`${dir}verify.json`, { signal }),
    entry.drillKey ? store.getJson(entry.drillKey, { signal }) : undefined,
    dataset.kind === 'bucket' ? store.getJson(entry.manifest.artifact.key, { signal }).catch(() => undefined) : undefined,
  ]);
  const backup = await apiBackup(store, entry, signal);
  return {
    dataset: dataset.id, id, kind: dataset.kind, status: backup.status, backup, manifest, verify, drill, report,
    restoreCommand: restoreCommand(dataset, id),
    download: await downloadFor(store, dataset, entry),
  };
}

async function downloadFor(store: TargetStore, dataset: Dataset, entry: BackupEntry): Promise<BackupDetail['download']> {
  if (!entry.artifact) return undefined;
  if (store instanceof S3Store) {
    const command = new GetObjectCommand({ Bucket: store.bucket, Key: entry.manifest.artifact.key, ResponseContentDisposition: contentDisposition(entry.manifest.artifact.key) });
    // Only the web UI's backup page signs URLs; `backups ls` and status need not load the presigner.
    const { getSignedUrl } = await import('@aws-sdk/s3-request-presigner');
    const url = await getSignedUrl(store.client as never, command as never, { expiresIn: DOWNLOAD_URL_SECONDS });
    return { url, expiresAt: new Date(Date.now() + DOWNLOAD_URL_SECONDS * 1000).toISOString() };
  }
  return { path: `/api/backups/${encodeURIComponent(dataset.id)}/${encodeURIComponent(entry.id)}/download` };
}

export function contentDisposition(key: string): string {
  const name = basename(key);
  return `attachment; filename="${name.replace(/[^A-Za-z0-9._-]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

/** The artifact's bytes, for a target without presigned URLs (a dir target). */
export async function artifactStream(deps: Deps, dataset: Dataset, id: string, signal?: AbortSignal): Promise<{ body: Readable; size: number; contentType: string; disposition: string }> {
  if (dataset.kind === 'velero') throw new ApiError(404, `dataset "${dataset.id}" is a Velero dataset: download its backups with velero`, 'dataset');
  const entry = await findEntry(deps, dataset, id, signal);
  if (!entry.artifact) throw new ApiError(404, `the artifact ${entry.manifest.artifact.key} of backup "${id}" is missing from the target`, 'id');
  const body = await deps.storeFor(dataset).get(entry.manifest.artifact.key, { signal });
  return { body, size: entry.artifact.size, contentType: entry.manifest.artifact.contentType, disposition: contentDisposition(entry.manifest.artifact.key) };
}
