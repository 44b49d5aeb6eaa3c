import { HeadBucketCommand, S3ServiceException } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import { PermanentError } from '../../queue/errors.js';
import { MIRROR_REPORTS } from '../layout.js';
import { hashStream } from '../targets/hash.js';
import type { S3Store } from '../targets/s3.js';
import { ObjectNotFoundError, type ObjectInfo } from '../targets/store.js';
import { copyObject, SOURCE_ETAG_METADATA } from './copy.js';
import { mergeJoin } from './merge.js';

export interface MirrorOptions {
  deletion: 'keep' | 'delete';
  multipartThreshold: number;
  partSize: number;
  concurrency: number;
  sample: number;
  dryRun: boolean;
  signal?: AbortSignal;
  log: Logger;
  /** Called for every planned or performed action (the dry-run plan). */
  onAction?: (action: PlannedAction) => void;
}

export interface PlannedAction {
  action: 'copy' | 'delete';
  key: string;
  size: number;
  reason: 'new' | 'changed' | 'extraneous';
}

interface Tally {
  count: number;
  bytes: number;
}

export interface MirrorResult {
  source: Tally;
  destination: Tally;
  copied: Tally;
  skipped: Tally;
  deleted: Tally;
  failed: { count: number; first: Array<{ key: string; error: string }> };
  /** HEAD requests made to settle ETag differences (0 on a no-change run of ordinary objects). */
  heads: number;
  verification: {
    listing: { ok: boolean; missing: number; sizeMismatch: number; extra: number; source: Tally; destination: Tally };
    sample: { requested: number; checked: number; mismatches: Array<{ key: string; source: string; destination: string }> };
  };
}

const tally = (): Tally => ({ count: 0, bytes: 0 });
const add = (t: Tally, size: number) => {
  t.count += 1;
  t.bytes += size;
};

/** Access denied or a missing bucket cannot fix itself: permanent, naming the dataset's side. */
export async function checkBucket(store: S3Store, side: string, signal?: AbortSignal): Promise<void> {
  try {
    await store.client.send(new HeadBucketCommand({ Bucket: store.bucket }), { abortSignal: signal });
  } catch (err) {
    const status = err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
    if (status === 404) throw new PermanentError(`${side}: bucket ${store.bucket} does not exist`);
    if (status === 403 || status === 401) throw new PermanentError(`${side}: access to bucket ${store.bucket} denied (check its credentials)`);
    throw err;
  }
}

/** "AccessDenied (HTTP 403): …": the SDK's own message alone can be as thin as "UnknownError". */
function describeError(err: unknown): string {
  if (err instanceof S3ServiceException) {
    const status = err.$metadata.httpStatusCode;
    return `${err.name}${status ? ` (HTTP ${status})` : ''}${err.message && err.message !== err.name ? `: ${err.message}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}

interface Side {
  store: S3Store;
  prefix: string;
}

/** A side's objects keyed without its prefix; Lifeboat's own reports under the destination are not part of the mirror. */
async function* listSide(side: Side, signal: AbortSignal | undefined, skip?: string): AsyncIterable<ObjectInfo> {
  for await (const o of side.store.list(side.prefix, { signal })) {
    if (skip !== undefined && o.key.startsWith(skip)) continue;
    yield { ...o, key: o.key.slice(side.prefix.length) };
  }
}

/**
 * Mirrors source → destination incrementally. Both listings are merge-joined in key order, so memory
 * stays flat whatever the object count. Equal size and ETag is "unchanged" without a request; an ETag
 * that cannot match (a multipart copy) is settled by the destination's recorded source ETag.
 */
export async function mirrorBucket(source: Side, destination: Side, options: MirrorOptions): Promise<MirrorResult> {
  const { signal, log } = options;
  const result: MirrorResult = {
    source: tally(), destination: tally(), copied: tally(), skipped: tally(), deleted: tally(),
    failed: { count: 0, first: [] }, heads: 0,
    verification: { listing: { ok: false, missing: 0, sizeMismatch: 0, extra: 0, source: tally(), destination: tally() }, sample: { requested: options.sample, checked: 0, mismatches: [] } },
  };
  const destKey = (key: string) => destination.prefix + key;
  const reports = destination.prefix + MIRROR_REPORTS;
  const inFlight = new Set<Promise<void>>();
  const pendingDeletes: Array<{ key: string; size: number }> = [];
  const sample: ObjectInfo[] = [];
  let seen = 0;

  const fail = (key: string, err: unknown) => {
    result.failed.count += 1;
    const error = describeError(err);
    if (result.failed.first.length < 100) result.failed.first.push({ key, error });
    log.warn({ key, err: error }, 'object failed');
  };
  const run = async (task: () => Promise<void>) => {
    while (inFlight.size >= options.concurrency) await Promise.race(inFlight);
    const p = task().finally(() => inFlight.delete(p));
    p.catch(() => {}); // awaited later through inFlight; this only keeps an early rejection from being "unhandled"
    inFlight.add(p);
  };
  const flushDeletes = async () => {
    const batch = pendingDeletes.splice(0);
    if (options.dryRun) for (const d of batch) add(result.deleted, d.size);
    if (batch.length === 0 || options.dryRun) return;
    try {
      await destination.store.delete(batch.map((d) => destKey(d.key)), { signal });
      for (const d of batch) add(result.deleted, d.size);
    } catch (err) {
      for (const d of batch) fail(d.key, err);
    }
  };
  // Runs inside a pool slot: either its own, or that of the HEAD that found the object changed.
  const copyNow = async (o: ObjectInfo, reason: 'new' | 'changed') => {
    options.onAction?.({ action: 'copy', key: o.key, size: o.size, reason });
    if (options.dryRun) return add(result.copied, o.size);
    try {
      await copyObject({
        source: { client: source.store.client, bucket: source.store.bucket, key: source.prefix + o.key, etag: o.etag, size: o.size },
        destination: { client: destination.store.client, bucket: destination.store.bucket, key: destKey(o.key) },
        multipartThreshold: options.multipartThreshold,
        partSize: options.partSize,
        partConcurrency: 4,
        signal,
      });
      add(result.copied, o.size);
    } catch (err) {
      if (signal?.aborted) throw err;
      fail(o.key, err);
    }
  };
  const copy = (o: ObjectInfo, reason: 'new' | 'changed') => (options.dryRun ? copyNow(o, reason) : run(() => copyNow(o, reason)));

  for await (const { key, source: s, destination: d } of mergeJoin(listSide(source, signal), listSide(destination, signal, reports), (o) => o.key, (o) => o.key)) {
    signal?.throwIfAborted();
    if (d) add(result.destination, d.size);
    if (!s) {
      if (options.deletion === 'delete') {
        options.onAction?.({ action: 'delete', key, size: d!.size, reason: 'extraneous' });
        pendingDeletes.push({ key, size: d!.size });
        if (pendingDeletes.length >= 1000) await flushDeletes();
      }
      continue;
    }
    add(result.source, s.size);
    // Reservoir sample: every source object equally likely, in constant memory.
    seen += 1;
    if (sample.length < options.sample) sample.push(s);
    else if (options.sample > 0 && Math.random() * seen < options.sample) sample[Math.floor(Math.random() * options.sample)] = s;
    if (!d) await copy(s, 'new');
    else if (d.size !== s.size) await copy(s, 'changed');
    else if (d.etag === s.etag) add(result.skipped, s.size);
    else {
      await run(async () => {
        result.heads += 1;
        const head = await destination.store.head(destKey(key), { signal }).catch((err: unknown) => {
          if (signal?.aborted) throw err;
          fail(key, err);
          return null;
        });
        if (head === null) return;
        if (head?.metadata[SOURCE_ETAG_METADATA] === s.etag) add(result.skipped, s.size);
        else await copyNow(s, 'changed');
      });
    }
  }
  while (inFlight.size > 0) await Promise.all(inFlight);
  await flushDeletes();
  if (!options.dryRun) await verify(source, destination, options, result, sample);
  return result;
}

/**
 * A second listing pass (counts and sizes on both sides) and a sha256 comparison of the sample. When the
 * run changed nothing, the first pass already compared both full listings, so it stands as the check.
 */
async function verify(source: Side, destination: Side, options: MirrorOptions, result: MirrorResult, sample: ObjectInfo[]) {
  const listing = result.verification.listing;
  const reports = destination.prefix + MIRROR_REPORTS;
  const changed = result.copied.count + result.deleted.count + result.failed.count > 0;
  if (!changed) {
    // Nothing copied means every source object was present with its size (else it would have been copied).
    Object.assign(listing, { source: { ...result.source }, destination: { ...result.destination }, missing: 0, sizeMismatch: 0, extra: result.destination.count - result.source.count });
  }
  const second = changed ? mergeJoin(listSide(source, options.signal), listSide(destination, options.signal, reports), (o) => o.key, (o) => o.key) : [];
  for await (const { source: s, destination: d } of second) {
    if (s) add(listing.source, s.size);
    if (d) add(listing.destination, d.size);
    if (s && !d) listing.missing += 1;
    else if (!s && d) listing.extra += 1;
    else if (s && d && s.size !== d.size) listing.sizeMismatch += 1;
  }
  listing.ok = listing.missing === 0 && listing.sizeMismatch === 0 && (options.deletion === 'keep' || listing.extra === 0);
  let next = 0;
  const checkOne = async (o: ObjectInfo) => {
    try {
      const [a, b] = await Promise.all([
        source.store.get(source.prefix + o.key, { signal: options.signal }).then(hashStream),
        destination.store.get(destination.prefix + o.key, { signal: options.signal }).then(hashStream),
      ]);
      result.verification.sample.checked += 1;
      if (a.sha256 !== b.sha256) result.verification.sample.mismatches.push({ key: o.key, source: a.sha256, destination: b.sha256 });
    } catch (err) {
      // A missing object is already counted by the listing pass.
      if (err instanceof ObjectNotFoundError) return;
      result.failed.count += 1;
      if (result.failed.first.length < 100) result.failed.first.push({ key: o.key, error: `sample check: ${describeError(err)}` });
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, sample.length) }, async () => {
    while (next < sample.length) await checkOne(sample[next++]!);
  }));
}
