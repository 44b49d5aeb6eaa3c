import { GetBucketVersioningCommand } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import { listBackups } from '../catalog/catalog.js';
import type { Config } from '../config/schema.js';
import { restoreBucket, type BucketRestoreResult } from '../mirror/restore.js';
import { openLocal } from '../plumbing/app.js';
import { TargetError } from '../targets/errors.js';
import { S3Store } from '../targets/s3.js';
import { CliError, EXIT, inlineRetries } from './exit.js';
import { formatBytes, table } from './format.js';
import { cliDataset, formatDuration, pickBackup, progressPrinter, readStep } from './steps.js';

const MiB = 1024 * 1024;

export interface BucketRestoreCommandOptions {
  dataset: string;
  backup: string;
  /** Keys under this prefix of the mirror only. */
  prefix?: string;
  at?: Date;
  toTarget?: string;
  toSource?: boolean;
  toBucket?: string;
  toPrefix?: string;
  overwrite?: boolean;
  dryRun?: boolean;
  json?: boolean;
  retries?: number;
  /** Objects copied at once (default RESTORE_CONCURRENCY). */
  concurrency?: number;
}

/** Someone is waiting for a restore, and its objects stream without buffering: more in flight than a nightly mirror. */
export const RESTORE_CONCURRENCY = 32;

/** What `--json` prints, and what the summary is made from. createdBucket: created, or with --dry-run, would be. */
export interface BucketRestoreReport extends BucketRestoreResult {
  dataset: string;
  backup: string;
  at?: string;
  from: { target: string; bucket: string; prefix: string };
  to: { target: string; bucket: string; prefix: string; createdBucket: boolean };
  /** What the report of the backup listed on the hub, when the whole mirror is restored. */
  expected?: { count: number; bytes: number };
  dryRun: boolean;
  ok: boolean;
  durationMs: number;
}


function checkPrefix(flag: string, value: string | undefined): void {
  if (value !== undefined && value !== '' && (!value.endsWith('/') || value.startsWith('/'))) throw new CliError(`${flag}: must be empty or end with '/' (and not start with it), e.g. photos/2024/`, EXIT.usage);
}

/**
 * `lifeboat restore <bucket-dataset>`: the hub's mirror back into a bucket, from the hub alone. The
 * destination is a configured S3 target (`--to-target` and `--to-bucket`) or the dataset's own source
 * endpoint (`--to-source`, its bucket unless `--to-bucket`). A bucket that does not exist is created.
 */
export async function restoreBucketCommand(config: Config, log: Logger, opts: BucketRestoreCommandOptions): Promise<number> {
  const dataset = cliDataset(config, opts.dataset, 'bucket');
  if ((opts.toTarget === undefined) === !opts.toSource) throw new CliError('restore: a bucket dataset needs exactly one of --to-target <name> (with --to-bucket) or --to-source', EXIT.usage);
  if (opts.toTarget !== undefined) {
    const target = config.targets[opts.toTarget];
    if (!target) throw new CliError(`--to-target: unknown target "${opts.toTarget}" (known: ${Object.keys(config.targets).join(', ')})`, EXIT.usage);
    if (target.kind !== 's3') throw new CliError(`--to-target: target ${opts.toTarget} is a ${target.kind} target; a bucket restores into an s3 target`, EXIT.usage);
    if (opts.toBucket === undefined) throw new CliError('--to-target needs --to-bucket <bucket>', EXIT.usage);
  }
  checkPrefix('--prefix', opts.prefix);
  checkPrefix('--to-prefix', opts.toPrefix);
  const out = (line: string) => process.stderr.write(`${line}\n`);
  const policy = inlineRetries(opts.retries);
  const deps = openLocal(config, log);
  try {
    const hub = deps.storeFor(dataset);
    if (!(hub instanceof S3Store)) throw new CliError(`dataset ${dataset.id}: its target ${dataset.target.name} is not s3`, EXIT.usage);
    const entries = await readStep(`listing ${hub.label}`, policy, () => listBackups(hub, dataset));
    const entry = pickBackup(entries, dataset.id, opts.backup, 'mirror report');
    const report = await readStep(`reading ${entry.manifest.artifact.key}`, policy, () => hub.getJson<MirrorReport>(entry.manifest.artifact.key));
    if (report?.ok === false) out(`warning: the mirror run of ${entry.id} did not succeed (${entry.manifest.artifact.key}); restoring what the hub holds`);
    // An older report means the hub's state at its time: only a versioned hub still has it.
    const at = opts.at ?? (entry.id !== entries[0]?.id ? new Date(entry.manifest.finishedAt) : undefined);
    if (at) await requireVersioning(hub, policy);

    const destination = opts.toSource
      ? new S3Store(deps.bucketSource(dataset).client, `source of ${dataset.id}`, opts.toBucket ?? dataset.source.bucket)
      : (deps.store(opts.toTarget!, opts.toBucket!) as S3Store);
    const toPrefix = opts.toPrefix ?? (opts.toSource && opts.toBucket === undefined ? dataset.source.prefix : '');
    if (destination.endpoint === hub.endpoint && destination.bucket === hub.bucket && (toPrefix.startsWith(dataset.target.prefix) || dataset.target.prefix.startsWith(toPrefix))) {
      throw new CliError(`the destination ${destination.bucket}/${toPrefix} overlaps the mirror itself (${hub.bucket}/${dataset.target.prefix}); choose another bucket or prefix`, EXIT.usage);
    }
    const createdBucket = await ensureBucket(destination, opts.dryRun ?? false, policy);
    if (createdBucket) out(`${opts.dryRun ? 'would create' : 'created'} bucket ${destination.bucket} on ${destination.endpoint}`);

    const prefix = opts.prefix ?? '';
    const whole = prefix === '' && at === undefined;
    const expected = whole ? report?.verification?.listing?.destination : undefined;
    out(`restoring ${dataset.id} (${at ? `as it was at ${at.toISOString()}` : `mirror report ${entry.id}`}${prefix ? `, under ${prefix}` : ''}) from ${hub.label}/${dataset.target.prefix} to ${destination.label}/${toPrefix}${opts.dryRun ? ' (dry run: nothing is written)' : ''}`);
    const started = Date.now();
    const progress = progressPrinter('restoring', expected && { bytes: expected.bytes, objects: expected.count });
    const m = dataset.mirror;
    const result = await restoreBucket({ store: hub, prefix: dataset.target.prefix }, { store: destination, prefix: toPrefix }, {
      prefix, at, overwrite: opts.overwrite ?? false, dryRun: opts.dryRun ?? false,
      // A dry run creates nothing: the bucket it would create is empty.
      destinationMissing: createdBucket && opts.dryRun,
      multipartThreshold: m.multipartThresholdMiB * MiB, partSize: m.partSizeMiB * MiB, concurrency: opts.concurrency ?? RESTORE_CONCURRENCY, sample: m.sample,
      log, onProgress: progress && ((done) => progress(done.bytes, done.objects)),
    }).catch((err: unknown) => {
      if (err instanceof TargetError && err.code === 'AccessDenied') throw new CliError(`${err.message}; the restore needs write access to ${destination.label} (a source's credentials are often read-only: configure a target with write credentials and use --to-target)`, EXIT.failed);
      throw err;
    });
    if (progress) process.stderr.write('\n');
    const ok = result.failed.count === 0 && (opts.dryRun || (result.verification.listing.ok && result.verification.sample.mismatches.length === 0));
    const summary: BucketRestoreReport = {
      dataset: dataset.id, backup: entry.id, ...(at ? { at: at.toISOString() } : {}),
      from: { target: dataset.target.name, bucket: hub.bucket, prefix: dataset.target.prefix + prefix },
      to: { target: opts.toSource ? `source of ${dataset.id}` : opts.toTarget!, bucket: destination.bucket, prefix: toPrefix, createdBucket },
      ...(expected ? { expected: { count: expected.count, bytes: expected.bytes } } : {}),
      dryRun: opts.dryRun ?? false, ok, durationMs: Date.now() - started, ...result,
    };
    if (opts.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else printSummary(summary);
    return ok ? EXIT.ok : EXIT.failed;
  } finally {
    await deps.close();
  }
}

interface MirrorReport {
  ok?: boolean;
  verification?: { listing?: { destination?: { count: number; bytes: number } } };
}

async function requireVersioning(hub: S3Store, policy: ReturnType<typeof inlineRetries>): Promise<void> {
  const status = await readStep(`reading the versioning of ${hub.label}`, policy, async () => (await hub.client.send(new GetBucketVersioningCommand({ Bucket: hub.bucket }))).Status);
  if (status !== 'Enabled' && status !== 'Suspended') {
    throw new CliError(`the hub bucket ${hub.bucket} is not versioned, so it holds only the mirror's current state: restore --backup latest without --at, or enable versioning on the hub for the next time`, EXIT.failed);
  }
}

async function ensureBucket(store: S3Store, dryRun: boolean, policy: ReturnType<typeof inlineRetries>): Promise<boolean> {
  try {
    await store.headBucket();
    return false;
  } catch (err) {
    if (!(err instanceof TargetError) || err.code !== 'NoSuchBucket') {
      return readStep(`reaching ${store.label}`, policy, () => store.headBucket()).then(() => false);
    }
  }
  if (!dryRun) await readStep(`creating bucket ${store.bucket}`, policy, () => store.ensureBucket());
  return true;
}

function printSummary(r: BucketRestoreReport): void {
  const row = (what: string, t: { count: number; bytes: number }) => [what, String(t.count), formatBytes(t.bytes)];
  const rows = [['', 'OBJECTS', 'BYTES'], row(r.dryRun ? 'would copy' : 'copied', r.copied), row('already there', r.unchanged), row('newer there, kept', r.keptNewer), row('failed', { count: r.failed.count, bytes: 0 }), row('only at the destination', r.untouched)];
  process.stdout.write(`${table(rows)}\n`);
  if (r.expected && (r.expected.count !== r.source.count || r.expected.bytes !== r.source.bytes)) {
    process.stdout.write(`note: the hub now holds ${r.source.count} objects (${formatBytes(r.source.bytes)}) where report ${r.backup} listed ${r.expected.count} (${formatBytes(r.expected.bytes)}): the mirror changed since that run\n`);
  }
  if (r.keptNewer.count > 0) process.stdout.write(`kept ${r.keptNewer.count} newer destination objects (first: ${r.keptNewer.first.slice(0, 3).join(', ')}); --overwrite replaces them\n`);
  for (const f of r.failed.first.slice(0, 10)) process.stdout.write(`failed: ${f.key}: ${f.error}\n`);
  if (!r.dryRun) {
    const l = r.verification.listing;
    const s = r.verification.sample;
    process.stdout.write(`check: ${l.ok ? 'every restored object is at the destination with its size' : `${l.missing} missing, ${l.sizeMismatch} of another size`}; sha256 of ${s.checked} sampled objects ${s.mismatches.length === 0 ? 'equal' : `DIFFER: ${s.mismatches.map((x) => x.key).join(', ')}`}\n`);
  }
  process.stdout.write(`${r.ok ? 'restored' : 'restore FAILED:'} ${r.dataset} into ${r.to.bucket}/${r.to.prefix} in ${formatDuration(r.durationMs / 1000)}\n`);
}
