import type { Duplex } from 'node:stream';
import { S3ServiceException } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import { PermanentError } from '../../queue/errors.js';
import { describeS3Error, isUnreachable, TargetError } from '../targets/errors.js';
import { hashStream } from '../targets/hash.js';
import type { S3Store } from '../targets/s3.js';
import { ObjectNotFoundError, type ObjectInfo } from '../targets/store.js';
import { headersFingerprint } from '../targets/headers.js';
import { copyObject } from './copy.js';
import { DecryptionError } from '../crypto/age.js';
import { copyEncrypted, decryptedHash, encryptedRecord, isEncryptedCopy, type MirrorEncryption } from './encrypted.js';
import { SOURCE_ETAG_METADATA, SOURCE_HEADERS_METADATA } from './headers.js';
import { mergeJoin } from './merge.js';
import { taskPool } from './pool.js';
import { add, recordFailure, Reservoir, stopError, tally, type Tally } from './run.js';

export interface MirrorOptions {
  deletion: 'keep' | 'delete';
  /** With deletion 'delete': above this share of the destination, nothing is deleted (see DeletionGuard). */
  maxDeletePercent: number;
  /** Delete even when the guard trips. */
  force?: boolean;
  /** Extraneous keys held in memory for deletion after the merge; beyond it a second pass finds the rest. */
  heldDeleteKeys?: number;
  multipartThreshold: number;
  partSize: number;
  /** Objects in flight, at most; with maxInFlightBytes, as many as their bytes allow. */
  concurrency: number;
  /** The bytes of the copies in flight together, at most (see objectWeight). */
  maxInFlightBytes?: number;
  sample: number;
  dryRun: boolean;
  signal?: AbortSignal;
  log: Logger;
  /** Called for every planned or performed action (the dry-run plan). */
  onAction?: (action: PlannedAction) => void;
  /** Store every copy as age ciphertext under its own key (lib/mirror/encrypted.ts). */
  encryption?: MirrorEncryption;
  /** With encryption: the dataset's identity, when it is available here; the sample is then decrypted and hashed. */
  decrypt?: () => Duplex;
  /** After every source object compared and every copy: source objects seen so far, and what was copied. */
  onProgress?: (done: { compared: Tally; copied: Tally }) => void;
}

export interface PlannedAction {
  action: 'copy' | 'delete';
  key: string;
  size: number;
  /** metadata: same bytes, but the source's headers or user metadata changed. unencrypted: encryption is on and the hub's copy is plaintext. */
  reason: 'new' | 'changed' | 'metadata' | 'unencrypted' | 'extraneous';
}

/**
 * Decided after the whole merge, before anything is deleted: an empty source or a large share of the
 * destination to delete is far more often a wrong bucket or a wiped source than an intended change.
 */
export interface DeletionGuard {
  /** The deletes exceed the limit (or the source is empty); unless forced, nothing was deleted. */
  tripped: boolean;
  forced: boolean;
  reason?: 'source-empty' | 'over-limit';
  /** Extraneous destination objects. */
  wouldDelete: number;
  /** Destination objects listed. */
  destination: number;
  /** wouldDelete / destination, rounded up to 0.1. */
  percent: number;
  limitPercent: number;
}


export interface MirrorResult {
  source: Tally;
  destination: Tally;
  copied: Tally;
  skipped: Tally;
  deleted: Tally;
  /** Present with deletion 'delete'. */
  deletionGuard?: DeletionGuard;
  failed: { count: number; first: Array<{ key: string; error: string }> };
  /** HEAD requests made to settle ETag differences or a source touched since its copy (0 on a no-change run of ordinary objects). */
  heads: number;
  verification: {
    listing: { ok: boolean; missing: number; sizeMismatch: number; extra: number; source: Tally; destination: Tally };
    sample: { requested: number; checked: number; mismatches: Array<{ key: string; source: string; destination: string }> };
  };
}

const DEFAULT_HELD_DELETE_KEYS = 10_000;
/** Copies of an encrypted object whose source keeps changing under them, before giving up on it for this run. */
const ENCRYPTED_COPY_TRIES = 3;
const unquote = (etag: string) => etag.replace(/"/g, '');
const DELETE_BATCH = 1000;
/** Parts of one multipart copy in flight. */
const PART_CONCURRENCY = 4;

export { MirrorStoppedError } from './run.js';

/** Access denied or a missing bucket cannot fix itself: permanent, naming the dataset's side. */
export async function checkBucket(store: S3Store, side: string, signal?: AbortSignal): Promise<void> {
  try {
    await store.headBucket({ signal });
  } catch (err) {
    if (!(err instanceof TargetError)) throw err;
    if (err.code === 'NoSuchBucket') throw new PermanentError(`${side}: bucket ${store.bucket} does not exist`, { cause: err });
    throw new PermanentError(`${side}: access to bucket ${store.bucket} denied (${err.code}, HTTP ${err.httpStatus}; check its credentials)`, { cause: err });
  }
}

/** "AccessDenied (HTTP 403): …": the SDK's own message alone can be as thin as "UnknownError". */
export function describeError(err: unknown): string {
  if (err instanceof S3ServiceException) return describeS3Error(err);
  return err instanceof Error ? err.message : String(err);
}

interface Side {
  store: S3Store;
  prefix: string;
}

/** A side's objects keyed without its prefix. Lifeboat's own records live outside every mirror prefix (lib/catalog/layout.ts). */
async function* listSide(side: Side, signal: AbortSignal | undefined, startAfter?: string): AsyncIterable<ObjectInfo> {
  const after = startAfter === undefined ? undefined : side.prefix + startAfter;
  for await (const o of side.store.list(side.prefix, { signal, startAfter: after })) {
    yield { ...o, key: o.key.slice(side.prefix.length) };
  }
}

/** Trips on an empty source (whatever the limit) or when the extraneous share of the destination exceeds the limit. */
export function checkDeletion(counts: { source: number; destination: number; extraneous: number }, limitPercent: number, force: boolean): DeletionGuard {
  const { source, destination, extraneous } = counts;
  // Integer arithmetic, so 812 of 1000 reads 81.2 and a share just above the limit never rounds down onto it.
  const percent = destination === 0 ? 0 : Math.ceil((extraneous * 1000) / destination) / 10;
  const reason = source === 0 && destination > 0 ? 'source-empty' : extraneous * 100 > limitPercent * destination ? 'over-limit' : undefined;
  return { tripped: reason !== undefined, forced: force, ...(reason ? { reason } : {}), wouldDelete: extraneous, destination, percent, limitPercent };
}

/**
 * Mirrors source → destination incrementally. Both listings are merge-joined in key order, so memory
 * stays flat whatever the object count. Equal size and ETag is "unchanged" without a request; an ETag
 * that cannot match (a multipart copy) is settled by the destination's recorded source ETag.
 * Extraneous objects are only counted during the merge; they are deleted afterwards, if the deletion
 * guard passes (or is forced).
 */
export async function mirrorBucket(source: Side, destination: Side, options: MirrorOptions): Promise<MirrorResult> {
  const { signal, log } = options;
  const result: MirrorResult = {
    source: tally(), destination: tally(), copied: tally(), skipped: tally(), deleted: tally(),
    failed: { count: 0, first: [] }, heads: 0,
    verification: { listing: { ok: false, missing: 0, sizeMismatch: 0, extra: 0, source: tally(), destination: tally() }, sample: { requested: options.sample, checked: 0, mismatches: [] } },
  };
  const destKey = (key: string) => destination.prefix + key;
  const heldLimit = options.heldDeleteKeys ?? DEFAULT_HELD_DELETE_KEYS;
  const held: Array<{ key: string; size: number }> = [];
  const extraneous = tally();
  const sample = new Reservoir<ObjectInfo>(options.sample);
  const fail = (key: string, err: unknown) => recordFailure(result.failed, log, key, describeError(err));
  const stop = (err: unknown) => stopError(err, describeError(err), { source: source.store, destination: destination.store }, signal);
  const pool = taskPool(options.concurrency, options.maxInFlightBytes);
  const run = pool.run;
  // What a copy holds in flight: a small object its size, a multipart one its parts in flight.
  const weight = (o: ObjectInfo) => (o.size <= options.multipartThreshold ? o.size : Math.min(o.size, PART_CONCURRENCY * options.partSize));
  const deleteBatch = async (batch: Array<{ key: string; size: number }>) => {
    if (batch.length === 0) return;
    for (const d of batch) options.onAction?.({ action: 'delete', key: d.key, size: d.size, reason: 'extraneous' });
    try {
      await destination.store.delete(batch.map((d) => destKey(d.key)), { signal });
      for (const d of batch) add(result.deleted, d.size);
    } catch (err) {
      if (signal?.aborted || isUnreachable(err)) throw stop(err);
      for (const d of batch) fail(d.key, err);
    }
  };
  // The keys that did not fit in memory: a second merge-join after the held ones, capped at what the guard approved.
  const deleteBeyondHeld = async (after: string | undefined, approved: number) => {
    let remaining = approved;
    const batch: Array<{ key: string; size: number }> = [];
    for await (const { key, source: s, destination: d } of mergeJoin(listSide(source, signal, after), listSide(destination, signal, after), (o) => o.key, (o) => o.key)) {
      signal?.throwIfAborted();
      if (s) continue;
      batch.push({ key, size: d!.size });
      remaining -= 1;
      if (batch.length >= DELETE_BATCH) await deleteBatch(batch.splice(0));
      if (remaining === 0) break;
    }
    await deleteBatch(batch);
  };
  // Runs inside a pool slot: either its own, or that of the HEAD that found the object changed.
  const encryption = options.encryption;
  // Returns the plaintext size copied (the source may have changed under the first try).
  const copyEncryptedNow = async (o: ObjectInfo, enc: MirrorEncryption): Promise<number> => {
    let current = { etag: o.etag, size: o.size };
    for (let attempt = 1; ; attempt += 1) {
      await copyEncrypted({
        source: { client: source.store.client, bucket: source.store.bucket, key: source.prefix + o.key, ...current },
        destination: { client: destination.store.client, bucket: destination.store.bucket, key: destKey(o.key) },
        encryption: enc, multipartThreshold: options.multipartThreshold, partSize: options.partSize, signal,
      });
      // The no-change rule trusts "source older than the hub copy": a source write that landed while
      // this copy ran is older than the copy yet not in it, so look once more and copy again if so.
      result.heads += 1;
      const now = await source.store.head(source.prefix + o.key, { signal });
      if (!now || unquote(now.etag) === unquote(current.etag)) return current.size;
      if (attempt === ENCRYPTED_COPY_TRIES) {
        // Never leave a copy that a later run would take for current.
        await destination.store.delete([destKey(o.key)], { signal });
        throw new Error(`the source changed during each of ${ENCRYPTED_COPY_TRIES} encrypted copies; its hub copy was removed so the next run copies it again`);
      }
      current = { etag: now.etag, size: now.size };
    }
  };
  const copyNow = async (o: ObjectInfo, reason: PlannedAction['reason']) => {
    options.onAction?.({ action: 'copy', key: o.key, size: o.size, reason });
    if (options.dryRun) return add(result.copied, o.size);
    try {
      if (encryption) {
        add(result.copied, await copyEncryptedNow(o, encryption));
        options.onProgress?.({ compared: result.source, copied: result.copied });
        return;
      }
      await copyObject({
        source: { store: source.store, key: source.prefix + o.key, etag: o.etag, size: o.size },
        destination: { store: destination.store, key: destKey(o.key) },
        multipartThreshold: options.multipartThreshold,
        partSize: options.partSize,
        partConcurrency: PART_CONCURRENCY,
        signal,
      });
      add(result.copied, o.size);
      options.onProgress?.({ compared: result.source, copied: result.copied });
    } catch (err) {
      if (signal?.aborted || isUnreachable(err)) throw stop(err);
      fail(o.key, err);
    }
  };
  const copy = (o: ObjectInfo, reason: PlannedAction['reason']) => (options.dryRun ? copyNow(o, reason) : run(() => copyNow(o, reason), weight(o)));

  const headOrFail = <T>(key: string, head: () => Promise<T>) =>
    head().catch((err: unknown) => {
      if (signal?.aborted || isUnreachable(err)) throw stop(err);
      fail(key, err);
      return null;
    });
  /**
   * The no-change rule with encryption. A listing has no metadata and a ciphertext's ETag is random, so
   * an encrypted copy is unchanged without a request when its listed size is exactly the ciphertext size
   * of the source's size (a plaintext copy is always shorter) and the source is not newer than the copy
   * (copyEncryptedNow re-checks the source after each copy, so a write during it is not hidden). Else a
   * HEAD, where the plaintext path HEADs too: no marker is a plaintext copy (re-copied encrypted), then
   * the recorded source ETag and headers fingerprint decide. Like the plaintext path's metadata rule it
   * needs the two servers' clocks to agree (NTP).
   */
  const compareEncrypted = async (s: ObjectInfo, d: ObjectInfo, enc: MirrorEncryption) => {
    if (d.size !== enc.ciphertextSize(s.size)) return copy(s, d.size === s.size ? 'unencrypted' : 'changed');
    // Strictly older: a listing's time may be whole seconds, and a write in the copy's own second must be looked at.
    if (s.lastModified < d.lastModified) return add(result.skipped, s.size);
    await run(async () => {
      result.heads += 1;
      const head = await headOrFail(s.key, () => destination.store.head(destKey(s.key), { signal }));
      if (head === null) return;
      if (head === undefined) return copyNow(s, 'new');
      if (!isEncryptedCopy(head.metadata)) return copyNow(s, 'unencrypted');
      if (unquote(head.metadata[SOURCE_ETAG_METADATA] ?? '') !== unquote(s.etag)) return copyNow(s, 'changed');
      result.heads += 1;
      const sourceHead = await headOrFail(s.key, () => source.store.head(source.prefix + s.key, { signal }));
      if (sourceHead === null) return;
      if (sourceHead === undefined || head.metadata[SOURCE_HEADERS_METADATA] === headersFingerprint(sourceHead.headers)) return add(result.skipped, s.size);
      return copyNow(s, 'metadata');
    });
  };
  for await (const { key, source: s, destination: d } of mergeJoin(listSide(source, signal), listSide(destination, signal), (o) => o.key, (o) => o.key)) {
    signal?.throwIfAborted();
    if (d) add(result.destination, d.size);
    if (!s) {
      if (options.deletion === 'delete') {
        add(extraneous, d!.size);
        if (options.dryRun) options.onAction?.({ action: 'delete', key, size: d!.size, reason: 'extraneous' });
        else if (held.length < heldLimit) held.push({ key, size: d!.size });
      }
      continue;
    }
    add(result.source, s.size);
    options.onProgress?.({ compared: result.source, copied: result.copied });
    sample.offer(s); // every source object equally likely
    if (!d) await copy(s, 'new');
    else if (encryption) await compareEncrypted(s, d, encryption);
    else if (d.size !== s.size) await copy(s, 'changed');
    else if (d.etag === s.etag && s.lastModified <= d.lastModified) add(result.skipped, s.size);
    else {
      // An ETag that cannot match (a multipart copy) is settled by the recorded source ETag; a source
      // touched after its copy (CopyObject REPLACE keeps size and ETag) by the recorded headers fingerprint.
      await run(async () => {
        result.heads += 1;
        const head = await headOrFail(key, () => destination.store.head(destKey(key), { signal }));
        if (head === null) return;
        if (head === undefined) return copyNow(s, 'new');
        if (d.etag !== s.etag && head.metadata[SOURCE_ETAG_METADATA] !== s.etag) return copyNow(s, 'changed');
        if (s.lastModified <= d.lastModified) return add(result.skipped, s.size);
        result.heads += 1;
        const sourceHead = await headOrFail(key, () => source.store.head(source.prefix + key, { signal }));
        if (sourceHead === null) return;
        // Gone since the listing: the next run sees it.
        if (sourceHead === undefined || head.metadata[SOURCE_HEADERS_METADATA] === headersFingerprint(sourceHead.headers)) return add(result.skipped, s.size);
        return copyNow(s, 'metadata');
      });
    }
  }
  await pool.drain();

  if (options.deletion === 'delete') {
    const guard = checkDeletion({ source: result.source.count, destination: result.destination.count, extraneous: extraneous.count }, options.maxDeletePercent, options.force ?? false);
    result.deletionGuard = guard;
    if (guard.tripped) log.warn({ ...guard }, guard.forced ? 'deletion guard tripped, forced' : 'deletion guard tripped, deleting nothing');
    if (options.dryRun) result.deleted = { ...extraneous };
    else if (!guard.tripped || guard.forced) {
      for (let i = 0; i < held.length; i += DELETE_BATCH) await deleteBatch(held.slice(i, i + DELETE_BATCH));
      if (extraneous.count > held.length) await deleteBeyondHeld(held.at(-1)?.key, extraneous.count - held.length);
    }
  }
  if (!options.dryRun) await verify(source, destination, options, result, sample.items);
  return result;
}

/**
 * A second listing pass (counts and sizes on both sides) and a sha256 comparison of the sample. When the
 * run changed nothing, the first pass already compared both full listings, so it stands as the check.
 */
async function verify(source: Side, destination: Side, options: MirrorOptions, result: MirrorResult, sample: ObjectInfo[]) {
  const listing = result.verification.listing;
  const changed = result.copied.count + result.deleted.count + result.failed.count > 0;
  if (!changed) {
    // Nothing copied means every source object was present with its size (else it would have been copied).
    Object.assign(listing, { source: { ...result.source }, destination: { ...result.destination }, missing: 0, sizeMismatch: 0, extra: result.destination.count - result.source.count });
  }
  const second = changed ? mergeJoin(listSide(source, options.signal), listSide(destination, options.signal), (o) => o.key, (o) => o.key) : [];
  for await (const { source: s, destination: d } of second) {
    if (s) add(listing.source, s.size);
    if (d) add(listing.destination, d.size);
    if (s && !d) listing.missing += 1;
    else if (!s && d) listing.extra += 1;
    else if (s && d && d.size !== (options.encryption ? options.encryption.ciphertextSize(s.size) : s.size)) listing.sizeMismatch += 1;
  }
  listing.ok = listing.missing === 0 && listing.sizeMismatch === 0 && (options.deletion === 'keep' || listing.extra === 0);
  let next = 0;
  const checkOne = async (o: ObjectInfo) => {
    try {
      const [a, b] = await Promise.all([
        source.store.get(source.prefix + o.key, { signal: options.signal }).then(hashStream),
        options.encryption ? encryptedSampleHash(destination, o.key, options) : destination.store.get(destination.prefix + o.key, { signal: options.signal }).then((r) => hashStream(r).then((h) => h.sha256)),
      ]);
      result.verification.sample.checked += 1;
      if (a.sha256 !== b) result.verification.sample.mismatches.push({ key: o.key, source: a.sha256, destination: b });
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

/**
 * What an encrypted hub copy holds, for the sample: with the identity here, the sha256 of its decrypted
 * bytes (which must also match the sha256 recorded at copy time); without, the recorded sha256. A copy
 * without the marker, or one that does not decrypt, reads as a description that matches no hash.
 */
async function encryptedSampleHash(destination: Side, key: string, options: MirrorOptions): Promise<string> {
  const { store } = destination;
  if (options.decrypt) {
    try {
      const plain = await decryptedHash(store.client, store.bucket, destination.prefix + key, options.decrypt, options.signal);
      if (plain.record && plain.record.sha256 !== plain.sha256) return `decrypted ${plain.sha256}, but the copy's record says ${plain.record.sha256}`;
      return plain.sha256;
    } catch (err) {
      if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404) throw new ObjectNotFoundError(store.label, key);
      if (err instanceof DecryptionError) return `cannot decrypt: ${err.message}`;
      throw err;
    }
  }
  const head = await store.head(destination.prefix + key, { signal: options.signal });
  if (!head) throw new ObjectNotFoundError(store.label, key);
  if (!isEncryptedCopy(head.metadata)) return 'a plaintext copy (no lifeboat-encryption marker)';
  const record = encryptedRecord(head.metadata);
  if (!record) return 'an encrypted copy without a readable record of its plaintext';
  if (head.size !== options.encryption!.ciphertextSize(record.size)) return `recorded ${record.sha256}, but ${head.size} bytes is no ciphertext of ${record.size}`;
  return record.sha256;
}
