import { randomBytes } from 'node:crypto';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { drillRecordSchema } from '../lib/catalog/manifest.js';
import type { BucketDataset, Config } from '../lib/config/schema.js';
import { drillBucket, drillScratchPrefix } from '../lib/drill/bucket.js';
import { targetEvents } from '../lib/metrics/rebuild.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { createBucket, listKeys, logger, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, testConfig } from './helpers.js';

// Real Ceph RGW on both sides, as in production: the cluster's bucket belongs to one user, the hub's to another.
const MiB = 1024 * 1024;
const MIRROR_TICK = '2026-11-26T04:00:00Z';
const DRILL_TICK = '2026-11-29T05:00:00Z';
const SCRATCH = '_lifeboat/drill-scratch/photos/';
let source: S3Client;
let hub: S3Client;
let sourceKeys: { accessKeyId: string; secretAccessKey: string };
const buckets: Array<[S3Client, string]> = [];

beforeAll(() => {
  sourceKeys = rgwUser('lifeboat-drill-source');
  source = s3ClientFor(sourceKeys);
  hub = s3Client();
});

afterAll(async () => {
  for (const [client, bucket] of buckets) await removeBucket(client, bucket);
  source?.destroy();
  hub?.destroy();
});

function config(src: string, dst: string, drill: Record<string, unknown> = {}): Config {
  process.env.TEST_DRILL_SOURCE_KEY = sourceKeys.accessKeyId;
  process.env.TEST_DRILL_SOURCE_SECRET = sourceKeys.secretAccessKey;
  return testConfig({
    datasets: [
      {
        id: 'photos',
        kind: 'bucket',
        source: { endpoint: s3Env().endpoint, bucket: src, accessKeyId: '${env:TEST_DRILL_SOURCE_KEY}', secretAccessKey: '${env:TEST_DRILL_SOURCE_SECRET}' },
        target: { name: 'hub', bucket: dst, prefix: 'rgw/' },
        mirror: { multipartThresholdMiB: 5, partSizeMiB: 5 },
        drill,
      },
    ],
  });
}

interface Outcome {
  ok: boolean;
  value?: any;
  error?: Error & { record?: unknown };
  events: Array<{ event: string; payload: any }>;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

async function run(cfg: Config, fn: AnyFunction, data: Record<string, unknown>, attempt = { attempt: 1, maxAttempts: 1 }): Promise<Outcome> {
  const deps = openLocal(cfg, logger());
  const events: Outcome['events'] = [];
  try {
    const value = await runFunction(fn, { dataset: 'photos', ...data }, { jobId: 't', ...attempt, createdAt: Date.now() }, {
      deps,
      emit: async (event, payload) => {
        events.push({ event, payload });
        await deps.metrics.onEvent(event, payload);
      },
    });
    return { ok: true, value, events, samples: await deps.metrics.samples() };
  } catch (error) {
    return { ok: false, error: error as Error, events, samples: await deps.metrics.samples() };
  } finally {
    await deps.close();
  }
}

const put = (client: S3Client, bucket: string, key: string, body: Buffer | string) =>
  client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof body === 'string' ? Buffer.from(body) : body }));
const readJson = async (client: S3Client, bucket: string, key: string) =>
  JSON.parse(Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray()).toString());

const KEYS = Array.from({ length: 12 }, (_, i) => `album/img-${String(i).padStart(2, '0')}.jpg`);
const BIG = 'video/holiday.mp4';
const BIG_SIZE = 11 * MiB + 321;

/** A source bucket with twelve small objects and one multipart-sized one, mirrored once to the hub at MIRROR_TICK. */
async function mirrored(): Promise<{ src: string; dst: string }> {
  const src = await createBucket(source);
  const dst = await createBucket(hub);
  buckets.push([source, src], [hub, dst]);
  for (const key of KEYS) await put(source, src, key, `pixels of ${key} ${randomBytes(64).toString('hex')}`);
  await put(source, src, BIG, randomBytes(BIG_SIZE));
  const mirror = await run(config(src, dst), mirrorBucket, { tick: MIRROR_TICK });
  expect(mirror.error).toBeUndefined();
  return { src, dst };
}

const drill = (cfg: Config, attempt?: { attempt: number; maxAttempts: number }) => run(cfg, drillRestore, { tick: DRILL_TICK }, attempt);
const scratchKeys = (dst: string) => listKeys(hub, dst, SCRATCH);

describe('drillRestore of a bucket mirror, on real RGW (two users)', () => {
  it('restores a sample plus the largest object into a scratch prefix, matches the source, and cleans up', async () => {
    const { src, dst } = await mirrored();
    const cfg = config(src, dst, { sample: 4 });
    const result = await drill(cfg);
    expect(result.error?.message).toBeUndefined();
    const record = drillRecordSchema.parse(result.value);
    expect(record).toMatchObject({ ok: true, mode: 'scratch-prefix', backup: '20261126T040000Z', key: '_lifeboat/mirrors/photos/20261126T040000Z/report.json' });
    expect(record.where).toContain(`${dst}/${SCRATCH}20261129T050000Z/`);
    expect(record.checks.map((c) => [c.name, c.ok])).toEqual([['report', true], ['sample restore', true], ['sha256', true], ['scratch cleanup', true]]);
    // Four drawn by the reservoir, plus the largest unless the draw already had it; every one compared.
    const details = record.details as { sampled: number; compared: number; changedSinceMirror: number; bytes: number; largest: { key: string; size: number } };
    expect(details.largest).toEqual({ key: `rgw/${BIG}`, size: BIG_SIZE });
    expect([4, 5]).toContain(details.sampled);
    expect(details.compared).toBe(details.sampled);
    expect(details.changedSinceMirror).toBe(0);
    expect(details.bytes).toBeGreaterThan(BIG_SIZE);

    // drill.json beside the report, where the catalog finds it; the metrics and a rebuild from the hub agree.
    expect(drillRecordSchema.parse(await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/drill.json')).ok).toBe(true);
    expect(await scratchKeys(dst)).toEqual([]);
    expect(result.events.map((e) => e.event)).toEqual(['drill.completed']);
    expect(result.events[0]!.payload).toMatchObject({ dataset: 'photos', kind: 'bucket', ok: true, failedChecks: [] });
    expect(result.samples.find((s) => s.name === 'lifeboat_drill_last_success_timestamp_seconds')).toMatchObject({ labels: { dataset: 'photos', kind: 'bucket' }, value: expect.any(Number) });
    const deps = openLocal(cfg, logger());
    try {
      const replay = await targetEvents(deps, cfg.datasets[0]!);
      expect(replay.find((e) => e.event === 'drill.completed')?.payload).toMatchObject({ dataset: 'photos', kind: 'bucket', ok: true, key: record.key });
    } finally {
      await deps.close();
    }
  });

  it('fails, naming the key, when a hub object was overwritten with other bytes (its metadata kept), and leaves no scratch copy', async () => {
    const { src, dst } = await mirrored();
    const victim = `rgw/${KEYS[3]}`;
    const head = await hub.send(new HeadObjectCommand({ Bucket: dst, Key: victim }));
    const original = Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: dst, Key: victim }))).Body!.transformToByteArray());
    const rotted = Buffer.from(original);
    rotted[10] = rotted[10]! ^ 0xff;
    await hub.send(new PutObjectCommand({ Bucket: dst, Key: victim, Body: rotted, Metadata: head.Metadata, ContentType: head.ContentType }));

    const result = await drill(config(src, dst, { sample: 100 }));
    expect(result.ok).toBe(false);
    expect(result.error).toMatchObject({ name: 'DrillFailedError', message: expect.stringContaining(victim) });
    const record = drillRecordSchema.parse(await readJson(hub, dst, '_lifeboat/mirrors/photos/20261126T040000Z/drill.json'));
    expect(record.ok).toBe(false);
    const sha = record.checks.find((c) => c.name === 'sha256')!;
    expect(sha).toMatchObject({ ok: false, detail: `1 of 13 restored objects differ from the source: ${victim}` });
    expect(record.checks.find((c) => c.name === 'scratch cleanup')).toMatchObject({ ok: true });
    expect(record.details).toMatchObject({ sampled: 13, compared: 13, changedSinceMirror: 0, mismatches: 1 });
    expect(await scratchKeys(dst)).toEqual([]);
    expect(result.events[0]!.payload).toMatchObject({ kind: 'bucket', ok: false, failedChecks: ['sha256'] });
    expect(result.samples).toContainEqual({ name: 'lifeboat_drill_failures_total', labels: { dataset: 'photos', kind: 'bucket' }, value: 1 });
  });

  it('counts objects changed or deleted at the source since the mirror instead of failing them, until they are more than half', async () => {
    const { src, dst } = await mirrored();
    await put(source, src, KEYS[0]!, 'edited after the mirror ran');
    await source.send(new DeleteObjectCommand({ Bucket: src, Key: KEYS[1] }));
    const few = await drill(config(src, dst, { sample: 100 }));
    expect(few.error?.message).toBeUndefined();
    const record = drillRecordSchema.parse(few.value);
    expect(record.details).toMatchObject({ sampled: 13, compared: 11, changedSinceMirror: 2, mismatches: 0 });
    expect(record.checks.find((c) => c.name === 'sha256')!.detail).toBe('11 restored objects match the source; 2 changed at the source since the mirror, not compared');

    for (const key of KEYS.slice(2, 7)) await put(source, src, key, `edited ${key}`);
    const many = await drill(config(src, dst, { sample: 100 }));
    expect(many.error).toMatchObject({ name: 'DrillFailedError' });
    const failed = drillRecordSchema.parse(many.error!.record);
    expect(failed.details).toMatchObject({ sampled: 13, compared: 6, changedSinceMirror: 7 });
    expect(failed.checks.find((c) => c.name === 'sha256')).toMatchObject({ ok: false, detail: expect.stringContaining('7 of 13 sampled objects changed or vanished at the source since the mirror ran') });
    expect(await scratchKeys(dst)).toEqual([]);
  });

  it('empties the scratch prefix when the drill is aborted after copies landed there', async () => {
    const { src, dst } = await mirrored();
    const cfg = config(src, dst, { sample: 100 });
    const dataset = cfg.datasets[0] as BucketDataset;
    const deps = openLocal(cfg, logger());
    const controller = new AbortController();
    const tick = new Date(DRILL_TICK);
    let inScratchAtAbort = -1;
    try {
      const real = deps.bucketSource(dataset);
      // The first comparison (after its copy is in scratch) stops the job, as a timeout or shutdown would.
      const tripping = Object.create(real, {
        head: {
          value: async (key: string, options: { signal?: AbortSignal }) => {
            if (!controller.signal.aborted) {
              inScratchAtAbort = (await listKeys(hub, dst, drillScratchPrefix(dataset, tick))).length;
              controller.abort(new Error('shutting down'));
            }
            return real.head(key, options);
          },
        },
      });
      const result = await drillBucket(dataset, { deps: { ...deps, bucketSource: () => tripping }, log: logger(), signal: controller.signal, tick }, {});
      expect(inScratchAtAbort).toBeGreaterThan(0);
      expect(result.retryable).toBeDefined();
      expect(result.checks.find((c) => c.name === 'sample restore')).toMatchObject({ ok: false });
      expect(result.checks.find((c) => c.name === 'scratch cleanup')).toMatchObject({ ok: true });
      expect(await scratchKeys(dst)).toEqual([]);
    } finally {
      await deps.close();
    }
  });

  it('refuses a dataset without a mirror report, before touching anything', async () => {
    const src = await createBucket(source);
    const dst = await createBucket(hub);
    buckets.push([source, src], [hub, dst]);
    const result = await drill(config(src, dst));
    expect(result.error).toMatchObject({ name: 'PermanentError', message: 'dataset photos has no mirror report to drill' });
    expect(await listKeys(hub, dst)).toEqual([]);
  });
});

describe('drillRestore, the shell', () => {
  it('still reads drill.json written before drills had other kinds (no details)', () => {
    const old = { format: 'lifeboat.drill/v1', dataset: 'main', backup: '20261120T020000Z', key: 'main/20261120T020000Z/pg_dumpall.sql.gz', ok: true, mode: 'local', where: 'local cluster in /tmp/lifeboat-pg-x', startedAt: '2026-11-22T05:00:00.000Z', finishedAt: '2026-11-22T05:01:00.000Z', durationMs: 60000, restoreMs: 50000, checks: [] };
    expect(drillRecordSchema.parse(old)).toEqual(old);
  });

  it('fires weekly per dataset of every kind with a drill, unless drill.enabled is false', () => {
    const cfg = testConfig({
      datasets: [
        { id: 'db', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1:5432/postgres' }, target: { name: 'hub', bucket: 'lb-sched', prefix: 'db/' } },
        { id: 'pics', kind: 'bucket', source: { endpoint: s3Env().endpoint, bucket: 'lb-src', accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' }, target: { name: 'hub', bucket: 'lb-sched', prefix: 'pics/' }, drill: { schedule: '0 6 * * 1' } },
        { id: 'quiet', kind: 'bucket', source: { endpoint: s3Env().endpoint, bucket: 'lb-src', accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' }, target: { name: 'hub', bucket: 'lb-sched', prefix: 'quiet/' }, drill: { enabled: false } },
        { id: 'k3s', kind: 'etcd', target: { name: 'hub', bucket: 'lb-sched', prefix: 'etcd/' } },
      ],
    });
    const trigger = drillRestore.triggers[0] as { cron: (config: Config) => Array<{ id: string; pattern: string; input: unknown }> };
    expect(trigger.cron(cfg)).toEqual([
      { id: 'db', pattern: '0 5 * * 0', input: { dataset: 'db' } },
      { id: 'pics', pattern: '0 6 * * 1', input: { dataset: 'pics' } },
      { id: 'k3s', pattern: '0 5 * * 0', input: { dataset: 'k3s' } },
    ]);
    expect(drillRestore.kinds).toEqual(['postgres', 'bucket', 'etcd', 'velero']);
  });
});
