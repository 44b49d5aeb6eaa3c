import { CronExpressionParser } from 'cron-parser';
import { listBackups } from './catalog.js';
import type { Config, Dataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { verifyRecordSchema } from './manifest.js';
import { foreignVerifyPrefix } from './verify.js';

const DAY = 86400_000;

/** One stored object the scrub may re-read: one of our backups, or an object another tool wrote that we verified once. */
export interface ScrubCandidate {
  dataset: Dataset;
  /** The backup id, or the foreign object's key. */
  id: string;
  key: string;
  bytes: number;
  /** When its newest verification of these bytes ran; undefined: never (or the bytes changed since). */
  lastChecked?: Date;
  /** An object another tool wrote; its record lives under _lifeboat/verify/. */
  foreign?: { recordKey: string };
}

/**
 * Everything the scrub could re-read, from the targets alone: every backup in the catalog, and every
 * foreign object with a verification record. Mirrors are checked through their reports (the mirror
 * itself compares listings and a sha256 sample on every run).
 */
export async function scrubCandidates(deps: Deps, datasets: readonly Dataset[], signal?: AbortSignal): Promise<ScrubCandidate[]> {
  const out: ScrubCandidate[] = [];
  for (const dataset of datasets) {
    const store = deps.storeFor(dataset);
    if (dataset.kind !== 'velero') {
      for (const e of await listBackups(store, dataset, { signal })) {
        const lastChecked = e.changedSinceVerified ? undefined : e.checkedAt;
        out.push({ dataset, id: e.id, key: e.manifest.artifact.key, bytes: e.manifest.artifact.size, lastChecked });
      }
    }
    if (dataset.kind === 'bucket') continue;
    for await (const o of store.list(foreignVerifyPrefix(dataset), { signal })) {
      const record = verifyRecordSchema.safeParse(await store.getJson(o.key, { signal }).catch(() => undefined));
      if (!record.success) continue;
      out.push({ dataset, id: record.data.key, key: record.data.key, bytes: Math.max(0, record.data.actual.size), lastChecked: new Date(record.data.checkedAt), foreign: { recordKey: o.key } });
    }
  }
  return out;
}

/** The time between two runs of a cron pattern, from now: what "due" must allow for so no check slips past everyDays. */
export function cronIntervalMs(pattern: string, tz: string, now: Date): number {
  const expression = CronExpressionParser.parse(pattern, { tz, currentDate: now });
  const first = expression.next().getTime();
  return expression.next().getTime() - first;
}

export interface ScrubPlan {
  /** Due now, oldest check first, within the byte budget. */
  check: ScrubCandidate[];
  /** Due, but over this run's byte budget: first in line next time. */
  deferred: ScrubCandidate[];
  notDue: number;
}

/**
 * Which candidates this run re-reads. A candidate is due when its last check is older than everyDays
 * less one scrub interval, so that with a run every interval each is re-read within everyDays. Never
 * checked comes first, then oldest check first. The byte budget always admits the first due candidate,
 * so a budget smaller than one backup still makes progress.
 */
export function planScrub(candidates: ScrubCandidate[], options: { now: Date; everyDays: number; intervalMs: number; maxBytesPerRun?: number }): ScrubPlan {
  const window = Math.max(options.everyDays * DAY - options.intervalMs, 0);
  const dueBefore = options.now.getTime() - window;
  const when = (c: ScrubCandidate) => c.lastChecked?.getTime() ?? -Infinity;
  const due = candidates.filter((c) => when(c) <= dueBefore).sort((a, b) => when(a) - when(b));
  const plan: ScrubPlan = { check: [], deferred: [], notDue: candidates.length - due.length };
  let bytes = 0;
  for (const c of due) {
    // Once one is over the budget, so is everything after it: strictly oldest first.
    const over = plan.deferred.length > 0 || (plan.check.length > 0 && options.maxBytesPerRun !== undefined && bytes + c.bytes > options.maxBytesPerRun);
    if (over) plan.deferred.push(c);
    else {
      plan.check.push(c);
      bytes += c.bytes;
    }
  }
  return plan;
}

/** The scrub settings with the config's time zone, for callers that only need the policy. */
export function scrubPolicy(config: Config) {
  return { ...config.verify.scrub, tz: config.server.timezone };
}
