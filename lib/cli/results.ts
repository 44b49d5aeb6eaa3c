import { formatBytes } from './format.js';

/** How a job's result reads on a terminal: the scalar fields, sizes in units, lists and tallies counted. */
export function summarizeResult(value: unknown, depth = 0): string {
  if (value === null || value === undefined) return '-';
  if (typeof value !== 'object') return String(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return 'none';
    const scalars = value.every((v) => typeof v !== 'object' || v === null);
    if (scalars && value.length <= 6) return value.join(', ');
    // One or two records (a verify's findings): their fields; more: how many.
    if (!scalars && value.length <= 2 && depth < 2) return value.map((v) => summarizeResult(v, depth)).join(', ');
    return `${value.length} ${value.length === 1 ? 'item' : 'items'}`;
  }
  const record = value as Record<string, unknown>;
  if (typeof record.count === 'number' && typeof record.bytes === 'number' && Object.keys(record).length <= 3) return `${record.count} (${formatBytes(record.bytes)})`;
  if (depth >= 2) return `{${Object.keys(record).length} fields}`;
  const parts: string[] = [];
  for (const [key, v] of Object.entries(record)) {
    if (v === undefined) continue;
    parts.push(`${key} ${fieldText(key, v, depth)}`);
  }
  return depth === 0 ? parts.join(' · ') : `{${parts.join(', ')}}`;
}

function fieldText(key: string, v: unknown, depth: number): string {
  if (typeof v === 'number' && /(^size$|bytes$|Bytes$)/.test(key)) return formatBytes(v);
  if (typeof v === 'number' && /Ms$/.test(key)) return `${(v / 1000).toFixed(1)} s`;
  if (typeof v === 'string' && /sha256$/i.test(key) && v.length === 64) return `${v.slice(0, 12)}…`;
  return summarizeResult(v, depth + 1);
}

/** One line per run: "✓ dumpPostgres: key … · size 14.7 MiB" or "✗ verifyObject (2 attempts): <error>". */
export function resultLine(r: { fn: string; ok: boolean; attempts?: number; result?: unknown; error?: string }): string {
  const attempts = r.attempts && r.attempts > 1 ? ` (${r.attempts} attempts)` : '';
  return r.ok ? `✓ ${r.fn}${attempts}: ${summarizeResult(r.result)}` : `✗ ${r.fn}${attempts}: ${r.error ?? 'failed'}`;
}
