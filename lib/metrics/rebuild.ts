import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import type { Dataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { LIFEBOAT_RECORDS } from '../catalog/layout.js';
import { drillRecordSchema, verifyRecordSchema } from '../catalog/manifest.js';
import type { EventName, EventPayload } from '../../queue/events.js';
import { backupSizeBytes } from './backupSize.js';
import { replicaDataset, replicaName, replicaRetention, replicasOf } from '../replica/view.js';
import { lagSeconds, replicaPlan } from '../replica/plan.js';
import { MemoryMetricsRecorder, type MetricsRecorder, type Sample } from './recorder.js';

export type Replay = { [E in EventName]: { event: E; payload: EventPayload<E> } }[EventName];

/**
 * What the target itself says about a dataset, as the events that would have produced its metrics:
 * the newest good backup, the newest verification, the newest drill (and, for Velero, the newest
 * completed backup seen by verification). Metrics rebuilt from these survive the loss of Redis.
 */
export async function targetEvents(deps: Deps, dataset: Dataset, entries?: BackupEntry[], signal?: AbortSignal): Promise<Replay[]> {
  const store = deps.storeFor(dataset);
  const out: Replay[] = [];
  if (dataset.kind === 'velero') {
    let newest: { key: string; completedAt: string } | undefined;
    for await (const o of store.list(`${dataset.target.prefix}${LIFEBOAT_RECORDS}verify/`, { signal })) {
      const record = verifyRecordSchema.safeParse(await store.getJson(o.key, { signal }));
      if (record.success && record.data.ok && record.data.completedAt && (!newest || record.data.completedAt > newest.completedAt)) newest = { key: record.data.key, completedAt: record.data.completedAt };
    }
    if (newest) out.push({ event: 'backup.observed', payload: { dataset: dataset.id, kind: dataset.kind, key: newest.key, finishedAt: newest.completedAt } });
    // Velero drill records sit under _lifeboat/drills/ (beside no artifact of ours), one per backup drilled.
    let drill: ReturnType<typeof drillRecordSchema.parse> | undefined;
    for await (const o of store.list(`${dataset.target.prefix}${LIFEBOAT_RECORDS}drills/`, { signal })) {
      const record = drillRecordSchema.safeParse(await store.getJson(o.key, { signal }));
      if (record.success && (!drill || record.data.finishedAt > drill.finishedAt)) drill = record.data;
    }
    if (drill) out.push({ event: 'drill.completed', payload: { dataset: dataset.id, kind: dataset.kind, key: drill.key, ok: drill.ok, startedAt: drill.startedAt, finishedAt: drill.finishedAt, failedChecks: drill.checks.filter((c) => !c.ok).map((c) => c.name) } });
    return out;
  }
  const backups = entries ?? (await listBackups(store, dataset, { signal }));
  out.push({ event: 'catalog.measured', payload: { dataset: dataset.id, kind: dataset.kind, backups: backups.length, corruptKeys: backups.filter((e) => e.status === 'corrupt').map((e) => e.manifest.artifact.key), measuredAt: deps.clock().toISOString() } });
  const good = backups.find((e) => e.status !== 'corrupt');
  if (good) {
    const takenAt = (good.manifest.source as { takenAt?: string }).takenAt;
    out.push({ event: 'backup.observed', payload: { dataset: dataset.id, kind: dataset.kind, key: good.manifest.artifact.key, finishedAt: takenAt ?? good.manifest.finishedAt, size: backupSizeBytes(good.manifest) } });
  }
  const verified = backups.find((e) => e.status === 'verified');
  if (verified?.verify) out.push({ event: 'backup.verified', payload: { dataset: dataset.id, kind: dataset.kind, key: verified.manifest.artifact.key, size: verified.manifest.artifact.size, checkedAt: verified.verify.checkedAt } });
  const drilled = backups.filter((e) => e.drillKey);
  let newestDrill: { ok: boolean; key: string; startedAt: string; finishedAt: string; failed: string[] } | undefined;
  for (const e of drilled) {
    const record = drillRecordSchema.safeParse(await store.getJson(e.drillKey!, { signal }));
    if (record.success && (!newestDrill || record.data.finishedAt > newestDrill.finishedAt)) {
      newestDrill = { ok: record.data.ok, key: record.data.key, startedAt: record.data.startedAt, finishedAt: record.data.finishedAt, failed: record.data.checks.filter((c) => !c.ok).map((c) => c.name) };
    }
  }
  if (newestDrill) out.push({ event: 'drill.completed', payload: { dataset: dataset.id, kind: dataset.kind, key: newestDrill.key, ok: newestDrill.ok, startedAt: newestDrill.startedAt, finishedAt: newestDrill.finishedAt, failedChecks: newestDrill.failed } });
  const primaryVerified = backups.filter((e) => e.status === 'verified');
  for (const replica of replicasOf(dataset)) {
    const view = replicaDataset(dataset, replica);
    // A replica that cannot be read now says nothing; its series keeps its age, and ReplicaStale fires on it.
    const copies = await listBackups(deps.storeFor(view), view, { signal }).catch(() => undefined);
    const newest = copies?.find((e) => e.status === 'verified');
    if (!copies || !newest) continue;
    const { missing } = replicaPlan(primaryVerified, copies, replicaRetention(dataset, replica), deps.clock());
    out.push({
      event: 'backup.replicated',
      payload: { dataset: dataset.id, kind: dataset.kind, replica: replicaName(replica), key: newest.manifest.artifact.key, backupAt: newest.tick.toISOString(), checkedAt: newest.verify!.checkedAt, lagSeconds: lagSeconds(verified, newest), pendingBackups: missing.length },
    });
  }
  return out;
}

/**
 * Replays every dataset's target events into `recorder`. Returns how many events it replayed and the
 * datasets whose target could not be read (logged, not thrown: one unreachable target must not hide
 * the others).
 */
export async function replayTargets(
  deps: Deps,
  recorder: MetricsRecorder,
  options: { signal?: AbortSignal; logLevel?: 'warn' | 'debug' } = {},
): Promise<{ replayed: number; unread: string[] }> {
  let replayed = 0;
  const unread: string[] = [];
  for (const dataset of deps.config.datasets) {
    try {
      for (const { event, payload } of await targetEvents(deps, dataset, undefined, options.signal)) {
        await recorder.onEvent(event, payload as never);
        replayed += 1;
      }
    } catch (err) {
      unread.push(dataset.id);
      deps.logger[options.logLevel ?? 'warn']({ dataset: dataset.id, err: (err as Error).message }, 'could not read the target to rebuild metrics');
    }
  }
  return { replayed, unread };
}

/**
 * Rebuilds the metric state in deps.metrics from the targets (serve does this when Redis has none).
 * Once every target was read it marks the state rebuilt, so an install without backups is not
 * rebuilt again at every check.
 */
export async function rebuildMetrics(deps: Deps): Promise<number> {
  const { replayed, unread } = await replayTargets(deps, deps.metrics);
  if (unread.length === 0) await deps.metrics.markRebuilt(deps.clock());
  return replayed;
}

/**
 * The metric state the targets imply, without Redis: what /metrics shows while Redis is down. Read at
 * every such scrape, so an unreadable target is only a debug line here.
 */
export async function samplesFromTargets(deps: Deps, signal?: AbortSignal): Promise<Sample[]> {
  const memory = new MemoryMetricsRecorder();
  await replayTargets(deps, memory, { signal, logLevel: 'debug' });
  return memory.samples();
}
