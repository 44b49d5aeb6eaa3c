import { createHash, randomBytes } from 'node:crypto';
import { CopyObjectCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutBucketPolicyCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { verifyObject } from '../functions/verifyObject.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { Config } from '../lib/config/schema.js';
import { requireDataset } from '../lib/datasets.js';
import { mirrorBucket as mirrorLib, type PlannedAction } from '../lib/mirror/mirror.js';
import { taskPool } from '../lib/mirror/pool.js';
import type { S3Store } from '../lib/targets/s3.js';
import { runFunction } from '../queue/runner.js';
import type { AnyFunction } from '../queue/define.js';
import { createBucket, listKeys, logger, multipartUploads, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, testConfig, testEnv } from './helpers.js';

// Real Ceph RGW on both sides: the source bucket belongs to one user ("the cluster's RGW"), the
// destination to another ("the hub"), as in production.
const MiB = 1024 * 1024;
let source: S3Client;
let hub: S3Client;
let sourceKeys: { accessKeyId: string; secretAccessKey: string };
const buckets: Array<[S3Client, string]> = [];

beforeAll(() => {
  sourceKeys = rgwUser('lifeboat-mirror-source');
  source = s3ClientFor(sourceKeys);
  hub = s3Client();
});

afterAll(async () => {
  for (const [client, bucket] of buckets) await removeBucket(client, bucket);
  source.destroy();
  hub.destroy();
});

async function buckets2() {
  const src = await createBucket(source);
  const dst = await createBucket(hub);
  buckets.push([source, src], [hub, dst]);
  return { src, dst };
}

function config(src: string, dst: string, mirror: Record<string, unknown> = {}, sourceCreds = sourceKeys): Config {
  process.env.TEST_MIRROR_KEY = sourceCreds.accessKeyId;
  process.env.TEST_MIRROR_SECRET = sourceCreds.secretAccessKey;
  return testConfig({
    datasets: [
      {
        id: 'photos',
        kind: 'bucket',
        source: { endpoint: s3Env().endpoint, bucket: src, accessKeyId: '${env:TEST_MIRROR_KEY}', secretAccessKey: '${env:TEST_MIRROR_SECRET}' },
        target: { name: 'hub', bucket: dst, prefix: 'rgw/' },
        mirror: { multipartThresholdMiB: 5, partSizeMiB: 5, sample: 1000, ...mirror },
      },
    ],
  });
}

interface Outcome {
  ok: boolean;
  value?: any;
  error?: Error;
  events: Array<{ event: string; payload: any }>;
}

async function run(cfg: Config, fn: AnyFunction, data: Record<string, unknown> = {}): Promise<Outcome> {
  const deps = openLocal(cfg, logger());
  const events: Outcome['events'] = [];
  try {
    const value = await runFunction(fn, { dataset: 'photos', ...data }, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async (event, payload) => { events.push({ event, payload }); } });
    return { ok: true, value, events };
  } catch (error) {
    return { ok: false, error: error as Error, events };
  } finally {
    await deps.close();
  }
}

const put = (client: S3Client, bucket: string, key: string, body: Buffer | string, extra: Record<string, unknown> = {}) =>
  client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof body === 'string' ? Buffer.from(body) : body, ...extra }));
const sha = async (client: S3Client, bucket: string, key: string) =>
  createHash('sha256').update(Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray())).digest('hex');

const readJson = async (client: S3Client, bucket: string, key: string) =>
  JSON.parse(Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray()).toString());

// Mirrored objects on the hub (Lifeboat's own records are outside the mirror's prefix).
const mirroredKeys = async (dst: string) => (await listKeys(hub, dst, 'rgw/')).map((k) => k.slice('rgw/'.length)).sort();

const deleteFromSource = async (src: string, keys: string[]) => {
  for (const key of keys) await source.send(new DeleteObjectCommand({ Bucket: src, Key: key }));
};

/** Ten objects (obj-00 … obj-09) mirrored once with deletion: delete. */
async function mirroredTen(mirror: Record<string, unknown> = {}) {
  const { src, dst } = await buckets2();
  const keys = Array.from({ length: 10 }, (_, i) => `obj-${String(i).padStart(2, '0')}`);
  for (const key of keys) await put(source, src, key, `content of ${key}`);
  const first = await run(config(src, dst, { deletion: 'delete', ...mirror }), mirrorBucket);
  expect(first.error).toBeUndefined();
  expect(await mirroredKeys(dst)).toEqual(keys);
  return { src, dst, keys };
}

const ODD_KEYS = ['plain.txt', 'with space.txt', 'plus+sign.txt', 'percent%20encoded.txt', 'ünïcødé/ファイル.txt', 'emoji 😀.txt', 'deep/a/b/c/d/e/f/g.txt', 'empty'];

async function seed(src: string): Promise<Buffer> {
  for (const key of ODD_KEYS) await put(source, src, key, key === 'empty' ? '' : `content of ${key}`);
  await put(source, src, 'typed.json', '{"a":1}', { ContentType: 'application/json', Metadata: { owner: 'alice', 'x-note': 'kept' } });
  const big = randomBytes(11 * MiB + 123);
  await put(source, src, 'big.bin', big);
  return big;
}

describe('the copy pool', () => {
  it('holds at most `concurrency` copies and the byte budget, yet runs one copy heavier than the budget alone', async () => {
    const pool = taskPool(4, 100);
    let running = 0;
    let weight = 0;
    const seen: Array<{ running: number; weight: number }> = [];
    const task = (w: number) => async () => {
      running += 1;
      weight += w;
      seen.push({ running, weight });
      await new Promise((r) => setTimeout(r, 5));
      running -= 1;
      weight -= w;
    };
    // Twelve small ones, then three over the budget, then small ones again.
    for (const w of [...Array(12).fill(1), 150, 150, 60, 60, ...Array(8).fill(1)]) await pool.run(task(w), w);
    await pool.drain();
    expect(Math.max(...seen.map((s) => s.running))).toBe(4);
    // Only a task running alone may exceed the budget.
    expect(seen.filter((s) => s.weight > 100).every((s) => s.running === 1)).toBe(true);
    expect(seen.filter((s) => s.weight > 100)).toHaveLength(2);
    expect(seen).toHaveLength(24);
  });
});

describe('mirrorBucket on real Ceph RGW (two users)', () => {
  it('mirrors everything the first time, odd keys, empty objects, metadata and multipart included', async () => {
    const { src, dst } = await buckets2();
    const big = await seed(src);
    const first = await run(config(src, dst), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(first.error).toBeUndefined();
    expect(first.value).toMatchObject({ copied: { count: 10, bytes: expect.any(Number) }, skipped: { count: 0 }, source: { count: 10 } });
    const keys = await listKeys(hub, dst, 'rgw/');
    expect(keys.sort()).toEqual([...ODD_KEYS, 'typed.json', 'big.bin'].map((k) => `rgw/${k}`).sort());
    for (const key of [...ODD_KEYS, 'big.bin']) expect(await sha(hub, dst, `rgw/${key}`), key).toBe(await sha(source, src, key));
    const typed = await hub.send(new HeadObjectCommand({ Bucket: dst, Key: 'rgw/typed.json' }));
    expect(typed.ContentType).toBe('application/json');
    expect(typed.Metadata).toMatchObject({ owner: 'alice', 'x-note': 'kept', 'lifeboat-source-etag': expect.any(String) });
    expect((await hub.send(new HeadObjectCommand({ Bucket: dst, Key: 'rgw/big.bin' }))).ETag).toMatch(/-3"$/); // 3 parts of 5 MiB
    expect(big.length).toBe(11 * MiB + 123);
    expect(await multipartUploads(hub, dst)).toEqual([]);

    // The report sits under _lifeboat/mirrors/ at the bucket root, outside the mirror, fans out to verifyObject, and verifies.
    const uploaded = first.events.find((e) => e.event === 'backup.uploaded')!;
    expect(uploaded.payload).toMatchObject({ key: '_lifeboat/mirrors/photos/20261126T040000Z/report.json', kind: 'bucket' });
    const report = JSON.parse(Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: dst, Key: uploaded.payload.key }))).Body!.transformToByteArray()).toString());
    expect(report.verification.listing).toMatchObject({ ok: true, missing: 0, sizeMismatch: 0, source: { count: 10 }, destination: { count: 10 } });
    expect(report.verification.sample).toMatchObject({ checked: 10, mismatches: [] });
    const verified = await run(config(src, dst), verifyObject, { key: uploaded.payload.key });
    expect(verified.value).toMatchObject({ ok: true });
    expect(verified.value.checks.map((c: { name: string }) => c.name)).toEqual(['manifest', 'size', 'sha256', 'mirror counts', 'mirror sample', 'mirror failures']);

    // A second run with nothing changed copies nothing, and needs no HEAD except for the multipart copy.
    const second = await run(config(src, dst), mirrorBucket, { tick: '2026-11-27T04:00:00Z' });
    expect(second.value).toMatchObject({ copied: { count: 0, bytes: 0 }, skipped: { count: 10 }, heads: 1 });
  });

  it('picks up changed, added and deleted objects; keep leaves extraneous objects, delete removes them', async () => {
    const { src, dst } = await buckets2();
    await seed(src);
    await run(config(src, dst), mirrorBucket);
    await put(source, src, 'plain.txt', 'CONTENT OF PLAIN.TXT'); // same size, new content
    await put(source, src, 'typed.json', '{"a":22}'); // new size
    await put(source, src, 'added.txt', 'new');
    await source.send(new DeleteObjectCommand({ Bucket: src, Key: 'with space.txt' }));

    const keep = await run(config(src, dst), mirrorBucket);
    expect(keep.value).toMatchObject({ copied: { count: 3 }, deleted: { count: 0 } });
    expect(await sha(hub, dst, 'rgw/plain.txt')).toBe(await sha(source, src, 'plain.txt'));
    expect(await listKeys(hub, dst, 'rgw/with space.txt')).toEqual(['rgw/with space.txt']);

    const plan = await run(config(src, dst, { deletion: 'delete' }), mirrorBucket, { dryRun: true });
    expect(plan.value).toMatchObject({ dryRun: true, copy: { count: 0 }, delete: { count: 1 }, plan: [{ action: 'delete', key: 'with space.txt', reason: 'extraneous', size: expect.any(Number) }] });
    expect(await listKeys(hub, dst, 'rgw/with space.txt')).toEqual(['rgw/with space.txt']); // a plan changes nothing

    const del = await run(config(src, dst, { deletion: 'delete' }), mirrorBucket);
    expect(del.value).toMatchObject({ copied: { count: 0 }, deleted: { count: 1 } });
    expect(await listKeys(hub, dst, 'rgw/with space.txt')).toEqual([]);
  });

  it('a dry run lists what it would copy and changes nothing', async () => {
    const { src, dst } = await buckets2();
    await put(source, src, 'a.txt', 'a');
    await put(source, src, 'b.txt', 'bb');
    const plan = await run(config(src, dst), mirrorBucket, { dryRun: true });
    expect(plan.value.plan).toEqual([
      { action: 'copy', key: 'a.txt', size: 1, reason: 'new' },
      { action: 'copy', key: 'b.txt', size: 2, reason: 'new' },
    ]);
    expect(await listKeys(hub, dst)).toEqual([]);
  });

  it('catches a destination object altered behind its back through the sha256 sample', async () => {
    const { src, dst } = await buckets2();
    await put(source, src, 'doc.txt', 'the real content');
    await run(config(src, dst), mirrorBucket);
    const head = await hub.send(new HeadObjectCommand({ Bucket: dst, Key: 'rgw/doc.txt' }));
    // Same size, same recorded source ETag, different bytes: only reading the content can tell.
    await put(hub, dst, 'rgw/doc.txt', 'the fake content', { Metadata: head.Metadata });
    const outcome = await run(config(src, dst), mirrorBucket);
    expect(outcome.error).toMatchObject({ name: 'PermanentError', message: expect.stringContaining('1 sampled objects differ between source and destination (sample mismatch: doc.txt)') });
    expect(outcome.events.map((e) => e.event)).toEqual(['backup.corrupt']);
  });

  it('one object that cannot be written is counted and reported, the rest are copied, and the job fails', async () => {
    const { src, dst } = await buckets2();
    await put(source, src, 'ok-1.txt', 'one');
    await put(source, src, 'locked/secret.txt', 'nope');
    await put(source, src, 'ok-2.txt', 'two');
    await hub.send(new PutBucketPolicyCommand({
      Bucket: dst,
      Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Deny', Principal: '*', Action: 's3:PutObject', Resource: `arn:aws:s3:::${dst}/rgw/locked/*` }] }),
    }));
    const outcome = await run(config(src, dst), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(outcome.error?.message).toMatch(/dataset photos: 1 objects failed/);
    expect((await listKeys(hub, dst, 'rgw/ok-')).sort()).toEqual(['rgw/ok-1.txt', 'rgw/ok-2.txt']);
    const report = JSON.parse(Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: dst, Key: '_lifeboat/mirrors/photos/20261126T040000Z/report.json' }))).Body!.transformToByteArray()).toString());
    expect(report.failed).toMatchObject({ count: 1, first: [{ key: 'locked/secret.txt', error: expect.stringMatching(/HTTP 403/) }] });
    expect(report.ok).toBe(false);
  });

  it('wrong credentials or a missing bucket are permanent errors naming the dataset and the side', async () => {
    const { src, dst } = await buckets2();
    const wrong = await run(config(src, dst, {}, { accessKeyId: sourceKeys.accessKeyId, secretAccessKey: 'wrong-secret' }), mirrorBucket);
    expect(wrong.error).toMatchObject({ name: 'PermanentError', message: expect.stringMatching(/^dataset photos source \(http:\/\/127\.0\.0\.1:\d+\): access to bucket lb-test-.* denied/) });
    const missing = await run(config(src, 'lb-no-such-bucket'), mirrorBucket);
    expect(missing.error).toMatchObject({ name: 'PermanentError', message: 'dataset photos destination (target hub): bucket lb-no-such-bucket does not exist' });
  });
});

describe('mirrorBucket deletion guard', () => {
  it('the delete guard keeps the hub copy when the source is emptied', async () => {
    const { src, dst, keys } = await mirroredTen();
    await deleteFromSource(src, keys);
    // Even a limit of 100% does not let an empty source empty the hub.
    const outcome = await run(config(src, dst, { deletion: 'delete', maxDeletePercent: 100 }), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(outcome.error).toMatchObject({
      name: 'PermanentError',
      message: expect.stringMatching(/^dataset photos: the source lists no objects but the destination has 10; deleted nothing\. Check the source bucket \(lb-test-.*\); to delete anyway run it inline with --force-delete; see _lifeboat\/mirrors\/photos\/20261126T040000Z\/report\.json$/),
    });
    expect(await mirroredKeys(dst)).toEqual(keys);
    expect(outcome.events.map((e) => e.event)).toEqual([]);
    const report = await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/report.json');
    expect(report).toMatchObject({ ok: false, deleted: { count: 0 }, deletionGuard: { tripped: true, forced: false, reason: 'source-empty', wouldDelete: 10, destination: 10, percent: 100, limitPercent: 100 } });
    expect(await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/manifest.json')).toMatchObject({ dataset: 'photos', source: { objects: 0 } });
  });

  it('deleting more than maxDeletePercent deletes nothing and fails, unless forceDelete', async () => {
    const { src, dst, keys } = await mirroredTen();
    const gone = ['obj-02', 'obj-05', 'obj-07'];
    await deleteFromSource(src, gone);
    await put(source, src, 'obj-10', 'added'); // copies are additive: they still happen when the guard trips
    const cfg = () => config(src, dst, { deletion: 'delete', maxDeletePercent: 20 });

    const stopped = await run(cfg(), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(stopped.error).toMatchObject({
      name: 'PermanentError',
      message: expect.stringContaining('dataset photos: the mirror would delete 3 of 10 destination objects (30%), above mirror.maxDeletePercent 20; deleted nothing.'),
    });
    expect(await mirroredKeys(dst)).toEqual([...keys, 'obj-10']);
    expect(stopped.events).toEqual([]);
    expect(await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/report.json')).toMatchObject({
      ok: false, copied: { count: 1 }, deleted: { count: 0 }, deletionGuard: { tripped: true, forced: false, reason: 'over-limit', wouldDelete: 3, destination: 10, percent: 30, limitPercent: 20 },
    });

    const forced = await run(cfg(), mirrorBucket, { tick: '2026-11-27T04:00:00Z', forceDelete: true });
    expect(forced.error).toBeUndefined();
    expect(forced.value).toMatchObject({ deleted: { count: 3 }, copied: { count: 0 } });
    expect(await mirroredKeys(dst)).toEqual([...keys.filter((k) => !gone.includes(k)), 'obj-10']);
    expect(forced.events.map((e) => e.event)).toEqual(['backup.uploaded']);
    expect(await readJson(hub, dst, '_lifeboat/mirrors/photos/20261127T040000Z/report.json')).toMatchObject({
      ok: true, deletionGuard: { tripped: true, forced: true, wouldDelete: 3, destination: 11 },
    });
  });

  it('deleting less than maxDeletePercent (default 20) goes ahead', async () => {
    const { src, dst, keys } = await mirroredTen();
    await deleteFromSource(src, ['obj-04']);
    const outcome = await run(config(src, dst, { deletion: 'delete' }), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(outcome.error).toBeUndefined();
    expect(outcome.value).toMatchObject({ deleted: { count: 1 } });
    expect(await mirroredKeys(dst)).toEqual(keys.filter((k) => k !== 'obj-04'));
    expect(await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/report.json')).toMatchObject({
      ok: true, deletionGuard: { tripped: false, wouldDelete: 1, destination: 10, percent: 10, limitPercent: 20 },
    });
  });

  it('deletes the extraneous objects beyond the in-memory bound in a second pass, never more than approved', async () => {
    const { src, dst, keys } = await mirroredTen();
    const gone = ['obj-01', 'obj-02', 'obj-03', 'obj-05', 'obj-06', 'obj-08', 'obj-09'];
    await deleteFromSource(src, gone);
    const cfg = config(src, dst, { deletion: 'delete' });
    const dataset = requireDataset(cfg, 'photos', 'bucket');
    const deps = openLocal(cfg, logger());
    try {
      const destination = deps.storeFor(dataset) as S3Store;
      // Objects that turn up on the hub after the guard approved 7 deletes must not be deleted with them.
      const deleteCalls: string[][] = [];
      const deleteObjects = destination.delete.bind(destination);
      destination.delete = async (batch, options) => {
        deleteCalls.push(batch);
        await deleteObjects(batch, options);
        if (deleteCalls.length === 1) for (const late of ['obj-10-late', 'obj-11-late']) await put(hub, dst, `rgw/${late}`, 'late');
      };
      const actions: PlannedAction[] = [];
      const result = await mirrorLib({ store: deps.bucketSource(dataset), prefix: '' }, { store: destination, prefix: 'rgw/' }, {
        deletion: 'delete', maxDeletePercent: 100, heldDeleteKeys: 3, multipartThreshold: 5 * MiB, partSize: 5 * MiB, concurrency: 4, sample: 0, dryRun: false, log: logger(),
        onAction: (a) => actions.push(a),
      });
      expect(deleteCalls).toEqual([['rgw/obj-01', 'rgw/obj-02', 'rgw/obj-03'], ['rgw/obj-05', 'rgw/obj-06', 'rgw/obj-08', 'rgw/obj-09']]);
      expect(actions.map((a) => a.key)).toEqual(gone);
      expect(result.deleted.count).toBe(7);
      expect(result.deletionGuard).toMatchObject({ tripped: false, wouldDelete: 7, destination: 10 });
      expect(await mirroredKeys(dst)).toEqual([...keys.filter((k) => !gone.includes(k)), 'obj-10-late', 'obj-11-late']);
    } finally {
      await deps.close();
    }
  });

  it('a dry run reports that the guard would trip and deletes nothing', async () => {
    const { src, dst, keys } = await mirroredTen();
    await deleteFromSource(src, ['obj-00', 'obj-01', 'obj-02']);
    const plan = await run(config(src, dst, { deletion: 'delete' }), mirrorBucket, { dryRun: true });
    expect(plan.error).toBeUndefined();
    expect(plan.value).toMatchObject({
      dryRun: true, delete: { count: 3 },
      deletionGuard: { tripped: true, forced: false, reason: 'over-limit', wouldDelete: 3, destination: 10, percent: 30, limitPercent: 20 },
    });
    expect(plan.value.plan.map((a: PlannedAction) => `${a.action} ${a.key}`)).toEqual(['delete obj-00', 'delete obj-01', 'delete obj-02']);
    expect(await mirroredKeys(dst)).toEqual(keys);
    expect(await listKeys(hub, dst, '_lifeboat/')).toHaveLength(2); // the first run's report and manifest only
  });
});

describe('mirrorBucket keeps what a restore needs (real Ceph RGW)', () => {
  const HEADERS = {
    ContentType: 'text/html; charset=utf-8',
    CacheControl: 'public, max-age=31536000, immutable',
    ContentDisposition: 'attachment; filename="index.html"',
    ContentEncoding: 'gzip',
    ContentLanguage: 'de-CH',
    Expires: new Date('2031-02-03T04:05:06Z'),
    Metadata: { owner: 'alice', 'lifeboat-source-etag': 'theirs', 'lifeboat-lifeboat-x': 'nested' },
  };
  const headersOn = async (client: S3Client, bucket: string, key: string) => {
    const h = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { ContentType: h.ContentType, CacheControl: h.CacheControl, ContentDisposition: h.ContentDisposition, ContentEncoding: h.ContentEncoding, ContentLanguage: h.ContentLanguage, Expires: h.Expires, Metadata: h.Metadata };
  };

  it('keeps Cache-Control, Content-Disposition, -Encoding, -Language, Expires and user metadata, single-part and multipart, and never overwrites the source\'s own lifeboat-* metadata', async () => {
    const { src, dst } = await buckets2();
    await put(source, src, 'site/index.html.gz', 'gzip bytes', HEADERS);
    await put(source, src, 'site/big.bin', randomBytes(6 * MiB), HEADERS);
    const first = await run(config(src, dst), mirrorBucket);
    expect(first.error).toBeUndefined();
    for (const key of ['site/index.html.gz', 'site/big.bin']) {
      const sourceEtag = (await source.send(new HeadObjectCommand({ Bucket: src, Key: key }))).ETag;
      const mirrored = await headersOn(hub, dst, `rgw/${key}`);
      expect(mirrored, key).toEqual({
        ...HEADERS,
        // The source's own "lifeboat-*" keys get one more "lifeboat-" in front; Lifeboat's records sit beside them.
        Metadata: { owner: 'alice', 'lifeboat-lifeboat-source-etag': 'theirs', 'lifeboat-lifeboat-lifeboat-x': 'nested', 'lifeboat-source-etag': sourceEtag, 'lifeboat-source-headers': expect.stringMatching(/^[0-9a-f]{32}$/) },
      });
    }
  });

  it('a metadata-only change at the source (CopyObject REPLACE: same size and ETag) reaches the hub, and the run after it needs no HEAD', async () => {
    const { src, dst } = await buckets2();
    await put(source, src, 'page.html', '<html>', { ContentType: 'text/html', Metadata: { rev: '1' } });
    await put(source, src, 'other.txt', 'unchanged');
    expect((await run(config(src, dst), mirrorBucket)).error).toBeUndefined();
    await new Promise((r) => setTimeout(r, 1100)); // RGW's Last-Modified has one-second resolution
    await source.send(new CopyObjectCommand({ Bucket: src, Key: 'page.html', CopySource: `${src}/page.html`, MetadataDirective: 'REPLACE', ContentType: 'text/html', CacheControl: 'no-cache', Metadata: { rev: '2' } }));
    const before = await source.send(new HeadObjectCommand({ Bucket: src, Key: 'page.html' }));
    expect(before.ETag).toBe((await hub.send(new HeadObjectCommand({ Bucket: dst, Key: 'rgw/page.html' }))).ETag); // the listing cannot tell

    const second = await run(config(src, dst, { sample: 0 }), mirrorBucket);
    expect(second.value).toMatchObject({ copied: { count: 1 }, skipped: { count: 1 }, heads: 2 });
    expect(await headersOn(hub, dst, 'rgw/page.html')).toMatchObject({ CacheControl: 'no-cache', Metadata: { rev: '2' } });
    const third = await run(config(src, dst, { sample: 0 }), mirrorBucket);
    expect(third.value).toMatchObject({ copied: { count: 0 }, skipped: { count: 2 }, heads: 0 });
  });

  it('keys of whitespace or control characters only, and XML specials, are listed url-encoded and copied byte for byte', async () => {
    const { src, dst } = await buckets2();
    const awkward = [' ', '\t', '  \t ', 'x\u0001y', 'line\nbreak', 'cr\r', '&<>"\'', 'a+b c%2B', '\u007f'];
    for (const key of awkward) await put(source, src, key, `body of ${JSON.stringify(key)}`);
    const outcome = await run(config(src, dst), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(outcome.error).toBeUndefined();
    expect(outcome.value).toMatchObject({ copied: { count: awkward.length } });
    expect((await mirroredKeys(dst)).sort()).toEqual([...awkward].sort());
    for (const key of awkward) expect(await sha(hub, dst, `rgw/${key}`), JSON.stringify(key)).toBe(await sha(source, src, key));
    const report = await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/report.json');
    expect(report).toMatchObject({ ok: true, verification: { listing: { ok: true, missing: 0 }, sample: { checked: awkward.length, mismatches: [] } } });

    // Deleted at the source, deleted from the hub: DeleteObjects' XML body cannot carry them either.
    await deleteFromSource(src, [' ', 'x\u0001y', 'cr\r']);
    const pruned = await run(config(src, dst, { deletion: 'delete', maxDeletePercent: 50 }), mirrorBucket, { tick: '2026-11-27T04:00:00Z' });
    expect(pruned.error).toBeUndefined();
    expect(pruned.value).toMatchObject({ deleted: { count: 3 }, copied: { count: 0 } });
    expect((await mirroredKeys(dst)).sort()).toEqual(awkward.filter((k) => ![' ', 'x\u0001y', 'cr\r'].includes(k)).sort());
  });

  it('a source that holds _lifeboat/ keys of its own (it is itself a mirror) is mirrored like any other, and never touches Lifeboat\'s reports', async () => {
    const { src, dst } = await buckets2();
    await put(source, src, '_lifeboat/mirrors/photos/20261126T040000Z/report.json', '{"not":"ours"}');
    await put(source, src, '_lifeboat/report.json', '{"also":"theirs"}');
    await put(source, src, 'photo.jpg', 'jpeg');
    const first = await run(config(src, dst), mirrorBucket, { tick: '2026-11-26T04:00:00Z' });
    expect(first.error).toBeUndefined();
    expect(await mirroredKeys(dst)).toEqual(['_lifeboat/mirrors/photos/20261126T040000Z/report.json', '_lifeboat/report.json', 'photo.jpg']);
    const second = await run(config(src, dst), mirrorBucket, { tick: '2026-11-27T04:00:00Z' });
    expect(second.value).toMatchObject({ copied: { count: 0 }, skipped: { count: 3 } });
    // Lifeboat's own report is its own, and still matches its manifest.
    const report = await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/report.json');
    expect(report).toMatchObject({ format: 'lifeboat.mirror-report/v1', ok: true });
    const manifest = await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/manifest.json');
    expect(manifest.artifact.sha256).toBe(await sha(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/report.json'));
  });
});

// A source that is down is retried (not permanent).
describe('mirrorBucket with an unreachable source', () => {
  it('fails with a retryable error', async () => {
    const cfg = testConfig({ datasets: [{ id: 'photos', kind: 'bucket', source: { endpoint: 'http://127.0.0.1:1', bucket: 'whatever', accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' }, target: { name: 'hub', bucket: 'anything', prefix: 'photos/' } }] });
    expect(testEnv().TEST_S3_ACCESS_KEY).toBeDefined();
    const outcome = await run(cfg, mirrorBucket);
    expect(outcome.ok).toBe(false);
    expect(outcome.error?.name).not.toBe('PermanentError');
  });
});
