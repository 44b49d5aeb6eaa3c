import type { BackupEntry, OrphanFolder } from '../catalog/catalog.js';

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

/** "3 h ago", "12 d ago": how old a check is, at a glance. */
export function age(from: Date, now: Date): string {
  const s = Math.max(0, (now.getTime() - from.getTime()) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Backups, and the folders that are not (yet) backups, so that nothing on the target goes unseen. */
export function backupsTable(entries: BackupEntry[], orphans: Array<OrphanFolder & { dataset: string }> = [], now = new Date()): string {
  const rows = [['DATASET', 'BACKUP', 'FINISHED', 'SIZE', 'STATUS', 'CHECKED', 'KEY']];
  for (const e of entries) {
    const status = e.changedSinceVerified ? 'unverified (changed since verified)' : e.status;
    rows.push([e.dataset, e.id, e.manifest.finishedAt.replace(/\.\d+Z$/, 'Z'), formatBytes(e.manifest.artifact.size), status, e.checkedAt ? age(e.checkedAt, now) : 'never', e.manifest.artifact.key]);
  }
  for (const o of orphans) {
    rows.push([o.dataset, o.id, '-', formatBytes(o.bytes), o.reason === 'no manifest' ? 'incomplete (no manifest)' : 'unreadable manifest', '-', `${o.keys.length} objects`]);
  }
  return table(rows);
}
