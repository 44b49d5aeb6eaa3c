import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { isUnreachable } from '../targets/errors.js';
import { hashStream } from '../targets/hash.js';
import type { ObjectHeaders } from '../targets/headers.js';
import type { S3Store } from '../targets/s3.js';
import { ObjectNotFoundError, type ObjectInfo } from '../targets/store.js';
import { copyObject } from './copy.js';
import { copyDecrypted, encryptedRecord, headVersion, isEncryptedCopy } from './encrypted.js';
import { SOURCE_ETAG_METADATA, unwrapMirrored } from './headers.js';
import { mergeJoin } from './merge.js';
import { describeError } from './mirror.js';
import { taskPool } from './pool.js';
import { add, recordFailure, Reservoir, stopError, tally, type Tally } from './run.js';

export interface BucketRestoreOptions {
  /** Only keys under this prefix, relative to the mirror ("2024/" restores <mirror>/2024/…). */
  prefix: string;
  /** The state of a versioned hub at this time; default: its current state. */
  at?: Date;
  /** Replace destination objects newer than the hub's copy. */
  overwrite: boolean;
  dryRun: boolean;
  /** The destination bucket does not exist yet (a dry run that would create it): nothing to list there. */
  destinationMissing?: boolean;
  multipartThreshold: number;
  partSize: number;
  concurrency: number;
  sample: number;
  signal?: AbortSignal;
  log: Logger;
  /** The dataset is encrypted: its identity. Marked hub objects are decrypted; without it they are refused, one by one. */
  decrypt?: () => Duplex;
  /** After every object settled (copied, unchanged or kept): the running totals. */
  onProgress?: (done: { objects: number; bytes: number }) => void;
}


export interface BucketRestoreResult {
  /** Objects of the mirror (at --at) under the prefix. */
  source: Tally;
  copied: Tally;
  /** Already at the destination with the same size and ETag (or the ETag the mirror recorded). */
  unchanged: Tally;
  /** Newer at the destination than the hub's copy: left alone without --overwrite. */
  keptNewer: { count: number; bytes: number; first: string[] };
  /** Destination objects the mirror does not have: a restore never deletes. */
  untouched: Tally;
  failed: { count: number; first: Array<{ key: string; error: string }> };
  heads: number;
  verification: {
    listing: { ok: boolean; missing: number; sizeMismatch: number };
    sample: { requested: number; checked: number; mismatches: Array<{ key: string; hub: string; destination: string }> };
  };
}

interface Side {
  store: S3Store;
  prefix: string;
}

type HubObject = ObjectInfo & { versionId?: string };

/** Keys whose newer destination object was kept, remembered so the check does not call them mismatches. */
const KEPT_REMEMBERED = 100_000;


async function* listUnder(side: Side, prefix: string, at: Date | undefined, signal: AbortSignal | undefined): AsyncIterable<HubObject> {
  const listing = at ? side.store.listAt(side.prefix + prefix, at, { signal }) : side.store.list(side.prefix + prefix, { signal });
  for await (const o of listing) yield { ...o, key: o.key.slice(side.prefix.length) };
}

async function* nothing<T>(): AsyncIterable<T> {}

const PLAIN_MD5 = /^"?[0-9a-f]{32}"?$/;

/**
 * A hub copy whose bytes were replaced after the mirror wrote them: both its ETag and the source ETag the
 * mirror recorded are plain MD5s (single-part objects on both sides), so they must be equal.
 */
function changedSinceMirrored(etag: string, headers: ObjectHeaders): string | undefined {
  if (isEncryptedCopy(headers.metadata)) return 'the hub\'s copy is age-encrypted and this dataset has no encryption configured here; set its encryption (with identityFile) to restore it';
  const recorded = headers.metadata[SOURCE_ETAG_METADATA];
  if (recorded === undefined || !PLAIN_MD5.test(etag) || !PLAIN_MD5.test(recorded) || etag === recorded) return undefined;
  return `the hub's copy changed after the mirror wrote it (its MD5 ETag is ${etag}, the source's was ${recorded}); not restored`;
}

/**
 * Copies a mirror on the hub back to a bucket: streaming, merge-joined with the destination's listing
 * (flat memory), headers as the source had them (Lifeboat's records dropped). It never deletes, and
 * never replaces a destination object newer than the hub's copy unless told to. Afterwards a second
 * listing checks every restored object's size, and a sample is compared by sha256.
 */
export async function restoreBucket(hub: Side, destination: Side, options: BucketRestoreOptions): Promise<BucketRestoreResult> {
  const { signal, log } = options;
  const result: BucketRestoreResult = {
    source: tally(), copied: tally(), unchanged: tally(), keptNewer: { count: 0, bytes: 0, first: [] }, untouched: tally(),
    failed: { count: 0, first: [] }, heads: 0,
    verification: { listing: { ok: false, missing: 0, sizeMismatch: 0 }, sample: { requested: options.sample, checked: 0, mismatches: [] } },
  };
  const kept = new Set<string>();
  const sample = new Reservoir<HubObject>(options.sample);
  const pool = taskPool(options.concurrency);
  const settled = () => options.onProgress?.({ objects: result.copied.count + result.unchanged.count + result.keptNewer.count, bytes: result.copied.bytes + result.unchanged.bytes + result.keptNewer.bytes });
  // What the destination now holds from the hub, every such object equally likely.
  const offer = (o: HubObject) => sample.offer(o);
  const fail = (key: string, err: unknown) => recordFailure(result.failed, log, key, describeError(err));
  const stop = (err: unknown) => stopError(err, describeError(err), { hub: hub.store, destination: destination.store }, signal);
  const copy = async (o: HubObject) => {
    offer(o);
    if (options.dryRun) return add(result.copied, o.size);
    try {
      const decrypted = options.decrypt && await copyDecrypted({
        source: { client: hub.store.client, bucket: hub.store.bucket, key: hub.prefix + o.key, etag: o.etag, size: o.size, versionId: o.versionId },
        destination: { client: destination.store.client, bucket: destination.store.bucket, key: destination.prefix + o.key },
        decrypt: options.decrypt,
        multipartThreshold: options.multipartThreshold,
        partSize: options.partSize,
        signal,
      });
      // A hub copy without the marker (mirrored before encryption was on) goes back as it is.
      if (!decrypted) await copyObject({
        source: { store: hub.store, key: hub.prefix + o.key, etag: o.etag, size: o.size, versionId: o.versionId },
        destination: { store: destination.store, key: destination.prefix + o.key },
        headers: unwrapMirrored,
        refuse: changedSinceMirrored,
        multipartThreshold: options.multipartThreshold,
        partSize: options.partSize,
        partConcurrency: 4,
        signal,
      });
      add(result.copied, o.size);
      settled();
    } catch (err) {
      if (signal?.aborted || isUnreachable(err)) throw stop(err);
      fail(o.key, err);
    }
  };
  const keep = (o: HubObject) => {
    add(result.keptNewer, o.size);
    if (result.keptNewer.first.length < 100) result.keptNewer.first.push(o.key);
    if (kept.size < KEPT_REMEMBERED) kept.add(o.key);
    settled();
  };

  const destinationListing = options.destinationMissing ? nothing<HubObject>() : listUnder(destination, options.prefix, undefined, signal);
  for await (const { key, source: s, destination: d } of mergeJoin(listUnder(hub, options.prefix, options.at, signal), destinationListing, (o) => o.key, (o) => o.key)) {
    signal?.throwIfAborted();
    if (!s) {
      add(result.untouched, d!.size);
      continue;
    }
    add(result.source, s.size);
    if (!d) {
      await pool.run(() => copy(s));
    } else if (d.size === s.size && d.etag === s.etag) {
      add(result.unchanged, s.size);
      offer(s);
      settled();
    } else {
      await pool.run(async () => {
        // An encrypted copy records the original's size and ETag.
        if (options.decrypt) {
          result.heads += 1;
          const head = await headVersion(hub.store.client, hub.store.bucket, hub.prefix + key, s.versionId, signal).catch((err: unknown) => {
            if (signal?.aborted || isUnreachable(err)) throw stop(err);
            return undefined;
          });
          const record = head && encryptedRecord(head.metadata);
          if (record && record.size === d.size && record.sourceEtag !== undefined && record.sourceEtag.replace(/"/g, '') === d.etag.replace(/"/g, '')) {
            add(result.unchanged, s.size);
            offer(s);
            return settled();
          }
        }
        // The original of a multipart copy: its ETag is the one the mirror recorded on the hub.
        if (d.size === s.size && !s.versionId) {
          result.heads += 1;
          const head = await hub.store.head(hub.prefix + key, { signal }).catch((err: unknown) => {
            if (signal?.aborted || isUnreachable(err)) throw stop(err);
            return undefined;
          });
          if (head?.metadata[SOURCE_ETAG_METADATA] === d.etag) {
            add(result.unchanged, s.size);
            offer(s);
            return settled();
          }
        }
        if (d.lastModified.getTime() > s.lastModified.getTime() && !options.overwrite) return keep(s);
        return copy(s);
      });
    }
  }
  await pool.drain();
  if (!options.dryRun) await check(hub, destination, options, result, kept, sample.items);
  return result;
}

/** Every hub object present at the destination with its size (kept newer ones aside), and the sample's sha256 equal. */
async function check(hub: Side, destination: Side, options: BucketRestoreOptions, result: BucketRestoreResult, kept: Set<string>, sample: HubObject[]) {
  const listing = result.verification.listing;
  for await (const { key, source: s, destination: d } of mergeJoin(listUnder(hub, options.prefix, options.at, options.signal), listUnder(destination, options.prefix, undefined, options.signal), (o) => o.key, (o) => o.key)) {
    if (!s) continue;
    if (!d) listing.missing += 1;
    else if (d.size !== s.size && !kept.has(key) && !(await decryptedSize(hub, s, d.size, options))) listing.sizeMismatch += 1;
  }
  listing.ok = listing.missing === 0 && listing.sizeMismatch === 0;
  const checked = sample.filter((o) => !kept.has(o.key));
  let next = 0;
  const checkOne = async (o: HubObject) => {
    try {
      const [a, b] = await Promise.all([
        hubPlaintextHash(hub, o, options),
        destination.store.get(destination.prefix + o.key, { signal: options.signal }).then(hashStream),
      ]);
      result.verification.sample.checked += 1;
      if (a.sha256 !== b.sha256) result.verification.sample.mismatches.push({ key: o.key, hub: a.sha256, destination: b.sha256 });
    } catch (err) {
      if (err instanceof ObjectNotFoundError) return; // counted by the listing
      result.failed.count += 1;
      if (result.failed.first.length < 100) result.failed.first.push({ key: o.key, error: `sample check: ${describeError(err)}` });
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, checked.length) }, async () => {
    while (next < checked.length) await checkOne(checked[next++]!);
  }));
}

/** An encrypted hub copy restored at its original size: the size its record names. */
async function decryptedSize(hub: Side, o: HubObject, size: number, options: BucketRestoreOptions): Promise<boolean> {
  if (!options.decrypt) return false;
  const head = await headVersion(hub.store.client, hub.store.bucket, hub.prefix + o.key, o.versionId, options.signal);
  return head !== undefined && encryptedRecord(head.metadata)?.size === size;
}

/** What the restored object must hash to: an encrypted copy's recorded plaintext sha256 (the copy checked it on the way), else the hub's bytes. */
async function hubPlaintextHash(hub: Side, o: HubObject, options: BucketRestoreOptions): Promise<{ sha256: string }> {
  if (options.decrypt) {
    const head = await headVersion(hub.store.client, hub.store.bucket, hub.prefix + o.key, o.versionId, options.signal);
    const record = head && encryptedRecord(head.metadata);
    if (record) return { sha256: record.sha256 };
  }
  return hub.store.get(hub.prefix + o.key, { signal: options.signal, versionId: o.versionId }).then(hashStream);
}
