import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetBucketLifecycleConfigurationCommand,
  GetBucketVersioningCommand,
  HeadBucketCommand,
  PutBucketLifecycleConfigurationCommand,
  PutBucketVersioningCommand,
  type LifecycleRule,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Config, DirTargetConfig, S3TargetConfig } from '../config/schema.js';
import { datasetBuckets, datasetIds, type DatasetBucket } from '../check/buckets.js';
import { checkClient, codeOf, describeFailure, noAnswer, statusOf, timed } from '../check/s3.js';
import { messageOf } from '../check/types.js';
import { EXIT } from './exit.js';
import { table } from './format.js';

/** Lifecycle rules whose ID starts with this are Lifeboat's; every other rule on a bucket is left as it is. */
export const LIFEBOAT_RULE_PREFIX = 'lifeboat-';
export const NONCURRENT_RULE_ID = 'lifeboat-noncurrent-expiry';
export const ABORT_UPLOADS_RULE_ID = 'lifeboat-abort-incomplete-uploads';

export interface BucketReport {
  target: string;
  bucket: string;
  datasets: string[];
  /** changed: something was done (or would be, with --dry-run); unchanged: all was in place. */
  result: 'changed' | 'unchanged' | 'failed';
  actions: string[];
  error?: string;
  /** The failure was an unreachable hub, not a refusal. */
  unreachable?: boolean;
}

/**
 * Days after which an incomplete multipart upload is aborted by the hub itself: a day past pruneCheck's
 * own abortUploadsAfterHours, so pruneCheck (which counts what it aborts) normally gets there first.
 */
export function abortUploadsDays(config: Config): number {
  return Math.max(1, Math.ceil(config.prune.abortUploadsAfterHours / 24)) + 1;
}

/** Lifeboat's two rules, for the whole bucket. */
export function lifeboatRules(noncurrentDays: number, abortDays: number): LifecycleRule[] {
  return [
    // A deleted key whose versions have all expired keeps a lone delete marker: it goes too.
    { ID: NONCURRENT_RULE_ID, Status: 'Enabled', Filter: { Prefix: '' }, NoncurrentVersionExpiration: { NoncurrentDays: noncurrentDays }, Expiration: { ExpiredObjectDeleteMarker: true } },
    { ID: ABORT_UPLOADS_RULE_ID, Status: 'Enabled', Filter: { Prefix: '' }, AbortIncompleteMultipartUpload: { DaysAfterInitiation: abortDays } },
  ];
}

/** The rule's prefix, however the server spells it (RGW answers a Filter with an empty prefix as a top-level Prefix). */
function rulePrefix(rule: LifecycleRule): string | undefined {
  const filter = rule.Filter as { Prefix?: string; Tag?: unknown; And?: unknown; ObjectSizeGreaterThan?: unknown; ObjectSizeLessThan?: unknown } | undefined;
  if (filter && (filter.Tag || filter.And || filter.ObjectSizeGreaterThan !== undefined || filter.ObjectSizeLessThan !== undefined)) return undefined;
  return filter?.Prefix ?? rule.Prefix ?? '';
}

/** Whether an existing rule does exactly what the wanted one does (whatever extra fields the server echoes). */
export function sameRule(have: LifecycleRule, want: LifecycleRule): boolean {
  return (
    have.ID === want.ID &&
    have.Status === want.Status &&
    rulePrefix(have) === '' &&
    (have.NoncurrentVersionExpiration?.NoncurrentDays ?? null) === (want.NoncurrentVersionExpiration?.NoncurrentDays ?? null) &&
    (have.AbortIncompleteMultipartUpload?.DaysAfterInitiation ?? null) === (want.AbortIncompleteMultipartUpload?.DaysAfterInitiation ?? null) &&
    (have.Expiration?.Days ?? null) === (want.Expiration?.Days ?? null) &&
    (have.Expiration?.Date ?? null) === (want.Expiration?.Date ?? null) &&
    Boolean(have.Expiration?.ExpiredObjectDeleteMarker) === Boolean(want.Expiration?.ExpiredObjectDeleteMarker) &&
    !have.Transitions?.length &&
    !have.NoncurrentVersionTransitions?.length &&
    have.NoncurrentVersionExpiration?.NewerNoncurrentVersions === undefined
  );
}

/** `lifeboat hub init [--dry-run]`: each dataset's bucket made ready; prints one line per bucket. */
export async function hubInitCommand(config: Config, options: { dryRun?: boolean; json?: boolean }): Promise<number> {
  const reports = await hubInit(config, options);
  if (options.json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
  else if (!reports.length) process.stdout.write('no datasets: nothing to initialise\n');
  else {
    const word = (r: BucketReport) => (r.result === 'changed' && options.dryRun ? 'would change' : r.result === 'unchanged' ? 'no changes' : r.result);
    const rows = [['BUCKET', 'RESULT', 'DETAIL'], ...reports.map((r) => [`${r.target}/${r.bucket}`, word(r), r.error ?? r.actions.join('; ')])];
    process.stdout.write(`${table(rows)}\n`);
    if (options.dryRun) process.stdout.write('dry run: nothing was changed\n');
  }
  const failed = reports.filter((r) => r.result === 'failed');
  if (!failed.length) return EXIT.ok;
  return failed.every((r) => r.unreachable) ? EXIT.unavailable : EXIT.failed;
}

export async function hubInit(config: Config, options: { dryRun?: boolean } = {}): Promise<BucketReport[]> {
  const buckets = datasetBuckets(config);
  const clients = new Map<string, S3Client>();
  try {
    const reports: BucketReport[] = [];
    // One bucket after another: the output follows the config, and a hub is not hit by many at once.
    for (const b of buckets) {
      const base = { target: b.target, bucket: b.bucket, datasets: b.datasets.map((d) => d.id) };
      try {
        let actions: { changed: boolean; actions: string[] };
        if (b.config.kind === 'dir') actions = await initDir(b, b.config, options.dryRun);
        else {
          let client = clients.get(b.target);
          if (!client) clients.set(b.target, (client = checkClient(b.config)));
          actions = await initS3(b, b.config, client, { dryRun: options.dryRun, abortDays: abortUploadsDays(config) });
        }
        reports.push({ ...base, result: actions.changed ? 'changed' : 'unchanged', actions: actions.actions });
      } catch (err) {
        reports.push({ ...base, result: 'failed', actions: [], error: (err as Error).message, unreachable: (err as { unreachable?: boolean }).unreachable === true });
      }
    }
    return reports;
  } finally {
    for (const c of clients.values()) c.destroy();
  }
}

class StepError extends Error {
  constructor(
    message: string,
    readonly unreachable: boolean,
  ) {
    super(message);
  }
}

/** Runs one request; a failure names the target, bucket, operation and what to grant. */
async function request<T>(b: DatasetBucket, target: S3TargetConfig, operation: string, send: () => Promise<T>, grant?: string): Promise<T> {
  try {
    return await send();
  } catch (err) {
    const denied = statusOf(err) === 403;
    const hint = denied && grant ? `: the keys of targets.${b.target} need ${grant} (hub init is for an admin key; the datasets' writer keys need not have it)` : '';
    throw new StepError(`target ${b.target} (${target.endpoint}), bucket ${b.bucket}: ${operation} failed: ${describeFailure(err)}${hint}`, noAnswer(err));
  }
}

async function initS3(b: DatasetBucket, target: S3TargetConfig, client: S3Client, options: { dryRun?: boolean; abortDays: number }): Promise<{ changed: boolean; actions: string[] }> {
  const Bucket = b.bucket;
  const would = (s: string) => (options.dryRun ? `would ${s}` : s);
  const actions: string[] = [];
  let changed = false;

  // 1. The bucket.
  let exists = true;
  try {
    await client.send(new HeadBucketCommand({ Bucket }), timed());
  } catch (err) {
    if (statusOf(err) !== 404) return request(b, target, 'HeadBucket', () => Promise.reject(err));
    exists = false;
  }
  if (!exists) {
    if (!options.dryRun) {
      await request(b, target, 'CreateBucket', () => client.send(new CreateBucketCommand({ Bucket }), timed()), 's3:CreateBucket').catch((err: unknown) => {
        // Another run (or a person) made it in between: fine.
        if (!/BucketAlreadyOwnedByYou/.test(messageOf(err))) throw err;
      });
    }
    actions.push(would(`create bucket (for ${datasetIds(b)})`));
    changed = true;
  } else actions.push('bucket exists');

  // 2. Versioning.
  const versioning = exists ? (await request(b, target, 'GetBucketVersioning', () => client.send(new GetBucketVersioningCommand({ Bucket }), timed()), 's3:GetBucketVersioning')).Status : undefined;
  if (versioning === 'Enabled') actions.push('versioning already Enabled');
  else {
    if (!options.dryRun) await request(b, target, 'PutBucketVersioning', () => client.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } }), timed()), 's3:PutBucketVersioning');
    actions.push(would(`enable versioning${versioning === 'Suspended' ? ' (was Suspended)' : ''}`));
    changed = true;
  }

  // 3. Lifecycle: Lifeboat's rules replaced or added, every other rule kept as the server returned it.
  let existing: LifecycleRule[] = [];
  if (exists) {
    try {
      existing = (await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket }), timed())).Rules ?? [];
    } catch (err) {
      if (codeOf(err) !== 'NoSuchLifecycleConfiguration') await request(b, target, 'GetBucketLifecycleConfiguration', () => Promise.reject(err), 's3:GetLifecycleConfiguration');
    }
  }
  const wanted = lifeboatRules(target.noncurrentVersionExpiryDays, options.abortDays);
  const foreign = existing.filter((r) => !r.ID?.startsWith(LIFEBOAT_RULE_PREFIX));
  const ours = existing.filter((r) => r.ID?.startsWith(LIFEBOAT_RULE_PREFIX));
  const upToDate = ours.length === wanted.length && wanted.every((w) => ours.some((h) => sameRule(h, w)));
  const summary = `noncurrent versions expire after ${target.noncurrentVersionExpiryDays} days, incomplete uploads are aborted after ${options.abortDays} days`;
  if (upToDate) actions.push(`lifecycle up to date (${summary})`);
  else {
    if (!options.dryRun) {
      await request(
        b, target, 'PutBucketLifecycleConfiguration',
        () => client.send(new PutBucketLifecycleConfigurationCommand({ Bucket, LifecycleConfiguration: { Rules: [...foreign, ...wanted] } }), timed()),
        's3:PutLifecycleConfiguration',
      );
    }
    actions.push(would(`${ours.length ? 'update' : 'set'} lifecycle rules (${summary})`));
    changed = true;
  }
  if (foreign.length) actions.push(`kept ${foreign.length} other lifecycle rule${foreign.length === 1 ? '' : 's'} (${foreign.map((r) => r.ID ?? 'unnamed').join(', ')})`);
  return { changed, actions };
}

async function initDir(b: DatasetBucket, target: DirTargetConfig, dryRun?: boolean): Promise<{ changed: boolean; actions: string[] }> {
  const dir = join(target.path, b.bucket);
  const kind = await stat(dir).then((s) => (s.isDirectory() ? 'dir' : 'other'), () => undefined);
  if (kind === 'other') throw new StepError(`target ${b.target}: ${dir} exists and is not a directory`, false);
  if (kind === 'dir') return { changed: false, actions: [`directory ${dir} exists`] };
  if (!dryRun) {
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw new StepError(`target ${b.target}: cannot create ${dir}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`, false);
    }
  }
  return { changed: true, actions: [`${dryRun ? 'would create' : 'created'} directory ${dir} (for ${datasetIds(b)})`] };
}
