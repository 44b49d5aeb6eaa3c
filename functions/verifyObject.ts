import { z } from 'zod';
import type { Dataset } from '../lib/config/schema.js';
import { requireDataset } from '../lib/datasets.js';
import type { VerifyRecord } from '../lib/catalog/manifest.js';
import { cronIntervalMs, planScrub, scrubCandidates, type ScrubCandidate } from '../lib/catalog/scrub.js';
import { failureReason, verifyArtifact, verifyForeignObject, type VerifyScope } from '../lib/catalog/verify.js';
import { defineFunction, type Ctx } from '../queue/define.js';
import { CorruptBackupError, PermanentError } from '../queue/errors.js';

/** Within this window an object version is verified once, however often it is announced. */
export const VERIFY_DEDUPE_WINDOW_MS = 3600_000;

/**
 * One object version is verified once per window, whether it was announced by our own backup.uploaded
 * or by a bucket notification. The window keeps a later announcement of the same ETag (a re-upload with
 * equal bytes, a replayed notification days later) from being swallowed forever. Quotes stripped: HEAD
 * gives "etag", notifications give etag.
 */
export function verifyDedupeKey(o: { target: string; bucket: string; key: string; etag?: string; version?: string; at: Date | string }): string {
  const at = typeof o.at === 'string' ? Date.parse(o.at) : o.at.getTime();
  const window = Number.isNaN(at) ? 'now' : String(Math.floor(at / VERIFY_DEDUPE_WINDOW_MS));
  return `${o.target}/${o.bucket}/${o.key}/${o.etag?.replace(/"/g, '') || o.version || ''}/${window}`;
}

export const verifyObject = defineFunction({
  name: 'verifyObject',
  description: 'Re-reads stored artifacts (one object, chosen backups, or the scheduled scrub), compares size and sha256 with their manifests, checks their content, and records verify.json.',
  input: z
    .object({
      /** Required except for the scrub, which covers every dataset unless one is named. */
      dataset: z.string().min(1).optional(),
      /** One object, as an upload's fan-out or a bucket notification names it. */
      key: z.string().min(1).optional(),
      /** A backup id, "latest" (the default without key) or "all". */
      backup: z.string().min(1).optional(),
      /** The scheduled re-read of everything whose last check is due. */
      scrub: z.boolean().optional(),
      etag: z.string().optional(),
      /** From a bucket notification: an object another tool wrote, with no manifest of ours beside it. */
      external: z.boolean().optional(),
      size: z.number().int().nonnegative().optional(),
    })
    .superRefine((input, ctx) => {
      if (input.scrub) {
        if (input.key !== undefined) ctx.addIssue({ code: 'custom', path: ['key'], message: 'a scrub chooses its own objects; give no key' });
        if (input.backup !== undefined) ctx.addIssue({ code: 'custom', path: ['backup'], message: 'a scrub chooses its own backups; give no backup' });
        return;
      }
      if (input.dataset === undefined) ctx.addIssue({ code: 'custom', path: ['dataset'], message: 'Required' });
      if (input.key !== undefined && input.backup !== undefined) ctx.addIssue({ code: 'custom', path: ['backup'], message: 'give a key or a backup, not both' });
    }),
  triggers: [
    {
      event: 'backup.uploaded',
      // The same object (same content version) is verified once per window, however often the event arrives.
      dedupe: (e: { target: string; bucket: string; key: string; etag?: string; sha256?: string; finishedAt: string }) => verifyDedupeKey({ ...e, version: e.sha256, at: e.finishedAt }),
    },
    { cron: (config) => (config.verify.scrub.enabled ? [{ id: 'scrub', pattern: config.verify.scrub.schedule, input: { scrub: true } }] : []) },
  ],
  retries: { attempts: 5, backoffMs: 30_000 },
  concurrency: 2,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    if (input.scrub) return scrub(ctx, input.dataset);
    const dataset = requireDataset(ctx.deps.config, input.dataset!);
    if (input.key === undefined) return verifyBackups(ctx, dataset, input.backup ?? 'latest');
    if (input.external) {
      const record = await verifyForeignObject(ctx, dataset, input.key, input.size, 'upload');
      if (!record) return missing(ctx, dataset, input.key);
      if (!record.ok) throw corrupt(`${ctx.deps.storeFor(dataset).label}/${input.key}`, [finding(dataset, input.key, input.key, record)]);
      return record;
    }
    const record = await verifyArtifact(ctx, dataset, input.key, 'upload');
    if (!record.ok) throw corrupt(`${ctx.deps.storeFor(dataset).label}/${input.key}`, [finding(dataset, input.key, input.key, record)]);
    return record;
  },
});

/** One verified object, as the CLI's table and the job's result show it. */
export interface VerifyFinding {
  dataset: string;
  backup: string;
  key: string;
  size: number;
  ok: boolean;
  checks: number;
  /** The failed checks, or why nothing could be read. */
  reason?: string;
  checkedAt: string;
}

function finding(dataset: Dataset, backup: string, key: string, record: VerifyRecord): VerifyFinding {
  return { dataset: dataset.id, backup, key, size: record.actual.size, ok: record.ok, checks: record.checks.length, reason: record.ok ? undefined : failureReason(record), checkedAt: record.checkedAt };
}

function corrupt(what: string, findings: VerifyFinding[]): CorruptBackupError {
  const bad = findings.filter((f) => !f.ok);
  const detail = bad.slice(0, 5).map((f) => `${f.dataset} ${f.backup}: ${f.reason}`).join('; ');
  return new CorruptBackupError(`${what}: ${bad.length} of ${findings.length} corrupt: ${detail}${bad.length > 5 ? '; …' : ''}`, findings);
}

/**
 * A notification for an object that is not there (deleted since, or never written): not a verdict on
 * anything we hold, and nothing a retry could change. Counted, so a flood of them is visible.
 */
async function missing(ctx: Ctx, dataset: Dataset, key: string) {
  ctx.log.warn({ key }, 'notified object does not exist; nothing to verify');
  await ctx.deps.metrics.count('lifeboat_webhook_events_total', { result: 'missing' });
  return { missing: true, dataset: dataset.id, key };
}

/** Re-reads one candidate; a foreign object that is gone loses its record (its tool pruned it). */
async function checkCandidate(scope: VerifyScope, c: ScrubCandidate, trigger: 'scrub' | 'manual'): Promise<VerifyFinding | undefined> {
  if (c.foreign) {
    const record = await verifyForeignObject(scope, c.dataset, c.key, undefined, trigger);
    if (record) return finding(c.dataset, c.id, c.key, record);
    await scope.deps.storeFor(c.dataset).delete([c.foreign.recordKey], { signal: scope.signal });
    scope.log.info({ key: c.key }, 'foreign object is gone; its verification record was removed');
    return undefined;
  }
  return finding(c.dataset, c.id, c.key, await verifyArtifact(scope, c.dataset, c.key, trigger));
}

/** `lifeboat verify` and `run verifyObject --dataset x [--backup id]`: the chosen backups, now. */
async function verifyBackups(ctx: Ctx, dataset: Dataset, backup: string) {
  const candidates = await scrubCandidates(ctx.deps, [dataset], ctx.signal);
  const own = candidates.filter((c) => !c.foreign);
  const chosen = backup === 'all' ? candidates : backup === 'latest' ? own.slice(0, 1) : candidates.filter((c) => c.id === backup || c.key === backup);
  if (chosen.length === 0) {
    const have = own.slice(0, 5).map((c) => c.id).join(', ');
    throw new PermanentError(backup === 'latest' || backup === 'all' ? `dataset ${dataset.id} has no backups on its target` : `dataset ${dataset.id} has no backup ${backup}${have ? ` (have: ${have}${own.length > 5 ? ', …' : ''})` : ''}`);
  }
  const findings: VerifyFinding[] = [];
  for (const c of chosen) {
    const f = await checkCandidate(ctx, c, 'manual');
    findings.push(f ?? { dataset: dataset.id, backup: c.id, key: c.key, size: 0, ok: false, checks: 0, reason: 'the object does not exist', checkedAt: ctx.deps.clock().toISOString() });
  }
  if (findings.some((f) => !f.ok)) throw corrupt(`dataset ${dataset.id}`, findings);
  return { dataset: dataset.id, findings };
}

/**
 * The scheduled scrub: every retained backup (and every foreign object we verified) whose last check
 * is due, oldest check first, within the byte budget. A corrupt find fails the job after every due
 * object was read, so one bad backup does not hide the next.
 */
async function scrub(ctx: Ctx, only?: string) {
  const { config } = ctx.deps;
  const datasets = only ? [requireDataset(config, only)] : config.datasets;
  const policy = config.verify.scrub;
  const now = ctx.deps.clock();
  const plan = planScrub(await scrubCandidates(ctx.deps, datasets, ctx.signal), {
    now,
    everyDays: policy.everyDays,
    intervalMs: cronIntervalMs(policy.schedule, config.server.timezone, now),
    maxBytesPerRun: policy.maxBytesPerRun,
  });
  const findings: VerifyFinding[] = [];
  let bytes = 0;
  for (const c of plan.check) {
    ctx.signal.throwIfAborted();
    const f = await checkCandidate(ctx, c, 'scrub');
    if (f) findings.push(f);
    bytes += c.bytes;
  }
  const summary = { checked: findings.length, corrupt: findings.filter((f) => !f.ok).length, bytes, deferred: plan.deferred.length, notDue: plan.notDue };
  ctx.log.info(summary, 'scrub finished');
  if (plan.deferred.length > 0) ctx.log.warn({ deferred: plan.deferred.length, maxBytesPerRun: policy.maxBytesPerRun }, 'scrub budget reached; the rest is first next run');
  if (summary.corrupt > 0) throw corrupt('scrub', findings);
  return { ...summary, findings };
}
