import type { BackupEntry } from './catalog.js';

export interface RetentionPolicy {
  daily: number;
  weekly: number;
  monthly: number;
}

export interface RetentionPlan {
  keep: Array<{ entry: BackupEntry; reasons: string[] }>;
  delete: BackupEntry[];
  /** Set when the guard stopped deletions that would have left too few verified backups. */
  guarded?: string;
}

/** Backups younger than this are never deleted: their verification may still be pending. */
export const GRACE_MS = 2 * 24 * 3600_000;

const day = (d: Date) => d.toISOString().slice(0, 10);
const month = (d: Date) => d.toISOString().slice(0, 7);
function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  t.setUTCDate(t.getUTCDate() + 4 - (t.getUTCDay() || 7));
  const week = Math.ceil(((t.getTime() - Date.UTC(t.getUTCFullYear(), 0, 1)) / 86400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

/**
 * Which backups to keep: the newest *verified* backup of each of the last `daily` days that have one
 * (and of `weekly` weeks, `monthly` months), plus everything inside the grace period. Unverified and
 * corrupt backups never fill a slot, so a run of failures can never push the last good copies out.
 * The guard re-checks the result: if fewer than min(daily, verified) verified backups would remain,
 * nothing is deleted.
 */
export function planRetention(entries: BackupEntry[], policy: RetentionPolicy, now: Date): RetentionPlan {
  const newestFirst = [...entries].sort((a, b) => b.tick.getTime() - a.tick.getTime());
  const reasons = new Map<BackupEntry, string[]>();
  const note = (e: BackupEntry, why: string) => reasons.set(e, [...(reasons.get(e) ?? []), why]);
  const verified = newestFirst.filter((e) => e.status === 'verified');
  for (const [count, bucketOf, label] of [
    [policy.daily, day, 'daily'],
    [policy.weekly, isoWeek, 'weekly'],
    [policy.monthly, month, 'monthly'],
  ] as const) {
    const seen = new Set<string>();
    for (const e of verified) {
      if (seen.size >= count) break;
      const slot = bucketOf(e.tick);
      if (seen.has(slot)) continue;
      seen.add(slot);
      note(e, `${label} ${slot}`);
    }
  }
  for (const e of newestFirst) if (now.getTime() - e.tick.getTime() < GRACE_MS) note(e, 'within the grace period');

  const keep = newestFirst.filter((e) => reasons.has(e)).map((entry) => ({ entry, reasons: reasons.get(entry)! }));
  const remove = newestFirst.filter((e) => !reasons.has(e));
  const verifiedLeft = keep.filter((k) => k.entry.status === 'verified').length;
  const required = Math.min(policy.daily, verified.length);
  if (verifiedLeft < required) {
    return { keep: newestFirst.map((entry) => ({ entry, reasons: reasons.get(entry) ?? ['kept by the guard'] })), delete: [], guarded: `only ${verifiedLeft} of ${required} required verified backups would remain` };
  }
  return { keep, delete: remove };
}
