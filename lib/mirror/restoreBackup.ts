import { GetBucketVersioningCommand } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import { PermanentError } from '../../queue/errors.js';
import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import type { BucketDataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { TargetError } from '../targets/errors.js';
import { S3Store } from '../targets/s3.js';
import { restoreBucket, type BucketRestoreResult } from './restore.js';
import { DecryptionError } from '../crypto/age.js';
import { requireDecrypter } from '../crypto/identity.js';

/**
 * A bucket dataset's mirror back into a bucket, from the hub alone: the steps `lifeboat restore` and
 * the restoreBackup job share. A destination bucket that does not exist is created.
 */

const MiB = 1024 * 1024;

/** Someone is waiting for a restore, and its objects stream without buffering: more in flight than a nightly mirror. */
export const RESTORE_CONCURRENCY = 32;

/** The restore cannot run as asked (no such backup, an unversioned hub for an old one, an overlap). */
export class BucketRestoreRefusedError extends PermanentError {
  override name = 'BucketRestoreRefusedError';
  constructor(
    message: string,
    /** The request itself is wrong (the CLI's exit 2), not the state of the hub. */
    readonly badRequest = false,
  ) {
    super(message);
  }
}

/** What `--json` prints and the job returns; createdBucket: created, or with --dry-run, would be. */
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

export interface MirrorRestoreRequest {
  /** A backup id (a mirror report) or "latest". */
  backup: string;
  /** Keys under this prefix of the mirror only. */
  prefix?: string;
  at?: Date;
  destination: S3Store;
  /** How the destination is named in the report: a target's name, or "source of <dataset>". */
  destinationName: string;
  toPrefix: string;
  overwrite: boolean;
  dryRun: boolean;
  concurrency?: number;
}

export interface MirrorRestoreSteps {
  say(line: string): void;
  /** Runs a step that only reads or creates the bucket (the CLI retries those). */
  read<T>(what: string, step: () => Promise<T>): Promise<T>;
  progress?(done: { bytes: number; objects: number }, expected?: { bytes: number; objects: number }): void;
  log: Logger;
  signal?: AbortSignal;
}

interface MirrorReport {
  ok?: boolean;
  verification?: { listing?: { destination?: { count: number; bytes: number } } };
}

export function pickMirrorBackup(entries: BackupEntry[], dataset: string, backup: string): BackupEntry {
  const entry = backup === 'latest' ? entries[0] : entries.find((e) => e.id === backup);
  if (!entry) throw new BucketRestoreRefusedError(backup === 'latest' ? `dataset ${dataset} has no mirror reports on its target` : `dataset ${dataset} has no mirror report ${backup} (have: ${entries.slice(0, 5).map((e) => e.id).join(', ')}${entries.length > 5 ? ', …' : ''})`);
  return entry;
}

export async function restoreMirrorBackup(deps: Deps, dataset: BucketDataset, request: MirrorRestoreRequest, steps: MirrorRestoreSteps): Promise<BucketRestoreReport> {
  const hub = deps.storeFor(dataset);
  if (!(hub instanceof S3Store)) throw new BucketRestoreRefusedError(`dataset ${dataset.id}: its target ${dataset.target.name} is not s3`);
  const { destination, toPrefix } = request;
  // Encrypted: without the identity nothing can be restored, so say so before reading or writing anything.
  let decrypt;
  try {
    decrypt = dataset.encryption ? requireDecrypter(dataset, `restore dataset ${dataset.id}`) : undefined;
  } catch (err) {
    if (err instanceof DecryptionError) throw new BucketRestoreRefusedError(err.message);
    throw err;
  }
  const entries = await steps.read(`listing ${hub.label}`, () => listBackups(hub, dataset, { signal: steps.signal }));
  const entry = pickMirrorBackup(entries, dataset.id, request.backup);
  const report = await steps.read(`reading ${entry.manifest.artifact.key}`, () => hub.getJson<MirrorReport>(entry.manifest.artifact.key, { signal: steps.signal }));
  if (report?.ok === false) steps.say(`warning: the mirror run of ${entry.id} did not succeed (${entry.manifest.artifact.key}); restoring what the hub holds`);
  // An older report means the hub's state at its time: only a versioned hub still has it.
  const at = request.at ?? (entry.id !== entries[0]?.id ? new Date(entry.manifest.finishedAt) : undefined);
  if (at) await requireVersioning(hub, steps);

  if (destination.endpoint === hub.endpoint && destination.bucket === hub.bucket && (toPrefix.startsWith(dataset.target.prefix) || dataset.target.prefix.startsWith(toPrefix))) {
    throw new BucketRestoreRefusedError(`the destination ${destination.bucket}/${toPrefix} overlaps the mirror itself (${hub.bucket}/${dataset.target.prefix}); choose another bucket or prefix`, true);
  }
  const createdBucket = await ensureBucket(destination, request.dryRun, steps);
  if (createdBucket) steps.say(`${request.dryRun ? 'would create' : 'created'} bucket ${destination.bucket} on ${destination.endpoint}`);

  const prefix = request.prefix ?? '';
  const whole = prefix === '' && at === undefined;
  const expected = whole ? report?.verification?.listing?.destination : undefined;
  steps.say(`restoring ${dataset.id} (${at ? `as it was at ${at.toISOString()}` : `mirror report ${entry.id}`}${prefix ? `, under ${prefix}` : ''}) from ${hub.label}/${dataset.target.prefix} to ${destination.label}/${toPrefix}${request.dryRun ? ' (dry run: nothing is written)' : ''}`);
  const started = Date.now();
  const m = dataset.mirror;
  const result = await restoreBucket({ store: hub, prefix: dataset.target.prefix }, { store: destination, prefix: toPrefix }, {
    prefix, at, overwrite: request.overwrite, dryRun: request.dryRun, decrypt,
    // A dry run creates nothing: the bucket it would create is empty.
    destinationMissing: createdBucket && request.dryRun,
    multipartThreshold: m.multipartThresholdMiB * MiB, partSize: m.partSizeMiB * MiB, concurrency: request.concurrency ?? RESTORE_CONCURRENCY, sample: m.sample,
    log: steps.log, signal: steps.signal,
    onProgress: steps.progress && ((done) => steps.progress!(done, expected && { bytes: expected.bytes, objects: expected.count })),
  }).catch((err: unknown) => {
    if (err instanceof TargetError && err.code === 'AccessDenied') {
      throw new BucketRestoreRefusedError(`${err.message}; the restore needs write access to ${destination.label} (a source's credentials are often read-only: configure a target with write credentials and use --to-target)`);
    }
    throw err;
  });
  const ok = result.failed.count === 0 && (request.dryRun || (result.verification.listing.ok && result.verification.sample.mismatches.length === 0));
  return {
    dataset: dataset.id, backup: entry.id, ...(at ? { at: at.toISOString() } : {}),
    from: { target: dataset.target.name, bucket: hub.bucket, prefix: dataset.target.prefix + prefix },
    to: { target: request.destinationName, bucket: destination.bucket, prefix: toPrefix, createdBucket },
    ...(expected ? { expected: { count: expected.count, bytes: expected.bytes } } : {}),
    dryRun: request.dryRun, ok, durationMs: Date.now() - started, ...result,
  };
}

async function requireVersioning(hub: S3Store, steps: MirrorRestoreSteps): Promise<void> {
  const status = await steps.read(`reading the versioning of ${hub.label}`, async () => (await hub.client.send(new GetBucketVersioningCommand({ Bucket: hub.bucket }))).Status);
  if (status !== 'Enabled' && status !== 'Suspended') {
    throw new BucketRestoreRefusedError(`the hub bucket ${hub.bucket} is not versioned, so it holds only the mirror's current state: restore --backup latest without --at, or enable versioning on the hub for the next time`);
  }
}

async function ensureBucket(store: S3Store, dryRun: boolean, steps: MirrorRestoreSteps): Promise<boolean> {
  try {
    await store.headBucket();
    return false;
  } catch (err) {
    if (!(err instanceof TargetError) || err.code !== 'NoSuchBucket') {
      return steps.read(`reaching ${store.label}`, () => store.headBucket()).then(() => false);
    }
  }
  if (!dryRun) await steps.read(`creating bucket ${store.bucket}`, () => store.ensureBucket());
  return true;
}
