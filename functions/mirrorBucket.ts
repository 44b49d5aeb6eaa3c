import { Readable } from 'node:stream';
import { z } from 'zod';
import { requireDataset } from '../lib/datasets.js';
import { backupDir, MANIFEST_FILE } from '../lib/catalog/layout.js';
import { LIFEBOAT_VERSION, type Manifest } from '../lib/catalog/manifest.js';
import type { BucketDataset } from '../lib/config/schema.js';
import { backupSizeBytes } from '../lib/metrics/backupSize.js';
import { checkBucket, mirrorBucket as mirror, type DeletionGuard, type PlannedAction } from '../lib/mirror/mirror.js';
import { S3Store } from '../lib/targets/s3.js';
import { datasetDecrypter } from '../lib/crypto/identity.js';
import { mirrorEncryption } from '../lib/mirror/encrypted.js';
import { cronPerDataset, defineFunction } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';

const MiB = 1024 * 1024;
export const MIRROR_REPORT_FILE = 'report.json';

export const mirrorBucket = defineFunction({
  name: 'mirrorBucket',
  description: 'Mirrors an S3 bucket (RGW) to the hub incrementally, verifies counts and a sha256 sample, and writes a report.',
  input: z.object({
    dataset: z.string().min(1),
    tick: z.iso.datetime().optional(),
    /** Plan only: list what would be copied and deleted, change nothing. */
    dryRun: z.boolean().optional(),
    /** Delete even when the deletion guard trips (the CLI allows it on inline runs only). */
    forceDelete: z.boolean().optional(),
  }),
  triggers: [cronPerDataset('bucket')],
  kinds: ['bucket'],
  lock: 'dataset',
  retries: { attempts: 3, backoffMs: 120_000 },
  concurrency: 1,
  timeoutMs: 12 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset, 'bucket');
    const source = ctx.deps.bucketSource(dataset);
    const destination = ctx.deps.storeFor(dataset);
    if (!(destination instanceof S3Store)) throw new PermanentError(`dataset ${dataset.id}: a bucket mirror needs an s3 target`);
    await checkBucket(source, `dataset ${dataset.id} source (${dataset.source.endpoint})`, ctx.signal);
    await checkBucket(destination, `dataset ${dataset.id} destination (target ${dataset.target.name})`, ctx.signal);

    // Fails closed: a recipient that does not parse stops the run here, before anything is listed or copied.
    const encryption = dataset.encryption ? await mirrorEncryption(dataset.encryption.recipients, `dataset ${dataset.id}`) : undefined;
    // The identity only deepens the sample check (decrypt and hash); without it the recorded sha256 is compared.
    const decrypter = dataset.encryption ? datasetDecrypter(dataset) : undefined;
    if (decrypter && 'unavailable' in decrypter) ctx.log.info({ reason: decrypter.unavailable }, 'sample check compares recorded plaintext hashes: no identity here');
    const decrypt = decrypter && 'stage' in decrypter ? decrypter.stage : undefined;

    const plan: PlannedAction[] = [];
    const started = ctx.deps.clock();
    const m = dataset.mirror;
    const result = await mirror(
      { store: source, prefix: dataset.source.prefix },
      { store: destination, prefix: dataset.target.prefix },
      {
        deletion: m.deletion,
        maxDeletePercent: m.maxDeletePercent,
        force: input.forceDelete ?? false,
        multipartThreshold: m.multipartThresholdMiB * MiB,
        partSize: m.partSizeMiB * MiB,
        concurrency: m.concurrency,
        maxInFlightBytes: m.maxInFlightMiB * MiB,
        sample: m.sample,
        dryRun: input.dryRun ?? false,
        encryption,
        decrypt,
        signal: ctx.signal,
        log: ctx.log,
        onAction: input.dryRun ? (a) => plan.length < 1000 && plan.push(a) : undefined,
        onProgress: ({ compared, copied }) => ctx.progress({ phase: 'mirroring', objects: compared.count, bytes: copied.bytes }),
      },
    );
    if (input.dryRun) {
      return { dryRun: true, copy: result.copied, delete: result.deleted, skip: result.skipped, deletionGuard: result.deletionGuard, plan, planTruncated: plan.length >= 1000 };
    }

    const finished = ctx.deps.clock();
    const mismatches = result.verification.sample.mismatches;
    const guard = result.deletionGuard;
    const guardStopped = guard !== undefined && guard.tripped && !guard.forced;
    const ok = result.failed.count === 0 && result.verification.listing.ok && mismatches.length === 0 && !guardStopped;
    const report = {
      format: 'lifeboat.mirror-report/v1',
      dataset: dataset.id,
      tick: ctx.tick.toISOString(),
      ok,
      deletion: m.deletion,
      from: { endpoint: dataset.source.endpoint, bucket: dataset.source.bucket, prefix: dataset.source.prefix },
      to: { target: dataset.target.name, bucket: destination.bucket, prefix: dataset.target.prefix },
      ...(encryption && { encryption: { scheme: 'age', recipients: encryption.fingerprints, sample: decrypt ? 'decrypted' : 'recorded sha256' } }),
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      ...result,
    };
    const dir = backupDir(dataset, ctx.tick);
    const key = `${dir}${MIRROR_REPORT_FILE}`;
    const stored = await destination.put(key, Readable.from([Buffer.from(`${JSON.stringify(report, null, 2)}\n`)]), { contentType: 'application/json', signal: ctx.signal });
    const manifest: Manifest = {
      format: 'lifeboat.manifest/v1',
      dataset: dataset.id,
      kind: dataset.kind,
      tick: ctx.tick.toISOString(),
      artifact: { key, size: stored.size, sha256: stored.sha256, etag: stored.etag, compression: 'none', contentType: 'application/json', format: 'mirror-report' },
      source: { ...report.from, objects: result.source.count, bytes: result.source.bytes },
      startedAt: report.startedAt,
      finishedAt: report.finishedAt,
      durationMs: finished.getTime() - started.getTime(),
      writer: { lifeboat: LIFEBOAT_VERSION, jobId: ctx.jobId, attempt: ctx.attempt },
    };
    await destination.putJson(`${dir}${MANIFEST_FILE}`, manifest, { signal: ctx.signal });
    ctx.log.info({ copied: result.copied, skipped: result.skipped.count, deleted: result.deleted.count, failed: result.failed.count, heads: result.heads, ok }, 'mirror finished');

    if (mismatches.length > 0) {
      const reason = `sample mismatch: ${mismatches.slice(0, 5).map((x) => x.key).join(', ')}${mismatches.length > 5 ? ', …' : ''}`;
      await ctx.emit('backup.corrupt', { dataset: dataset.id, kind: dataset.kind, key, checkedAt: report.finishedAt, reason });
      throw new PermanentError(`dataset ${dataset.id}: ${mismatches.length} sampled objects differ between source and destination (${reason}); see ${key}`);
    }
    if (guardStopped) throw new PermanentError(`${guardMessage(dataset, guard)}; see ${key}`);
    if (!ok) {
      const l = result.verification.listing;
      throw new Error(`dataset ${dataset.id}: ${result.failed.count} objects failed, ${l.missing} missing and ${l.sizeMismatch} of a different size after the run; see ${key}`);
    }
    await ctx.emit('backup.uploaded', {
      dataset: dataset.id, kind: dataset.kind, target: destination.target, bucket: destination.bucket, key, manifestKey: `${dir}${MANIFEST_FILE}`,
      etag: stored.etag, size: stored.size, dataBytes: backupSizeBytes(manifest), sha256: stored.sha256, startedAt: report.startedAt, finishedAt: report.finishedAt,
    });
    return { key, copied: result.copied, skipped: result.skipped, deleted: result.deleted, heads: result.heads, source: result.source };
  },
});

function guardMessage(dataset: BucketDataset, guard: DeletionGuard): string {
  const what = guard.reason === 'source-empty'
    ? `the source lists no objects but the destination has ${guard.destination}`
    : `the mirror would delete ${guard.wouldDelete} of ${guard.destination} destination objects (${guard.percent}%), above mirror.maxDeletePercent ${guard.limitPercent}`;
  const { endpoint, bucket, prefix } = dataset.source;
  return `dataset ${dataset.id}: ${what}; deleted nothing. Check the source bucket (${bucket}${prefix ? `, prefix ${prefix}` : ''} at ${endpoint}); to delete anyway run it inline with --force-delete`;
}
