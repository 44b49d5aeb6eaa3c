import { apiStatus, type ApiBackup } from '../api/backups.js';
import type { BackupEntry, OrphanFolder } from '../catalog/catalog.js';
import type { Manifest } from '../catalog/manifest.js';

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** "3 h", "12 d": a span of time in the unit that reads at a glance. */
function span(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** "3 h ago", "12 d ago": how old a check is, at a glance. */
export function age(from: Date, now: Date): string {
  return `${span((now.getTime() - from.getTime()) / 1000)} ago`;
}

/** "in 16 h": how soon a scheduled run comes. */
export function until(to: Date, now: Date): string {
  return `in ${span((to.getTime() - now.getTime()) / 1000)}`;
}

/** What a mirror run copied: its manifest's source holds the mirrored object count and bytes (the artifact is only the run's report). */
export function mirrored(manifest: Manifest): { objects?: number; bytes: number } | undefined {
  const { objects, bytes } = manifest.source as { objects?: unknown; bytes?: unknown };
  if (manifest.kind !== 'bucket' || typeof bytes !== 'number') return undefined;
  return { bytes, objects: typeof objects === 'number' ? objects : undefined };
}

/** A listed backup: the catalog entry, with its drill when the caller read it (apiBackup). */
/** copies: where else the backup exists (its replicas), when the dataset has any. */
export type ListedBackup = BackupEntry & { drill?: ApiBackup['drill']; copies?: string[] };

/** "verified 3 h ago (scrub 2 d ago)": the newest check, and the newest scrub when that was another check. */
function verification(e: BackupEntry, now: Date): string {
  const status = apiStatus(e);
  if (!e.verify || !e.checkedAt) return status;
  const scrub = (e.verify.history ?? [e.verify]).find((h) => h.trigger === 'scrub');
  const scrubbed = !scrub ? '' : scrub.checkedAt === e.verify.checkedAt ? ' (scrub)' : ` (scrub ${age(new Date(scrub.checkedAt), now)})`;
  if (status === 'changed-since-verified') return `${status} (verified ${age(e.checkedAt, now)})`;
  return `${status} ${age(e.checkedAt, now)}${scrubbed}`;
}

/**
 * Backups, and the folders that are not (yet) backups, so that nothing on the target goes unseen. A
 * mirror's SIZE and OBJECTS are what it mirrored.
 */
export function backupsTable(entries: ListedBackup[], orphans: Array<OrphanFolder & { dataset: string }> = [], now = new Date()): string {
  // The COPIES column only when some dataset has replicas: most installs have one target.
  const withCopies = entries.some((e) => e.copies !== undefined);
  const copiesCell = (copies: string[] | undefined) => (withCopies ? [copies?.length ? copies.join(', ') : '-'] : []);
  const rows = [['DATASET', 'BACKUP', 'AGE', 'SIZE', 'OBJECTS', 'STATUS', 'DRILL', ...(withCopies ? ['COPIES'] : []), 'KEY']];
  for (const e of entries) {
    const copy = mirrored(e.manifest);
    const size = copy ? formatBytes(copy.bytes) : formatBytes(e.manifest.artifact.size);
    const drill = e.drill ? `${e.drill.ok ? 'ok' : 'FAILED'} ${age(new Date(e.drill.at), now)}` : '-';
    rows.push([e.dataset, e.id, age(new Date(e.manifest.finishedAt), now), size, copy?.objects === undefined ? '-' : String(copy.objects), verification(e, now), drill, ...copiesCell(e.copies), e.manifest.artifact.key]);
  }
  for (const o of orphans) {
    rows.push([o.dataset, o.id, age(o.lastModified, now), formatBytes(o.bytes), String(o.keys.length), o.reason === 'no manifest' ? 'incomplete (no manifest)' : 'unreadable manifest', '-', ...copiesCell(undefined), '-']);
  }
  return table(rows);
}
