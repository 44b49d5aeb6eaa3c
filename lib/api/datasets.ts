import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import type { Dataset } from '../config/schema.js';
import { targetEvents } from '../metrics/rebuild.js';
import type { Deps } from '../plumbing/deps.js';
import { apiStatus, veleroBackups } from './backups.js';
import type { ApiStatus } from './schemas.js';

/** Velero schedules itself; its freshness threshold is the VeleroBackupStale rule's 26 h. */
export const VELERO_STALE_HOURS = 26;

export interface ApiDataset {
  id: string;
  kind: Dataset['kind'];
  target: { name: string; bucket: string; prefix: string };
  staleAfterHours: number;
  newest?: { id: string; finishedAt: string; ageSeconds: number; size: number; dataBytes?: number; status: ApiStatus; checkedAt?: string };
  /** The newest good (not corrupt) backup, which freshness counts from: what BackupStale looks at. */
  newestGood?: { id: string; finishedAt: string; ageSeconds: number };
  lastScrub?: { at: string; ok: boolean };
  lastDrill?: { at: string; ok: boolean; ageSeconds: number; failedChecks: string[] };
  /** No good backup yet, or the newest good one is older than staleAfterHours. */
  stale: boolean;
  backups: number;
  corrupt: number;
  /** The target could not be read; everything above is then what the config says. */
  error?: string;
}

const ageSeconds = (now: Date, at: string) => Math.max(0, Math.round((now.getTime() - Date.parse(at)) / 1000));

/** The newest verification the scrub ran, across the backups' histories. */
function lastScrubOf(records: Array<{ history?: Array<{ checkedAt: string; ok: boolean; trigger?: string }>; checkedAt: string; ok: boolean; trigger?: string } | undefined>) {
  let best: { at: string; ok: boolean } | undefined;
  for (const r of records) {
    if (!r) continue;
    for (const h of r.history ?? [r]) if (h.trigger === 'scrub' && (!best || h.checkedAt > best.at)) best = { at: h.checkedAt, ok: h.ok };
  }
  return best;
}

/** One dataset's state, from its target alone (the same reads that rebuild its metrics). */
export async function datasetSummary(deps: Deps, dataset: Dataset, signal?: AbortSignal): Promise<ApiDataset> {
  const now = deps.clock();
  const staleAfterHours = dataset.kind === 'velero' ? VELERO_STALE_HOURS : dataset.staleAfterHours;
  const out: ApiDataset = {
    id: dataset.id, kind: dataset.kind, target: { name: dataset.target.name, bucket: dataset.target.bucket, prefix: dataset.target.prefix },
    staleAfterHours, stale: true, backups: 0, corrupt: 0,
  };
  try {
    const store = deps.storeFor(dataset);
    let entries: BackupEntry[] | undefined;
    if (dataset.kind === 'velero') {
      const velero = await veleroBackups(store, dataset, signal);
      out.backups = velero.length;
      out.corrupt = velero.filter((b) => !b.record.ok).length;
      const newest = velero[0];
      if (newest) {
        const finishedAt = newest.record.completedAt ?? newest.record.checkedAt;
        out.newest = { id: newest.id, finishedAt, ageSeconds: ageSeconds(now, finishedAt), size: newest.record.actual.size, status: newest.record.ok ? 'verified' : 'corrupt', checkedAt: newest.record.checkedAt };
      }
      out.lastScrub = lastScrubOf(velero.map((b) => b.record));
    } else {
      entries = await listBackups(store, dataset, { signal });
      out.backups = entries.length;
      out.corrupt = entries.filter((e) => e.status === 'corrupt').length;
      const newest = entries[0];
      if (newest) {
        const bytes = (newest.manifest.source as { bytes?: unknown }).bytes;
        out.newest = {
          id: newest.id, finishedAt: newest.manifest.finishedAt, ageSeconds: ageSeconds(now, newest.manifest.finishedAt), size: newest.manifest.artifact.size,
          dataBytes: dataset.kind === 'bucket' && typeof bytes === 'number' ? bytes : undefined,
          status: apiStatus(newest), checkedAt: newest.checkedAt?.toISOString(),
        };
      }
      out.lastScrub = lastScrubOf(entries.map((e) => e.verify));
    }
    // Freshness and the drill exactly as the metrics see them.
    for (const { event, payload } of await targetEvents(deps, dataset, entries, signal)) {
      if (event === 'backup.observed') {
        const id = dataset.kind === 'velero' ? (out.newest?.id ?? payload.key) : (entries?.find((e) => e.manifest.artifact.key === payload.key)?.id ?? payload.key);
        out.newestGood = { id, finishedAt: payload.finishedAt, ageSeconds: ageSeconds(now, payload.finishedAt) };
      } else if (event === 'drill.completed') {
        out.lastDrill = { at: payload.finishedAt, ok: payload.ok, ageSeconds: ageSeconds(now, payload.finishedAt), failedChecks: payload.failedChecks ?? [] };
      }
    }
    out.stale = !out.newestGood || out.newestGood.ageSeconds > staleAfterHours * 3600;
  } catch (err) {
    out.error = (err as Error).message;
  }
  return out;
}

export async function datasetSummaries(deps: Deps, signal?: AbortSignal): Promise<ApiDataset[]> {
  return Promise.all(deps.config.datasets.map((d) => datasetSummary(deps, d, signal)));
}
