import type { BackupEntry } from '../catalog.js';

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

export function backupsTable(entries: BackupEntry[]): string {
  const rows = [['DATASET', 'BACKUP', 'FINISHED', 'SIZE', 'STATUS', 'KEY']];
  for (const e of entries) {
    rows.push([e.dataset, e.id, e.manifest.finishedAt.replace(/\.\d+Z$/, 'Z'), formatBytes(e.manifest.artifact.size), e.status, e.manifest.artifact.key]);
  }
  return table(rows);
}
