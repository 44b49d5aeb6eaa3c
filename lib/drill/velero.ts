import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { VeleroDataset } from '../config/schema.js';
import { LIFEBOAT_RECORDS, tickStamp } from '../catalog/layout.js';
import type { Check } from '../catalog/manifest.js';
import { FINAL_RESTORE_PHASES, VeleroApi, type VeleroBackup, type VeleroRestore } from '../kube/velero.js';
import { DRILL_LABEL } from '../postgres/scratch.js';
import { errorMessage, isPermanent, PermanentError } from '../../queue/errors.js';
import type { Drill, DrillScope } from './types.js';
import { plural } from '../text.js';

type VeleroDrillSettings = NonNullable<VeleroDataset['drill']['kubernetes']>;

const FIRST_POLL_MS = 250;
const MAX_POLL_MS = 10_000;
/** Cleanup runs even after the job's signal fired, so it gets its own bound instead. */
const CLEANUP_TIMEOUT_MS = 60_000;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Deterministic per dataset and tick, so a retry after a kill finds the Restore the killed attempt made. */
export function restoreName(datasetId: string, tick: Date): string {
  return `lifeboat-drill-${datasetId}-${tickStamp(tick).toLowerCase()}`;
}

/**
 * <scratchPrefix>-<hash>-<source>, cut to a 63-character DNS label. The hash covers the restore and the
 * source namespace, so two long sources that share their first characters still map apart.
 */
export function scratchNamespace(prefix: string, restore: string, source: string): string {
  const hash = createHash('sha256').update(`${restore}/${source}`).digest('hex').slice(0, 8);
  return `${prefix}-${hash}-${source}`.slice(0, 63).replace(/-+$/, '');
}

/** Where the drill record goes: Velero owns backups/, so it lives under _lifeboat/. */
export function veleroDrillRecordKey(dataset: Pick<VeleroDataset, 'target'>, backup: string): string {
  return `${dataset.target.prefix}${LIFEBOAT_RECORDS}drills/${backup}.json`;
}

/**
 * Restores a Velero backup into scratch namespaces through Velero itself (a Restore object with a
 * namespace mapping), checks the outcome, and always deletes the Restore and the namespaces again.
 */
export const drillVelero: Drill<VeleroDataset> = async (dataset, scope, input) => {
  const settings = dataset.drill.kubernetes;
  if (!settings) throw new PermanentError(`dataset ${dataset.id}: drill.kubernetes is not set; a Velero drill restores through the cluster API`);
  const api = new VeleroApi(scope.deps.kube(settings.kubeconfig), settings.veleroNamespace);
  const backup = pickBackup(dataset.id, settings.veleroNamespace, await api.listBackups(scope.signal), input.backup, scope.tick);
  const backupName = backup.metadata.name;
  const sources = sourceNamespaces(dataset.id, settings, backup);
  const name = restoreName(dataset.id, scope.tick);
  const mapping = Object.fromEntries(sources.map((source) => [source, scratchNamespace(settings.scratchPrefix, name, source)]));
  const scratch = Object.values(mapping);
  const veleroKey = `${dataset.target.prefix}backups/${backupName}/velero-backup.json`;
  const onHub = await scope.deps.storeFor(dataset).head(veleroKey, { signal: scope.signal }).catch(() => undefined);

  const checks: Check[] = [];
  let retryable: unknown;
  let restore: VeleroRestore | undefined;
  let restoreMs = 0;
  const timeout = AbortSignal.timeout(settings.timeoutSeconds * 1000);
  const signal = AbortSignal.any([scope.signal, timeout]);
  const started = Date.now();
  try {
    const labels = { [DRILL_LABEL]: 'true', 'app.kubernetes.io/managed-by': 'lifeboat', 'lifeboat.dev/dataset': dataset.id };
    const spec = { backupName, includedNamespaces: sources, namespaceMapping: mapping, restorePVs: true, existingResourcePolicy: 'none' as const };
    const made = await api.createRestore(name, spec, labels, signal);
    // Our own name, so an earlier attempt's leftover from before the newest backup changed: cleanup deletes it and the retry starts afresh.
    if (made.restore.spec?.backupName !== backupName) throw new Error(`restore ${settings.veleroNamespace}/${name} already exists for backup ${made.restore.spec?.backupName}, not ${backupName}`);
    scope.log.info({ backup: backupName, restore: name, namespaces: mapping, reused: !made.created }, made.created ? 'velero restore created' : 'velero restore of an earlier attempt reused');
    restore = await waitForRestore(api, name, signal);
    restoreMs = elapsedMs(restore) ?? Date.now() - started;
    checks.push(phaseCheck(restore), itemsCheck(restore, backup));
    checks.push(await namespacesCheck(api, mapping, signal));
  } catch (err) {
    const timedOut = timeout.aborted && !scope.signal.aborted;
    const failure = timedOut ? new Error(`restore ${settings.veleroNamespace}/${name} did not finish within ${settings.timeoutSeconds} s`, { cause: err }) : scope.signal.aborted ? scope.signal.reason : err;
    // A forbidden or invalid request stays forbidden on retry; an unreachable API or a timeout may not.
    if (!isPermanent(failure)) retryable = failure;
    // Before the restore finished it is the restore that failed; after, only the namespace check could have.
    checks.push({ name: restore ? 'scratch namespaces' : 'velero restore', ok: false, detail: timedOut ? (failure as Error).message : errorMessage(failure) });
  } finally {
    const cleanup = await cleanUp(api, name, scratch, scope);
    checks.push(cleanup.check);
    // The names are deterministic, so a retry deletes what this attempt could not.
    if (!cleanup.check.ok && !isPermanent(cleanup.error)) retryable ??= cleanup.error;
  }

  const progress = restore?.status?.progress;
  return {
    backup: backupName,
    key: onHub ? veleroKey : backupName,
    recordKey: veleroDrillRecordKey(dataset, backupName),
    mode: 'kubernetes',
    where: `scratch namespaces ${scratch.join(', ')} (restore ${settings.veleroNamespace}/${name})`,
    restoreMs,
    checks,
    retryable,
    details: { backup: backupName, restore: name, phase: restore?.status?.phase, itemsRestored: progress?.itemsRestored, totalItems: progress?.totalItems, namespaces: mapping },
  };
};

/** A named backup (Completed), else the newest Completed one finished at or before the tick, so a retry drills the same one. */
function pickBackup(datasetId: string, namespace: string, backups: VeleroBackup[], wanted: string | undefined, tick: Date): VeleroBackup {
  if (wanted) {
    const named = backups.find((b) => b.metadata.name === wanted);
    if (!named) throw new PermanentError(`dataset ${datasetId} has no Velero backup ${wanted} in namespace ${namespace}`);
    if (named.status?.phase !== 'Completed') throw new PermanentError(`Velero backup ${namespace}/${wanted} of dataset ${datasetId} is ${named.status?.phase ?? 'without a phase'}, not Completed`);
    return named;
  }
  const completed = backups
    .filter((b) => b.status?.phase === 'Completed' && b.status.completionTimestamp && Date.parse(b.status.completionTimestamp) <= tick.getTime())
    .sort((a, b) => Date.parse(b.status!.completionTimestamp!) - Date.parse(a.status!.completionTimestamp!) || b.metadata.name.localeCompare(a.metadata.name));
  if (completed[0]) return completed[0];
  const phases = new Map<string, number>();
  for (const b of backups) phases.set(b.status?.phase ?? 'no phase', (phases.get(b.status?.phase ?? 'no phase') ?? 0) + 1);
  const seen = backups.length === 0 ? 'there are none' : `there are ${[...phases].map(([phase, n]) => `${n} ${phase}`).join(', ')}`;
  throw new PermanentError(`dataset ${datasetId} has no Completed Velero backup in namespace ${namespace} completed at or before ${tick.toISOString()} (${seen})`);
}

/** The configured namespaces, else the backup's own list; a backup of "everything" needs drill.kubernetes.namespaces. */
function sourceNamespaces(datasetId: string, settings: VeleroDrillSettings, backup: VeleroBackup): string[] {
  const listed = backup.spec?.includedNamespaces ?? [];
  const explicit = listed.length > 0 && listed.every((ns) => DNS_LABEL.test(ns)) ? listed : undefined;
  const label = `Velero backup ${settings.veleroNamespace}/${backup.metadata.name}`;
  if (!settings.namespaces) {
    if (!explicit) throw new PermanentError(`dataset ${datasetId}: drill.kubernetes.namespaces is required: ${label} does not list explicit namespaces (${listed.length ? listed.join(', ') : 'it includes all'}), so the drill cannot tell which to restore`);
    return explicit;
  }
  const missing = explicit ? settings.namespaces.filter((ns) => !explicit.includes(ns)) : [];
  if (missing.length) throw new PermanentError(`dataset ${datasetId}: drill.kubernetes.namespaces lists ${missing.join(', ')}, which ${label} does not hold (it holds ${explicit!.join(', ')})`);
  return settings.namespaces;
}

/** Polls until Velero is done with the restore, backing off up to MAX_POLL_MS; `signal` carries the timeout. */
async function waitForRestore(api: VeleroApi, name: string, signal: AbortSignal): Promise<VeleroRestore> {
  for (let delay = FIRST_POLL_MS; ; delay = Math.min(delay * 2, MAX_POLL_MS)) {
    const restore = await api.getRestore(name, signal);
    // Someone deleted it under us (or Velero's GC did): nothing learned about the backup, so retryable.
    if (!restore) throw new Error(`restore ${api.namespace}/${name} disappeared while the drill waited for it`);
    if ((FINAL_RESTORE_PHASES as readonly string[]).includes(restore.status?.phase ?? '')) return restore;
    await sleep(delay, undefined, { signal });
  }
}

function elapsedMs(restore: VeleroRestore): number | undefined {
  const { startTimestamp, completionTimestamp } = restore.status ?? {};
  if (!startTimestamp || !completionTimestamp) return undefined;
  const ms = Date.parse(completionTimestamp) - Date.parse(startTimestamp);
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

function phaseCheck(restore: VeleroRestore): Check {
  const status = restore.status ?? {};
  const phase = status.phase ?? 'unknown';
  const counts = `${plural(status.errors ?? 0, 'error')}, ${plural(status.warnings ?? 0, 'warning')}`;
  if (phase === 'Completed') return { name: 'velero restore', ok: true, detail: `Completed (${counts})` };
  if (phase === 'FailedValidation') return { name: 'velero restore', ok: false, detail: `FailedValidation: ${(status.validationErrors ?? []).join('; ') || 'no reason given'}` };
  const reason = status.failureReason ? `; failure reason: ${status.failureReason}` : '';
  return { name: 'velero restore', ok: false, detail: `${phase} with ${counts}${reason} (velero restore describe ${restore.metadata.name} --details, before the drill deletes it)` };
}

function itemsCheck(restore: VeleroRestore, backup: VeleroBackup): Check {
  const restored = restore.status?.progress?.itemsRestored ?? 0;
  const total = restore.status?.progress?.totalItems ?? 0;
  const inBackup = backup.status?.progress?.totalItems;
  const ok = total > 0 && restored === total;
  const why = total === 0 ? ': the restore had nothing to restore' : '';
  return { name: 'items', ok, detail: `restored ${restored} of ${total} items${why} (the whole backup holds ${inBackup ?? 'an unknown number of'} items)` };
}

async function namespacesCheck(api: VeleroApi, mapping: Record<string, string>, signal: AbortSignal): Promise<Check> {
  const missing: string[] = [];
  for (const [source, scratch] of Object.entries(mapping)) {
    if (!(await api.namespaceActive(scratch, signal))) missing.push(`${scratch} (from ${source})`);
  }
  const all = Object.values(mapping);
  return missing.length
    ? { name: 'scratch namespaces', ok: false, detail: `missing after the restore: ${missing.join(', ')}` }
    : { name: 'scratch namespaces', ok: true, detail: `${all.length === 1 ? 'exists' : `all ${all.length} exist`}: ${all.join(', ')}` };
}

/** Deletes the Restore, then the namespaces it restored into; every step is tried, whatever failed before it. */
async function cleanUp(api: VeleroApi, name: string, namespaces: string[], scope: DrillScope): Promise<{ check: Check; error?: unknown }> {
  const signal = AbortSignal.timeout(CLEANUP_TIMEOUT_MS);
  const failed: string[] = [];
  let error: unknown;
  const deleted: string[] = [];
  for (const [what, remove] of [[`restore ${api.namespace}/${name}`, () => api.deleteRestore(name, signal)] as const, ...namespaces.map((ns) => [`namespace ${ns}`, () => api.deleteNamespace(ns, signal)] as const)]) {
    try {
      if (await remove()) deleted.push(what);
    } catch (err) {
      error ??= err;
      failed.push(`${what}: ${errorMessage(err)}`);
    }
  }
  if (failed.length) {
    scope.log.error({ restore: name, failed }, 'velero drill cleanup failed');
    return { check: { name: 'cleanup', ok: false, detail: `could not delete ${failed.join('; ')}` }, error };
  }
  return { check: { name: 'cleanup', ok: true, detail: deleted.length ? `deleted ${deleted.join(', ')}` : 'nothing was left to delete' } };
}
