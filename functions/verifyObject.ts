import { z } from 'zod';
import { requireDataset } from '../lib/datasets.js';
import { inspectArtifact } from '../lib/inspect.js';
import { MANIFEST_FILE, siblingKey, VERIFY_FILE } from '../lib/layout.js';
import { manifestSchema, type Check, type VerifyRecord } from '../lib/manifest.js';
import type { Dataset } from '../lib/config/schema.js';
import { ObjectNotFoundError, type TargetStore } from '../lib/targets/store.js';
import { objectRangeSource } from '../lib/etcd/local.js';
import { inspectZipSnapshot } from '../lib/etcd/snapshot.js';
import { inspectForeignObject } from '../lib/foreign.js';
import { MIRROR_REPORTS } from '../lib/layout.js';
import { defineFunction, type Ctx } from '../queue/define.js';
import { CorruptBackupError } from '../queue/errors.js';

/**
 * One object version is verified once, whether it was announced by our own backup.uploaded or by a
 * bucket notification. Quotes stripped: HEAD gives "etag", notifications give etag.
 */
export function verifyDedupeKey(o: { target: string; bucket: string; key: string; etag?: string; version?: string }): string {
  return `${o.target}/${o.bucket}/${o.key}/${o.etag?.replace(/"/g, '') || o.version || ''}`;
}

export const verifyObject = defineFunction({
  name: 'verifyObject',
  description: 'Re-reads an uploaded artifact, compares size and sha256 with its manifest, checks its content, and writes verify.json.',
  input: z.object({
    dataset: z.string().min(1),
    key: z.string().min(1),
    etag: z.string().optional(),
    /** From a bucket notification: an object another tool wrote, with no manifest of ours beside it. */
    external: z.boolean().optional(),
    size: z.number().int().nonnegative().optional(),
  }),
  triggers: [
    {
      event: 'backup.uploaded',
      // The same object (same content version) is verified once, however often the event arrives.
      dedupe: (e: { target: string; bucket: string; key: string; etag?: string; sha256?: string }) => verifyDedupeKey({ ...e, version: e.sha256 }),
    },
  ],
  retries: { attempts: 5, backoffMs: 30_000 },
  concurrency: 2,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset);
    const store = ctx.deps.storeFor(dataset);
    const started = ctx.deps.clock();
    const checks: Check[] = [];
    let actual = { size: -1, sha256: '' };
    let expected = { size: -1, sha256: '' };

    const rawManifest = await store.getJson(siblingKey(input.key, MANIFEST_FILE), { signal: ctx.signal });
    if (rawManifest === undefined && input.external) return verifyForeign(input, ctx);
    const manifest = manifestSchema.safeParse(rawManifest);
    if (rawManifest === undefined) checks.push({ name: 'manifest', ok: false, detail: `no ${MANIFEST_FILE} beside the object` });
    else if (!manifest.success) checks.push({ name: 'manifest', ok: false, detail: `${MANIFEST_FILE} is not a valid manifest` });
    else if (manifest.data.artifact.key !== input.key) checks.push({ name: 'manifest', ok: false, detail: `${MANIFEST_FILE} describes ${manifest.data.artifact.key}` });
    else {
      const artifact = manifest.data.artifact;
      expected = { size: artifact.size, sha256: artifact.sha256 };
      checks.push({ name: 'manifest', ok: true, detail: `written ${manifest.data.finishedAt}` });
      try {
        const inspection = await inspectArtifact(await store.get(input.key, { signal: ctx.signal }), artifact, ctx.signal);
        actual = { size: inspection.size, sha256: inspection.sha256 };
        checks.push({ name: 'size', ok: actual.size === expected.size, detail: `${actual.size} bytes, manifest says ${expected.size}` });
        checks.push({ name: 'sha256', ok: actual.sha256 === expected.sha256, detail: actual.sha256 === expected.sha256 ? 'matches the manifest' : `${actual.sha256} differs from the manifest's ${expected.sha256}` });
        checks.push(...inspection.checks);
        if (artifact.format === 'etcd-snapshot-zip') checks.push(...(await inspectZipSnapshot(objectRangeSource(store, input.key, inspection.size, ctx.signal))));
      } catch (err) {
        // A missing object is a finding; any other read error is transient and retried.
        if (!(err instanceof ObjectNotFoundError)) throw err;
        checks.push({ name: 'object', ok: false, detail: 'the object does not exist' });
      }
    }

    return recordVerdict(ctx, { dataset, store, key: input.key, resultKey: siblingKey(input.key, VERIFY_FILE), started, expected, actual, checks });
  },
});

/** Where the result for an object Lifeboat did not write goes: under _lifeboat/, never beside the other tool's files. */
export function foreignVerifyKey(dataset: { target: { prefix: string } }, key: string): string {
  return `${dataset.target.prefix}${MIRROR_REPORTS}verify/${key}.json`;
}

async function verifyForeign(input: { dataset: string; key: string; size?: number }, ctx: Ctx) {
  const dataset = requireDataset(ctx.deps.config, input.dataset);
  const store = ctx.deps.storeFor(dataset);
  const started = ctx.deps.clock();
  const inspected = await inspectForeignObject(store, dataset, input.key, input.size, ctx.signal).catch((err: unknown) => {
    if (err instanceof ObjectNotFoundError) return { size: 0, sha256: '', checks: [{ name: 'object', ok: false, detail: 'the object does not exist (deleted since the notification?)' }], completedAt: undefined };
    throw err;
  });
  const record = await recordVerdict(ctx, {
    dataset, store, key: input.key, resultKey: foreignVerifyKey(dataset, input.key), started,
    expected: { size: input.size ?? -1, sha256: '' }, actual: { size: inspected.size, sha256: inspected.sha256 }, checks: inspected.checks, completedAt: inspected.completedAt,
  });
  if (inspected.completedAt) await ctx.emit('backup.observed', { dataset: dataset.id, kind: dataset.kind, key: input.key, finishedAt: inspected.completedAt });
  return record;
}

/** Writes the verification result, then emits backup.verified, or backup.corrupt and fails permanently. */
async function recordVerdict(
  ctx: Ctx,
  v: { dataset: Dataset; store: TargetStore; key: string; resultKey: string; started: Date; expected: VerifyRecord['expected']; actual: VerifyRecord['actual']; checks: Check[]; completedAt?: string },
): Promise<VerifyRecord> {
  const finished = ctx.deps.clock();
  const ok = v.checks.every((c) => c.ok);
  const record: VerifyRecord = {
    format: 'lifeboat.verify/v1',
    dataset: v.dataset.id,
    key: v.key,
    ok,
    checkedAt: finished.toISOString(),
    durationMs: finished.getTime() - v.started.getTime(),
    expected: v.expected,
    actual: v.actual,
    checks: v.checks,
    completedAt: v.completedAt,
  };
  await v.store.putJson(v.resultKey, record, { signal: ctx.signal });
  if (ok) {
    await ctx.emit('backup.verified', { dataset: v.dataset.id, kind: v.dataset.kind, key: v.key, size: v.actual.size, checkedAt: record.checkedAt });
    ctx.log.info({ key: v.key, size: v.actual.size }, 'verified');
    return record;
  }
  const reason = v.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ');
  await ctx.emit('backup.corrupt', { dataset: v.dataset.id, kind: v.dataset.kind, key: v.key, checkedAt: record.checkedAt, reason });
  throw new CorruptBackupError(`${v.store.label}/${v.key} is corrupt: ${reason}`);
}
