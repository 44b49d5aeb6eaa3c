import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutBucketVersioningCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { parseConfig } from '../lib/config/load.js';
import { openLocal } from '../lib/plumbing/app.js';
import { runFunction } from '../queue/runner.js';
import { createBucket, listKeys, logger, removeBucket, rgwUser, runCli, runCliOnTerminal, s3Client, s3ClientFor, s3Env, testEnv } from './helpers.js';

// Real Ceph RGW: the cluster's bucket belongs to one user, the hub to another. The restore runs as the
// operator would run it: the built CLI, with only the config file and the hub.
const MiB = 1024 * 1024;
let source: S3Client;
let hub: S3Client;
let sourceKeys: { accessKeyId: string; secretAccessKey: string };
let dir: string;
const buckets: Array<[S3Client, string]> = [];

beforeAll(async () => {
  sourceKeys = rgwUser('lifeboat-restore-source');
  source = s3ClientFor(sourceKeys);
  hub = s3Client();
  dir = await mkdtemp(join(tmpdir(), 'lb-restore-bucket-'));
});

afterAll(async () => {
  for (const [client, bucket] of buckets) await removeBucket(client, bucket);
  source.destroy();
  hub.destroy();
});

const env = () => ({ ...testEnv(), TEST_SRC_KEY: sourceKeys.accessKeyId, TEST_SRC_SECRET: sourceKeys.secretAccessKey, LOG_LEVEL: 'error' });

/** The config as a file (JSON is YAML) for the CLI, and parsed for the mirror run. */
async function setup(mirror: Record<string, unknown> = {}) {
  const src = await createBucket(source);
  const dst = await createBucket(hub);
  buckets.push([source, src], [hub, dst]);
  const raw = {
    redis: { url: 'redis://127.0.0.1:1' },
    targets: { hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
    datasets: [{
      id: 'site', kind: 'bucket',
      source: { endpoint: s3Env().endpoint, bucket: src, accessKeyId: '${env:TEST_SRC_KEY}', secretAccessKey: '${env:TEST_SRC_SECRET}' },
      target: { name: 'hub', bucket: dst, prefix: 'site/' },
      mirror: { multipartThresholdMiB: 5, partSizeMiB: 5, sample: 1000, ...mirror },
    }],
  };
  const file = join(dir, `${src}.yaml`);
  await writeFile(file, JSON.stringify(raw));
  const mirrorRun = async (tick: string) => {
    const deps = openLocal(parseConfig(raw, file, { env: env() }), logger());
    try {
      return await runFunction(mirrorBucket, { dataset: 'site', tick }, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} });
    } finally {
      await deps.close();
    }
  };
  const cli = (args: string[]) => runCli(['restore', 'site', ...args, '-c', file], { env: env() });
  return { src, dst, mirrorRun, cli };
}

const put = (client: S3Client, bucket: string, key: string, body: Buffer | string, extra: Record<string, unknown> = {}) =>
  client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof body === 'string' ? Buffer.from(body) : body, ...extra }));
const sha = async (client: S3Client, bucket: string, key: string) =>
  createHash('sha256').update(Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray())).digest('hex');
const headers = async (client: S3Client, bucket: string, key: string) => {
  const h = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  return { ContentType: h.ContentType, CacheControl: h.CacheControl, ContentDisposition: h.ContentDisposition, ContentEncoding: h.ContentEncoding, ContentLanguage: h.ContentLanguage, Expires: h.Expires, Metadata: h.Metadata };
};

const WEB = {
  ContentType: 'text/css',
  CacheControl: 'public, max-age=600',
  ContentDisposition: 'inline; filename="site.css"',
  ContentEncoding: 'gzip',
  ContentLanguage: 'fr',
  Expires: new Date('2030-05-06T07:08:09Z'),
  Metadata: { build: '42', 'lifeboat-source-etag': 'the source is itself a mirror' },
};
const AWKWARD = [' ', '\t', 'x\u0001y', 'cr\r', '&<>"\'', 'a+b c%2B', 'ünï/ファイル 😀.txt'];

describe('lifeboat restore <bucket-dataset> on real Ceph RGW', () => {
  it('restores the mirror into a new bucket on a configured target: every key, byte and header as at the source', async () => {
    const { src, mirrorRun, cli } = await setup();
    await put(source, src, 'css/site.css.gz', 'gzipped css', WEB);
    await put(source, src, 'big/video.bin', randomBytes(12 * MiB + 7), WEB);
    for (const key of AWKWARD) await put(source, src, key, `body of ${JSON.stringify(key)}`);
    await mirrorRun('2026-11-26T04:00:00Z');

    const target = `lb-test-restored-${Date.now().toString(36)}`;
    buckets.push([hub, target]);
    const keysToCome = 2 + AWKWARD.length;
    const plan = await cli(['--to-target', 'hub', '--to-bucket', target, '--dry-run', '--json']);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stderr).toContain(`would create bucket ${target}`);
    expect(JSON.parse(plan.stdout)).toMatchObject({ dryRun: true, copied: { count: keysToCome }, to: { createdBucket: true } });
    await expect(listKeys(hub, target)).rejects.toMatchObject({ name: 'NoSuchBucket' }); // a dry run creates nothing

    const run = await cli(['--to-target', 'hub', '--to-bucket', target, '--json']);
    expect(run.stderr).toContain(`created bucket ${target}`);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    const keys = ['css/site.css.gz', 'big/video.bin', ...AWKWARD];
    expect(result).toMatchObject({
      ok: true, dataset: 'site', backup: '20261126T040000Z', to: { target: 'hub', bucket: target, prefix: '', createdBucket: true },
      copied: { count: keys.length }, unchanged: { count: 0 }, keptNewer: { count: 0 }, failed: { count: 0 },
      expected: { count: keys.length }, verification: { listing: { ok: true, missing: 0, sizeMismatch: 0 }, sample: { checked: keys.length, mismatches: [] } },
    });
    expect((await listKeys(hub, target)).sort()).toEqual([...keys].sort());
    for (const key of keys) expect(await sha(hub, target, key), JSON.stringify(key)).toBe(await sha(source, src, key));
    // The headers as the source had them: Lifeboat's records gone, the source's own lifeboat-* key back.
    for (const key of ['css/site.css.gz', 'big/video.bin']) expect(await headers(hub, target, key), key).toEqual(WEB);

    // Run again: everything is already there, nothing is copied.
    const again = await cli(['--to-target', 'hub', '--to-bucket', target, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ copied: { count: 0 }, unchanged: { count: keys.length }, keptNewer: { count: 0 } });
  });

  it('back to the original bucket: restores what was lost, never overwrites a newer object without --overwrite', async () => {
    const { src, mirrorRun, cli } = await setup();
    for (const n of [1, 2, 3, 4]) await put(source, src, `docs/${n}.txt`, `version 1 of ${n}`);
    await mirrorRun('2026-11-26T04:00:00Z');
    await source.send(new DeleteObjectCommand({ Bucket: src, Key: 'docs/1.txt' }));
    await source.send(new DeleteObjectCommand({ Bucket: src, Key: 'docs/2.txt' }));
    await new Promise((r) => setTimeout(r, 1100)); // Last-Modified has one-second resolution
    await put(source, src, 'docs/3.txt', 'version 2 of 3, written after the mirror');
    await put(source, src, 'docs/only-here.txt', 'not in the mirror');

    const plan = await cli(['--to-source', '--dry-run', '--json']);
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout)).toMatchObject({ dryRun: true, copied: { count: 2 }, unchanged: { count: 1 }, keptNewer: { count: 1, first: ['docs/3.txt'] }, untouched: { count: 1 } });
    expect(await listKeys(source, src, 'docs/')).toHaveLength(3); // a dry run writes nothing

    const run = await cli(['--to-source']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/copied\s+2\s/);
    expect(run.stdout).toContain('kept 1 newer destination objects (first: docs/3.txt); --overwrite replaces them');
    expect(await sha(source, src, 'docs/1.txt')).toBe(createHash('sha256').update('version 1 of 1').digest('hex'));
    expect(await sha(source, src, 'docs/3.txt')).toBe(createHash('sha256').update('version 2 of 3, written after the mirror').digest('hex'));
    expect(await listKeys(source, src, 'docs/only-here.txt')).toEqual(['docs/only-here.txt']); // a restore never deletes

    const forced = await cli(['--to-source', '--overwrite', '--prefix', 'docs/', '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ copied: { count: 1 }, unchanged: { count: 3 } });
    expect(await sha(source, src, 'docs/3.txt')).toBe(createHash('sha256').update('version 1 of 3').digest('hex'));
  });

  it('undoes a bad deletion run from a versioned hub with --at (or --backup of the report before it)', async () => {
    const { src, dst, mirrorRun, cli } = await setup({ deletion: 'delete', maxDeletePercent: 100 });
    await hub.send(new PutBucketVersioningCommand({ Bucket: dst, VersioningConfiguration: { Status: 'Enabled' } }));
    for (const n of [1, 2, 3]) await put(source, src, `photo-${n}.jpg`, `jpeg ${n}`);
    await put(source, src, 'photo-4.jpg', 'jpeg 4, first');
    await mirrorRun('2026-11-26T04:00:00Z');
    await new Promise((r) => setTimeout(r, 1100));
    const before = new Date();
    await new Promise((r) => setTimeout(r, 1100));
    // The bad day: two photos wiped at the source, one overwritten, and the mirror follows.
    await source.send(new DeleteObjectCommand({ Bucket: src, Key: 'photo-1.jpg' }));
    await source.send(new DeleteObjectCommand({ Bucket: src, Key: 'photo-2.jpg' }));
    await put(source, src, 'photo-4.jpg', 'jpeg 4, overwritten');
    await mirrorRun('2026-11-27T04:00:00Z');
    expect(await listKeys(hub, dst, 'site/')).toEqual(['site/photo-3.jpg', 'site/photo-4.jpg']);

    const into = `lb-test-undo-${Date.now().toString(36)}`;
    buckets.push([hub, into]);
    const run = await cli(['--at', before.toISOString(), '--to-target', 'hub', '--to-bucket', into, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: true, at: before.toISOString(), copied: { count: 4 } });
    expect(await listKeys(hub, into)).toEqual(['photo-1.jpg', 'photo-2.jpg', 'photo-3.jpg', 'photo-4.jpg']);
    expect(await sha(hub, into, 'photo-4.jpg')).toBe(createHash('sha256').update('jpeg 4, first').digest('hex'));

    const byReport = `lb-test-undo2-${Date.now().toString(36)}`;
    buckets.push([hub, byReport]);
    const older = await cli(['--backup', '20261126T040000Z', '--to-target', 'hub', '--to-bucket', byReport, '--json']);
    expect(older.code, older.stderr).toBe(0);
    expect(await listKeys(hub, byReport)).toEqual(['photo-1.jpg', 'photo-2.jpg', 'photo-3.jpg', 'photo-4.jpg']);
  });

  it('refuses a hub copy whose bytes changed after the mirror wrote it, restores the rest, and exits 1 naming it', async () => {
    const { src, dst, mirrorRun, cli } = await setup();
    for (const name of ['a', 'b', 'c']) await put(source, src, `${name}.txt`, `content ${name}`);
    await mirrorRun('2026-11-26T04:00:00Z');
    const head = await hub.send(new HeadObjectCommand({ Bucket: dst, Key: 'site/b.txt' }));
    await put(hub, dst, 'site/b.txt', 'CONTENT B', { Metadata: head.Metadata }); // same size, recorded source ETag kept
    const into = `lb-test-refused-${Date.now().toString(36)}`;
    buckets.push([hub, into]);
    const run = await cli(['--to-target', 'hub', '--to-bucket', into, '--json']);
    expect(run.code).toBe(1);
    const result = JSON.parse(run.stdout);
    expect(result).toMatchObject({ ok: false, copied: { count: 2 }, failed: { count: 1, first: [{ key: 'b.txt', error: expect.stringContaining("the hub's copy changed after the mirror wrote it") }] }, verification: { listing: { ok: false, missing: 1 } } });
    expect(await listKeys(hub, into)).toEqual(['a.txt', 'c.txt']);
  });

  it('on a terminal the restore shows bytes done, the total, percent, objects and ETA', async () => {
    const { src, mirrorRun } = await setup();
    for (let i = 0; i < 6; i += 1) await put(source, src, `t/${i}.bin`, randomBytes(64 * 1024));
    await mirrorRun('2026-11-26T04:00:00Z');
    const file = join(dir, `${src}.yaml`);
    const into = `lb-test-tty-${Date.now().toString(36)}`;
    buckets.push([hub, into]);
    const run = await runCliOnTerminal(['restore', 'site', '--to-target', 'hub', '--to-bucket', into, '-c', file], { env: env() });
    expect(run.code, run.screen).toBe(0);
    expect(run.screen).toMatch(/restoring [\d.]+ (B|KiB|MiB) of 384\.0 KiB \(\d+%\), \d of 6 objects {2}[\d.]+ (B|KiB|MiB)\/s {2}ETA \d+ s/);
  });

  it('lifeboat drill <bucket-dataset> restores a sample into a scratch prefix, compares it with the source and prints the checks', async () => {
    const { src, dst, mirrorRun } = await setup({ sample: 5 });
    for (let i = 0; i < 12; i += 1) await put(source, src, `f/${i}.txt`, `file ${i}`);
    await mirrorRun('2026-11-26T04:00:00Z');
    const file = join(dir, `${src}.yaml`);
    const run = await runCli(['drill', 'site', '-c', file], { env: env() });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^sha256\s+ok\s+/m);
    expect(run.stdout).toMatch(/^scratch cleanup\s+ok\s+/m);
    expect(run.stdout).toMatch(/drill of site backup 20261126T040000Z: passed/);
    expect(await listKeys(hub, dst, '_lifeboat/drill-scratch/')).toEqual([]);
    const json = await runCli(['drill', 'site', '--json', '-c', file], { env: env() });
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, dataset: 'site', backup: '20261126T040000Z', key: '_lifeboat/mirrors/site/20261126T040000Z/report.json' });
  });

  it('without versioning on the hub, --at fails and says why; bad flags exit 2 before anything runs', async () => {
    const { src, dst, mirrorRun, cli } = await setup();
    await put(source, src, 'a.txt', 'a');
    await mirrorRun('2026-11-26T04:00:00Z');
    const at = await cli(['--at', '2026-11-26T05:00:00Z', '--to-target', 'hub', '--to-bucket', 'lb-test-never-made']);
    expect(at.code).toBe(1);
    expect(at.stderr).toMatch(/is not versioned, so it holds only the mirror's current state/);

    const cases: Array<[string[], RegExp]> = [
      [['--to-bucket', 'x-bucket'], /needs exactly one of --to-target <name> \(with --to-bucket\) or --to-source/],
      [['--to-target', 'nas', '--to-bucket', 'x-bucket'], /--to-target: unknown target "nas" \(known: hub\)/],
      [['--to-target', 'hub'], /--to-target needs --to-bucket <bucket>/],
      [['--to', 'postgres://localhost/postgres'], /is a bucket dataset: restore it into a bucket/],
      [['--to-source', '--to-prefix', 'no-slash'], /--to-prefix: must be empty or end with '\/'/],
      [['--to-source', '--at', 'yesterday'], /option '--at <iso-time>' argument 'yesterday' is invalid/],
      [['--to-source', '--concurrency', '0'], /option '--concurrency <n>' argument '0' is invalid\. expected a whole number from 1 to 64/],
      [['--to-target', 'hub', '--to-bucket', dst, '--to-prefix', 'site/old/'], /overlaps the mirror itself/],
    ];
    for (const [args, message] of cases) {
      const run = await cli(args);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr, args.join(' ')).toMatch(message);
    }
  });
});
