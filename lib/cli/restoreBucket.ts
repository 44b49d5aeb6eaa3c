import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { BucketRestoreRefusedError, restoreMirrorBackup, type BucketRestoreReport } from '../mirror/restoreBackup.js';
import { openLocal } from '../plumbing/deps.js';
import { S3Store } from '../targets/s3.js';
import { CliError, EXIT, inlineRetries } from './exit.js';
import { formatBytes, table } from './format.js';
import { cliDataset, formatDuration, progressPrinter, readStep } from './steps.js';

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

export { RESTORE_CONCURRENCY, type BucketRestoreReport } from '../mirror/restoreBackup.js';

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
  // Made on the first report, which brings the expected totals.
  let printing: ReturnType<typeof progressPrinter> | 'not yet' = 'not yet';
  try {
    const destination = opts.toSource
      ? new S3Store(deps.bucketSource(dataset).client, `source of ${dataset.id}`, opts.toBucket ?? dataset.source.bucket)
      : (deps.store(opts.toTarget!, opts.toBucket!) as S3Store);
    const summary = await restoreMirrorBackup(deps, dataset, {
      backup: opts.backup, prefix: opts.prefix, at: opts.at, destination,
      destinationName: opts.toSource ? `source of ${dataset.id}` : opts.toTarget!,
      toPrefix: opts.toPrefix ?? (opts.toSource && opts.toBucket === undefined ? dataset.source.prefix : ''),
      overwrite: opts.overwrite ?? false, dryRun: opts.dryRun ?? false, concurrency: opts.concurrency,
    }, {
      say: out, log, read: (what, step) => readStep(what, policy, step),
      progress: (done, expected) => {
        if (printing === 'not yet') printing = progressPrinter('restoring', expected);
        printing?.(done.bytes, done.objects);
      },
    }).catch((err: unknown) => {
      if (err instanceof BucketRestoreRefusedError) throw new CliError(err.message, err.badRequest ? EXIT.usage : EXIT.failed);
      throw err;
    });
    if (printing && printing !== 'not yet') process.stderr.write('\n');
    if (opts.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else printSummary(summary);
    return summary.ok ? EXIT.ok : EXIT.failed;
  } finally {
    await deps.close();
  }
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
