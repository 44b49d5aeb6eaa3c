import { S3ServiceException } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import { listBackups } from '../catalog/catalog.js';
import { DRILL_FILE, LIFEBOAT_RECORDS, siblingKey, tickStamp } from '../catalog/layout.js';
import type { Check } from '../catalog/manifest.js';
import type { BucketDataset } from '../config/schema.js';
import { copyObject, SOURCE_ETAG_METADATA } from '../mirror/copy.js';
import { describeS3Error } from '../targets/errors.js';
import { hashStream } from '../targets/hash.js';
import { S3Store } from '../targets/s3.js';
import { ObjectNotFoundError, type ObjectInfo } from '../targets/store.js';
import { errorMessage, PermanentError } from '../../queue/errors.js';
import { drillDecrypter, type Drill } from './types.js';
import type { Duplex } from 'node:stream';
import { DecryptionError } from '../crypto/age.js';
import { copyDecrypted, isEncryptedCopy } from '../mirror/encrypted.js';

const MiB = 1024 * 1024;
/** Sampled objects restored and compared at once. */
const CONCURRENCY = 4;
/** Mismatched keys named in the check's detail. */
const NAMED = 5;
/** Cleanup runs after an abort too, so it gets its own deadline instead of the job's signal. */
const CLEANUP_TIMEOUT_MS = 120_000;

/** The scratch prefix a drill restores into: outside every mirror, one per dataset and tick (a retry reuses and clears it). */
export function drillScratchPrefix(dataset: Pick<BucketDataset, 'id'>, tick: Date): string {
  return `${LIFEBOAT_RECORDS}drill-scratch/${dataset.id}/${tickStamp(tick)}/`;
}

/** A uniform sample of a stream of unknown length in constant memory, plus its largest item. */
export class Reservoir {
  readonly items: ObjectInfo[] = [];
  largest: ObjectInfo | undefined;
  #seen = 0;
  constructor(private readonly size: number) {}

  add(o: ObjectInfo): void {
    this.#seen += 1;
    if (!this.largest || o.size > this.largest.size) this.largest = o;
    if (this.items.length < this.size) this.items.push(o);
    else if (this.size > 0 && Math.random() * this.#seen < this.size) this.items[Math.floor(Math.random() * this.size)] = o;
  }

  get seen(): number {
    return this.#seen;
  }

  /** The sample with the largest object added if the draw missed it. */
  picked(): ObjectInfo[] {
    const largest = this.largest;
    return largest && !this.items.some((o) => o.key === largest.key) ? [...this.items, largest] : [...this.items];
  }
}

const unquote = (etag: string | undefined) => etag?.replace(/"/g, '');

/** A 404 or 412 from the hub while copying: the mirror rewrote or removed the object during the drill. */
function goneFromHub(err: unknown): boolean {
  const status = err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
  return status === 404 || status === 412;
}

type Outcome = 'match' | 'mismatch' | 'changed';

interface Tally {
  copied: number;
  bytes: number;
  compared: number;
  changedSinceMirror: number;
  mismatches: string[];
  /** Encrypted datasets: sampled hub objects that did not decrypt to what the mirror recorded, with why. */
  undecryptable: string[];
  decrypted: number;
  /** Encrypted datasets: sampled hub objects stored without the marker (plaintext). */
  plaintext: string[];
}

/**
 * Restores a sample of a mirror: each sampled hub object is copied into a scratch prefix through the
 * same copy the mirror uses, then the copy and the source object are compared by sha256. Objects that
 * changed at the source since the mirror ran are counted, not failed.
 */
export const drillBucket: Drill<BucketDataset> = async (dataset, { deps, log, signal, tick }, input) => {
  const hub = deps.storeFor(dataset);
  if (!(hub instanceof S3Store)) throw new PermanentError(`dataset ${dataset.id}: a bucket drill needs an s3 target (target.name ${dataset.target.name})`);
  const backups = await listBackups(hub, dataset, { signal });
  const entry = input.backup ? backups.find((b) => b.id === input.backup) : backups.find((b) => b.tick.getTime() <= tick.getTime());
  if (!entry) throw new PermanentError(input.backup ? `dataset ${dataset.id} has no mirror report ${input.backup}` : `dataset ${dataset.id} has no mirror report to drill`);
  const reportKey = entry.manifest.artifact.key;
  const scratch = drillScratchPrefix(dataset, tick);
  const where = `scratch prefix ${hub.bucket}/${scratch} on target ${hub.target}`;
  const opened = drillDecrypter(dataset.encryption !== undefined, dataset, `drill dataset ${dataset.id}`, { backup: entry.id, key: reportKey, recordKey: siblingKey(reportKey, DRILL_FILE), mode: 'scratch-prefix', where: 'not started' });
  if ('result' in opened) return opened.result;
  const { decrypt } = opened;
  log.info({ backup: entry.id, key: reportKey, scratch, encrypted: decrypt !== undefined }, 'drill starting');

  const checks: Check[] = [await reportCheck(hub, reportKey, signal)];
  const tally: Tally = { copied: 0, bytes: 0, compared: 0, changedSinceMirror: 0, mismatches: [], undecryptable: [], decrypted: 0, plaintext: [] };
  const reservoir = new Reservoir(dataset.drill.sample);
  let retryable: unknown;
  let restoreMs = 0;
  let sampled: ObjectInfo[] = [];
  try {
    // The mirror itself, streamed: only the sample is held. A legacy report folder inside the prefix is not part of it.
    const legacyReports = `${dataset.target.prefix}${LIFEBOAT_RECORDS}`;
    for await (const o of hub.list(dataset.target.prefix, { signal })) {
      if (!o.key.startsWith(legacyReports)) reservoir.add(o);
    }
    sampled = reservoir.picked();
    const started = Date.now();
    await pool(sampled, (o) => drillOne(dataset, hub, deps.bucketSource(dataset), scratch, o, tally, signal, decrypt));
    restoreMs = Date.now() - started;
    checks.push(restoreCheck(entry.manifest.source, reservoir.seen, sampled.length, tally, scratch));
    if (decrypt) checks.push(decryptCheck(tally));
    checks.push(sha256Check(sampled.length, tally));
  } catch (err) {
    retryable = err;
    checks.push({ name: 'sample restore', ok: false, detail: errorMessage(err) });
  } finally {
    const cleanup = await removeScratch(hub, scratch, log);
    checks.push(cleanup.check);
    retryable ??= cleanup.error;
  }

  const largest = reservoir.largest;
  return {
    backup: entry.id,
    key: reportKey,
    recordKey: siblingKey(reportKey, DRILL_FILE),
    mode: 'scratch-prefix',
    where,
    restoreMs,
    checks,
    retryable,
    details: {
      sampled: sampled.length,
      listed: reservoir.seen,
      largest: largest ? { key: largest.key, size: largest.size } : undefined,
      compared: tally.compared,
      changedSinceMirror: tally.changedSinceMirror,
      mismatches: tally.mismatches.length,
      bytes: tally.bytes,
      ...(decrypt && { decrypted: tally.decrypted, undecryptable: tally.undecryptable.length, plaintext: tally.plaintext.length }),
    },
  };
};

/** Runs `task` over `items`, CONCURRENCY at a time; waits for every started task before rethrowing the first failure. */
async function pool<T>(items: T[], task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const results = await Promise.allSettled(
    Array.from({ length: Math.min(CONCURRENCY, items.length) }, async () => {
      while (next < items.length) await task(items[next++]!);
    }),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Copy one hub object into scratch, then compare the copy with the source object if the source still has the mirrored version. */
async function drillOne(dataset: BucketDataset, hub: S3Store, source: S3Store, scratch: string, o: ObjectInfo, tally: Tally, signal: AbortSignal, decrypt?: () => Duplex): Promise<void> {
  const relative = o.key.slice(dataset.target.prefix.length);
  const scratchKey = scratch + relative;
  const head = await hub.head(o.key, { signal });
  if (!head) return void (tally.changedSinceMirror += 1);
  const m = dataset.mirror;
  try {
    if (decrypt && isEncryptedCopy(head.metadata)) {
      // The restore data path of an encrypted mirror: decrypt, check against the record, write plaintext.
      try {
        await copyDecrypted({
          source: { client: hub.client, bucket: hub.bucket, key: o.key, etag: head.etag, size: head.size },
          destination: { client: hub.client, bucket: hub.bucket, key: scratchKey },
          decrypt, multipartThreshold: m.multipartThresholdMiB * MiB, partSize: m.partSizeMiB * MiB, signal,
        });
        tally.decrypted += 1;
      } catch (err) {
        if (!(err instanceof DecryptionError)) throw err;
        tally.undecryptable.push(`${o.key}: ${err.message}`);
        return;
      }
    } else {
      if (decrypt) tally.plaintext.push(o.key);
      // The restore data path: the same copy the mirror made, from the hub this time.
      await copyObject({
        source: { store: hub, key: o.key, etag: head.etag, size: head.size },
        destination: { store: hub, key: scratchKey },
        multipartThreshold: m.multipartThresholdMiB * MiB,
        partSize: m.partSizeMiB * MiB,
        partConcurrency: 2,
        signal,
      });
    }
  } catch (err) {
    if (!goneFromHub(err)) throw err instanceof S3ServiceException ? new Error(`copying ${o.key} into ${scratchKey}: ${describeS3Error(err)}`, { cause: err }) : err;
    return void (tally.changedSinceMirror += 1);
  }
  tally.copied += 1;
  tally.bytes += head.size;
  const outcome = await compare(source, dataset.source.prefix + relative, head.metadata[SOURCE_ETAG_METADATA] ?? head.etag, hub, scratchKey, signal);
  if (outcome === 'changed') tally.changedSinceMirror += 1;
  else {
    tally.compared += 1;
    if (outcome === 'mismatch') tally.mismatches.push(o.key);
  }
}

async function compare(source: S3Store, sourceKey: string, mirroredEtag: string, hub: S3Store, scratchKey: string, signal: AbortSignal): Promise<Outcome> {
  const now = await source.head(sourceKey, { signal });
  if (!now || unquote(now.etag) !== unquote(mirroredEtag)) return 'changed';
  const sourceHash = await source.get(sourceKey, { signal }).then(hashStream).catch((err: unknown) => {
    if (err instanceof ObjectNotFoundError) return undefined;
    throw err;
  });
  if (!sourceHash) return 'changed';
  const restored = await hub.get(scratchKey, { signal }).then(hashStream);
  return restored.sha256 === sourceHash.sha256 ? 'match' : 'mismatch';
}

async function reportCheck(hub: S3Store, key: string, signal: AbortSignal): Promise<Check> {
  const report = (await hub.getJson(key, { signal }).catch((err: unknown) => (err instanceof SyntaxError ? null : Promise.reject(err)))) as
    | { ok?: boolean; failed?: { count?: number }; verification?: { listing?: { missing?: number; sizeMismatch?: number }; sample?: { mismatches?: unknown[] } }; source?: { count?: number } }
    | null
    | undefined;
  if (report === undefined) return { name: 'report', ok: false, detail: `the mirror report ${key} does not exist` };
  if (report === null || typeof report !== 'object') return { name: 'report', ok: false, detail: `the mirror report ${key} is not valid JSON` };
  if (report.ok === true) return { name: 'report', ok: true, detail: `the mirror run says ok (${report.source?.count ?? '?'} source objects)` };
  const l = report.verification?.listing;
  return { name: 'report', ok: false, detail: `the mirror run reported problems: ${report.failed?.count ?? '?'} failed, ${l?.missing ?? '?'} missing, ${l?.sizeMismatch ?? '?'} of another size, ${report.verification?.sample?.mismatches?.length ?? '?'} sample mismatches` };
}

function restoreCheck(manifestSource: Record<string, unknown>, listed: number, sampled: number, tally: Tally, scratch: string): Check {
  const expected = typeof manifestSource.objects === 'number' ? manifestSource.objects : undefined;
  if (listed === 0 && expected) return { name: 'sample restore', ok: false, detail: `the hub lists no mirrored objects, the report counted ${expected} at the source` };
  if (listed === 0) return { name: 'sample restore', ok: true, detail: 'the mirror is empty, as its report says' };
  return { name: 'sample restore', ok: true, detail: `copied ${tally.copied} of ${sampled} sampled objects (${tally.bytes} bytes, of ${listed} listed) into ${scratch}` };
}

function decryptCheck(tally: Tally): Check {
  const failed = tally.undecryptable;
  if (failed.length > 0) {
    const named = failed.slice(0, NAMED).join('; ') + (failed.length > NAMED ? `; … (${failed.length - NAMED} more)` : '');
    return { name: 'decrypt', ok: false, detail: `${failed.length} of ${tally.decrypted + failed.length} sampled hub objects did not decrypt to what the mirror recorded: ${named}` };
  }
  if (tally.plaintext.length > 0) {
    const named = tally.plaintext.slice(0, NAMED).join(', ') + (tally.plaintext.length > NAMED ? ', …' : '');
    return { name: 'decrypt', ok: false, detail: `${tally.plaintext.length} sampled hub objects are stored in plaintext although the dataset is encrypted (run the mirror to re-copy them encrypted): ${named}` };
  }
  return { name: 'decrypt', ok: true, detail: `decrypted ${tally.decrypted} sampled objects with the identity; each matched the sha256 recorded at copy time` };
}

function sha256Check(sampled: number, tally: Tally): Check {
  const { mismatches, compared, changedSinceMirror } = tally;
  if (mismatches.length > 0) {
    const named = mismatches.slice(0, NAMED).join(', ') + (mismatches.length > NAMED ? `, … (${mismatches.length - NAMED} more)` : '');
    return { name: 'sha256', ok: false, detail: `${mismatches.length} of ${compared} restored objects differ from the source: ${named}` };
  }
  if (changedSinceMirror * 2 > sampled) {
    return { name: 'sha256', ok: false, detail: `${changedSinceMirror} of ${sampled} sampled objects changed or vanished at the source since the mirror ran, too many to vouch for the mirror; run the mirror, then drill again` };
  }
  const changed = changedSinceMirror > 0 ? `; ${changedSinceMirror} changed at the source since the mirror, not compared` : '';
  return { name: 'sha256', ok: true, detail: `${compared} restored objects match the source${changed}` };
}

/** Deletes everything under the scratch prefix (a killed earlier attempt's leftovers too), then lists it to prove it empty. */
async function removeScratch(hub: S3Store, scratch: string, log: Logger): Promise<{ check: Check; error?: unknown }> {
  const signal = AbortSignal.timeout(CLEANUP_TIMEOUT_MS);
  try {
    let removed = 0;
    let batch: string[] = [];
    for await (const o of hub.list(scratch, { signal })) {
      batch.push(o.key);
      if (batch.length === 1000) {
        await hub.delete(batch, { signal });
        removed += batch.length;
        batch = [];
      }
    }
    if (batch.length > 0) await hub.delete(batch, { signal });
    removed += batch.length;
    let left = 0;
    for await (const _ of hub.list(scratch, { signal })) left += 1;
    if (left > 0) return { check: { name: 'scratch cleanup', ok: false, detail: `${left} objects are still under ${scratch}` }, error: new Error(`${left} objects left under ${scratch}`) };
    return { check: { name: 'scratch cleanup', ok: true, detail: `removed ${removed} objects; ${scratch} is empty` } };
  } catch (err) {
    log.error({ err: errorMessage(err), scratch }, 'drill cleanup failed');
    return { check: { name: 'scratch cleanup', ok: false, detail: `could not empty ${scratch}: ${errorMessage(err)}` }, error: err };
  }
}
