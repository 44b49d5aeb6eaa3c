import { readFileSync } from 'node:fs';
import { PutBucketNotificationConfigurationCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateTopicCommand, DeleteTopicCommand, SNSClient } from '@aws-sdk/client-sns';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openApp, type App } from '../lib/plumbing/app.js';
import { ConfigError, parseConfig } from '../lib/config/load.js';
import { buildServer } from '../lib/server.js';
import { closeApps, createBucket, listKeys, logger, removeBucket, s3Client, s3Env, testConfig } from './helpers.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventKey, verifyJobId } from '../triggers/webhook.js';

const MINIO = readFileSync('test/fixtures/minio-put.json', 'utf8');
const RGW = readFileSync('test/fixtures/rgw-put.json', 'utf8');

const datasets = [
  { id: 'velero', kind: 'velero', target: { name: 'hub', bucket: 'velero-hub' } },
  { id: 'k3s-s3', kind: 'etcd', target: { name: 'hub', bucket: 'etcd-hub', prefix: 'k3s-s3/' } },
  { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1/postgres' }, target: { name: 'hub', bucket: 'pg-hub' } },
];

const apps: App[] = [];
afterEach(async () => closeApps(apps));

async function server(extra: { token?: boolean; maxBodyBytes?: number } = {}): Promise<{ app: App; http: FastifyInstance }> {
  process.env.TEST_WEBHOOK_TOKEN = 'two words';
  const config = testConfig({ datasets, server: { webhook: { ...(extra.token ? { token: '${env:TEST_WEBHOOK_TOKEN}' } : {}), ...(extra.maxBodyBytes ? { maxBodyBytes: extra.maxBodyBytes } : {}) } } });
  const app = await openApp(config, logger());
  apps.push(app);
  return { app, http: await buildServer({ config, recorder: app.recorder, queues: app.queues }) };
}

const post = (http: FastifyInstance, body: string, headers: Record<string, string> = {}) =>
  http.inject({ method: 'POST', url: '/hooks/s3', payload: body, headers: { 'content-type': 'application/json', ...headers } });

const verifyJobs = async (app: App) => (await app.queues.queue('verifyObject').getJobs(['waiting', 'delayed', 'active', 'completed', 'failed'])).map((j) => j.data);

/** A recorded body with its first record's object key (and other record fields) replaced. */
function withRecord(body: string, fields: { key?: string; eventSource?: string; eventTime?: string | undefined }): string {
  const parsed = JSON.parse(body);
  const record = parsed.Records[0];
  if (fields.key !== undefined) record.s3.object.key = fields.key;
  if ('eventSource' in fields) record.eventSource = fields.eventSource;
  if ('eventTime' in fields) record.eventTime = fields.eventTime;
  return JSON.stringify(parsed);
}

/** Reads until `done` holds or the deadline passes, and returns the last value read. */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await sleep(100);
  }
}

describe('bucket-notification webhook (recorded MinIO and RGW bodies, real Redis)', () => {
  it('turns a MinIO event and an RGW event into verifyObject jobs with decoded keys', async () => {
    const { app, http } = await server();
    expect((await http.inject({ method: 'HEAD', url: '/hooks/s3' })).statusCode).toBe(200);
    const minio = await post(http, MINIO);
    expect(minio.statusCode).toBe(202);
    expect(minio.json()).toEqual({ accepted: 1, ignored: {} });
    const rgw = await post(http, RGW, { 'content-type': 'text/plain' });
    expect(rgw.statusCode).toBe(202);
    expect((await verifyJobs(app)).sort((a, b) => a.dataset.localeCompare(b.dataset))).toEqual([
      { dataset: 'k3s-s3', key: 'k3s-s3/etcd-snapshot-server1-1795658400', etag: '9b2cf535f27731c974343645a3985328', size: 2211872, external: true },
      { dataset: 'velero', key: 'backups/nightly-20261126030000/nightly-20261126030000.tar.gz', etag: '6f1ed002ab5595859014ebf0951522d9', size: 48213, external: true },
    ]);
  });

  it('deduplicates: the same event twice is one job', async () => {
    const { app, http } = await server();
    await post(http, MINIO);
    await post(http, MINIO);
    expect(await verifyJobs(app)).toHaveLength(1);
  });

  it('deduplicates per object version per hour of its eventTime: the same version announced hours later is verified again', async () => {
    const { app, http } = await server();
    await post(http, MINIO); // eventTime 2026-11-26T03:04:11.123Z
    expect((await post(http, withRecord(MINIO, { eventTime: '2026-11-26T03:59:59.000Z' }))).statusCode).toBe(202);
    expect(await verifyJobs(app)).toHaveLength(1);
    expect((await post(http, withRecord(MINIO, { eventTime: '2026-11-26T05:00:00.000Z' }))).statusCode).toBe(202);
    expect(await verifyJobs(app)).toHaveLength(2);

    // Without a usable eventTime the window is the current hour.
    const event = { bucket: 'velero-hub', key: 'backups/b.tar.gz', etag: 'e1' };
    const now = new Date('2026-11-26T10:15:00Z');
    expect(verifyJobId('hub', event, now)).toBe(verifyJobId('hub', { ...event, eventTime: '2026-11-26T10:59:00Z' }, now));
    expect(verifyJobId('hub', { ...event, eventTime: 'yesterday' }, now)).toBe(verifyJobId('hub', event, new Date('2026-11-26T10:45:00Z')));
    expect(verifyJobId('hub', event, now)).not.toBe(verifyJobId('hub', event, new Date('2026-11-26T11:00:00Z')));
    expect(verifyJobId('hub', event, now)).not.toBe(verifyJobId('hub', { ...event, etag: 'e2' }, now));
  });

  it('decodes keys only where the sender encodes them: MinIO and AWS query-escape, RGW sends them raw', async () => {
    const { app, http } = await server();
    // As MinIO (Go's url.QueryEscape) and AWS send them.
    const escaped = { 'c++ 100%.sql': 'c%2B%2B+100%25.sql', 'a b+c/d.sql': 'a+b%2Bc%2Fd.sql', '日本/é.sql': '%E6%97%A5%E6%9C%AC%2F%C3%A9.sql' };
    for (const [key, sent] of Object.entries(escaped)) {
      expect((await post(http, withRecord(MINIO, { key: sent }))).json()).toEqual({ accepted: 1, ignored: {} });
      expect((await post(http, withRecord(RGW, { key: `k3s-s3/${key}` }))).json()).toEqual({ accepted: 1, ignored: {} });
    }
    // An AWS-shaped record, and records with no or an unknown eventSource (taken as is).
    await post(http, withRecord(RGW, { eventSource: 'aws:s3', key: 'k3s-s3%2Faws+%2B.sql' }));
    await post(http, withRecord(RGW, { eventSource: undefined, key: 'k3s-s3/no source+%41.sql' }));
    await post(http, withRecord(RGW, { eventSource: 'garage:s3', key: 'k3s-s3/garage+%41.sql' }));
    // Undecodable if it were escaped, but a legal raw key from RGW.
    expect((await post(http, withRecord(RGW, { key: 'k3s-s3/%E0%A4%A' }))).statusCode).toBe(202);

    const keys = (await verifyJobs(app)).map((j) => `${j.dataset}:${j.key}`).sort();
    expect(keys).toEqual([
      'k3s-s3:k3s-s3/%E0%A4%A',
      'k3s-s3:k3s-s3/a b+c/d.sql',
      'k3s-s3:k3s-s3/aws +.sql',
      'k3s-s3:k3s-s3/c++ 100%.sql',
      'k3s-s3:k3s-s3/garage+%41.sql',
      'k3s-s3:k3s-s3/no source+%41.sql',
      'k3s-s3:k3s-s3/日本/é.sql',
      'velero:a b+c/d.sql',
      'velero:c++ 100%.sql',
      'velero:日本/é.sql',
    ]);
    expect(eventKey({ eventSource: 'minio:s3', s3: { bucket: { name: 'b' }, object: { key: 'c%2B%2B+100%25.sql' } } })).toBe('c++ 100%.sql');
    expect(eventKey({ eventSource: 'ceph:s3', s3: { bucket: { name: 'b' }, object: { key: 'c++ 100%.sql' } } })).toBe('c++ 100%.sql');
  });

  it('ignores keys that climb out of their folder or are longer than S3 allows, and counts them', async () => {
    const { app, http } = await server();
    const unsafe = [
      withRecord(RGW, { key: 'k3s-s3/../../etc/passwd' }),
      withRecord(MINIO, { key: '..%2F..%2Fetc%2Fpasswd' }),
      withRecord(MINIO, { key: 'backups%2F..%2F..%2Fetc%2Fpasswd' }),
      withRecord(RGW, { key: 'k3s-s3/./snapshot' }),
      withRecord(RGW, { key: 'k3s-s3//snapshot' }),
      withRecord(RGW, { key: '/k3s-s3/snapshot' }),
      withRecord(RGW, { key: `k3s-s3/${'x'.repeat(1018)}` }), // 1025 bytes
      withRecord(RGW, { key: `k3s-s3/${'é'.repeat(509)}` }), // 516 characters, 1025 bytes
    ];
    for (const body of unsafe) expect((await post(http, body)).json()).toEqual({ accepted: 0, ignored: { 'unsafe-key': 1 } });
    expect(await verifyJobs(app)).toEqual([]);
    // 1024 bytes is the S3 limit, and allowed.
    expect((await post(http, withRecord(RGW, { key: `k3s-s3/${'x'.repeat(1017)}` }))).json()).toEqual({ accepted: 1, ignored: {} });
    const metrics = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain(`lifeboat_webhook_events_total{result="ignored-unsafe-key"} ${unsafe.length}`);
  });

  it('with a token: a missing or wrong bearer token gets 401 and no job; the right one (two words, as MinIO sends it) works', async () => {
    const { app, http } = await server({ token: true });
    expect((await post(http, MINIO)).statusCode).toBe(401);
    expect((await post(http, MINIO, { authorization: 'Bearer two' })).statusCode).toBe(401);
    expect((await post(http, MINIO, { authorization: 'Bearer two wordsX' })).statusCode).toBe(401);
    expect(await verifyJobs(app)).toEqual([]);
    expect((await post(http, MINIO, { authorization: 'Bearer two words' })).statusCode).toBe(202);
    expect(await verifyJobs(app)).toHaveLength(1);
  });

  it('ignores unknown buckets, Lifeboat\'s own objects and non-create events, and counts them', async () => {
    const { app, http } = await server();
    const other = MINIO.replaceAll('velero-hub', 'somebody-elses-bucket');
    const own = RGW.replace('k3s-s3/etcd-snapshot-server1-1795658400', 'k3s-s3/k3s/etcd-snapshot-server1-1795658400/manifest.json');
    const removed = RGW.replace('ObjectCreated:Put', 'ObjectRemoved:Delete');
    expect((await post(http, other)).json()).toEqual({ accepted: 0, ignored: { 'unknown-bucket': 1 } });
    expect((await post(http, own)).json()).toEqual({ accepted: 0, ignored: { 'lifeboat-object': 1 } });
    expect((await post(http, removed)).json()).toEqual({ accepted: 0, ignored: { 'not-created': 1 } });
    expect(await verifyJobs(app)).toEqual([]);
    const metrics = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain('lifeboat_webhook_events_total{result="ignored-unknown-bucket"} 1');
  });

  it('rejects bad bodies with a reason, and oversized ones with 413, creating nothing', async () => {
    const { app, http } = await server({ maxBodyBytes: 4096 });
    const notJson = await post(http, '{"Records": [');
    expect(notJson.statusCode).toBe(400);
    expect(notJson.json().error).toMatch(/^body is not JSON/);
    const wrongShape = await post(http, JSON.stringify({ Records: [{ eventName: 'ObjectCreated:Put', s3: { bucket: {}, object: { key: 'x', size: -1 } } }] }));
    expect(wrongShape.statusCode).toBe(400);
    expect(wrongShape.json()).toEqual({ error: 'not an S3 event notification', problems: ['Records[0].s3.bucket.name: Required', 'Records[0].s3.object.size: Too small: expected number to be >=0'] });
    expect((await post(http, JSON.stringify({ Records: [] }))).statusCode).toBe(400);
    // Only a sender that escapes keys can send one that does not decode.
    const badKey = await post(http, withRecord(MINIO, { key: 'backups%2F%E0%A4%A' }));
    expect(badKey.statusCode).toBe(400);
    expect(badKey.json()).toEqual({ error: 'bad object key "backups%2F%E0%A4%A" from minio:s3: URI malformed', problems: ['Records[0]: bad object key "backups%2F%E0%A4%A" from minio:s3: URI malformed'] });
    expect((await post(http, `{"Records":[${'x'.repeat(5000)}]}`)).statusCode).toBe(413);
    expect(await verifyJobs(app)).toEqual([]);
  });

  it('survives thousands of mutated bodies and creates no job from an invalid one (fuzz)', async () => {
    const { app, http } = await server({ maxBodyBytes: 8192 });
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const mutate = (s: string): string => {
      const i = random(s.length);
      switch (random(7)) {
        case 0: return s.slice(0, i) + s.slice(i + 1);
        case 1: return s.slice(0, i) + String.fromCharCode(random(0x3000)) + s.slice(i);
        case 2: return s.slice(0, i);
        case 3: return s.slice(0, i) + s.slice(i, i + 50).repeat(random(200)) + s.slice(i);
        case 4: return s.replace(/"[a-zA-Z]+":/, `"${'k'.repeat(random(5))}":`);
        case 5: return s.replace(/(\d+)/, random(2) ? '"$1"' : '-$1');
        default: return s.replace(/"(\w+)":\{/, `"$1":${['null', '[]', '1', '"x"'][random(4)]},"_":{`);
      }
    };
    const statuses = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      let body = random(2) ? MINIO : RGW;
      for (let m = 0, n = 1 + random(4); m < n; m++) body = mutate(body);
      const before = (await verifyJobs(app)).length;
      const response = await post(http, body);
      statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1);
      expect([202, 400, 413]).toContain(response.statusCode);
      if (response.statusCode !== 202) expect((await verifyJobs(app)).length).toBe(before);
    }
    expect(statuses.get(400)).toBeGreaterThan(1000);
    // Still serving.
    expect((await post(http, MINIO.replace('6f1ed002ab5595859014ebf0951522d9', 'ffffffffffffffffffffffffffffffff'))).statusCode).toBe(202);
  });
});

describe('webhook config', () => {
  it('refuses to run without a token unless bound to loopback', () => {
    const raw = { targets: {}, server: { host: '0.0.0.0' } };
    expect(() => parseConfig(raw, 'test')).toThrow(ConfigError);
    expect(() => parseConfig(raw, 'test')).toThrow(/server\.webhook\.token: required when server\.host \(0\.0\.0\.0\) is not a loopback address/);
    expect(() => parseConfig({ targets: {}, server: { host: '127.0.0.1' } }, 'test')).not.toThrow();
    // Off loopback the UI and Bull Board need users too (test/auth.test.ts).
    const ui = { users: [{ name: 'ops', password: '${env:UI_PASS}', role: 'operator' }] };
    expect(() => parseConfig({ targets: {}, server: { host: '0.0.0.0', ui, webhook: { enabled: false } } }, 'test', { env: { UI_PASS: 'p' } })).not.toThrow();
  });
});

describe('end to end on real Ceph RGW: bucket notification → webhook → verifyObject', () => {
  let client: S3Client;
  let sns: SNSClient;
  let bucket: string;
  let topicArn: string | undefined;
  beforeAll(async () => {
    client = s3Client();
    bucket = await createBucket(client);
    const s3 = s3Env();
    sns = new SNSClient({ endpoint: s3.endpoint, region: 'default', credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  });
  afterAll(async () => {
    if (topicArn) await sns.send(new DeleteTopicCommand({ TopicArn: topicArn })).catch(() => {});
    await removeBucket(client, bucket);
    client.destroy();
    sns.destroy();
  });

  it('a Velero backup and objects with awkward keys written by another tool are verified, under their exact keys, and count for freshness', async () => {
    const config = testConfig({ datasets: [{ id: 'velero', kind: 'velero', target: { name: 'hub', bucket, prefix: 'velero/' } }] });
    const app = await openApp(config, logger());
    apps.push(app);
    await app.startWorkers(['verifyObject']);
    const http = await buildServer({ config, recorder: app.recorder, queues: app.queues });
    const address = await http.listen({ host: '127.0.0.1', port: 0 });
    try {
      const topic = await sns.send(new CreateTopicCommand({ Name: `lifeboat-${bucket}`, Attributes: { 'push-endpoint': `${address}/hooks/s3`, persistent: 'false' } }));
      topicArn = topic.TopicArn;
      await client.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { TopicConfigurations: [{ Id: 'lifeboat', TopicArn: topicArn, Events: ['s3:ObjectCreated:*'] }] } }));
      const backup = { kind: 'Backup', metadata: { name: 'nightly-1' }, status: { phase: 'Completed', completionTimestamp: '2026-11-26T03:05:00Z' } };
      // As Velero (or anything else) would write them, with a plain S3 client. RGW notifies these keys raw.
      const backupKey = 'velero/backups/nightly-1/velero-backup.json';
      const awkward = ['velero/c++ 100%.sql', 'velero/a b+c/d.sql', 'velero/日本/é.sql'];
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: backupKey, Body: JSON.stringify(backup) }));
      for (const key of awkward) await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: `contents of ${key}` }));

      const store = app.deps.store('hub', bucket);
      type VerifyResult = { ok?: boolean; key?: string; checks?: Array<{ name: string; ok: boolean }> };
      const readRecords = async () => Promise.all([backupKey, ...awkward].map((key) => store.getJson<VerifyResult>(`velero/_lifeboat/verify/${key}.json`)));
      const freshness = { name: 'lifeboat_backup_last_success_timestamp_seconds', labels: { dataset: 'velero', kind: 'velero' }, value: Date.parse('2026-11-26T03:05:00Z') / 1000 };
      // The metric is recorded after the record is written: wait for both.
      const outcome = await eventually(
        async () => ({ records: await readRecords(), samples: await app.recorder.samples() }),
        ({ records, samples }) => records.every((r) => r !== undefined) && samples.some((m) => m.name === freshness.name && m.value === freshness.value),
      );
      const [backupRecord, ...awkwardRecords] = outcome.records;
      expect(backupRecord).toMatchObject({ ok: true, key: backupKey, checks: expect.arrayContaining([{ name: 'velero phase', ok: true, detail: 'Completed, completed 2026-11-26T03:05:00Z' }]) });
      expect(awkwardRecords).toEqual(awkward.map((key) => expect.objectContaining({ ok: true, key })));
      expect(outcome.samples).toContainEqual(freshness);
      // Exactly these objects were checked, each once, under its exact key (Lifeboat's own records are ignored).
      expect((await verifyJobs(app)).map((j) => j.key).sort()).toEqual([backupKey, ...awkward].sort());
    } finally {
      await http.close();
    }
  });

  it('a notification for an object that does not exist completes as missing, writes no record and is not retried', async () => {
    const config = testConfig({ datasets: [{ id: 'gone', kind: 'velero', target: { name: 'hub', bucket, prefix: 'gone/' } }] });
    const app = await openApp(config, logger());
    apps.push(app);
    await app.startWorkers(['verifyObject']);
    const http = await buildServer({ config, recorder: app.recorder, queues: app.queues });
    const key = 'gone/backups/nightly-2/nightly-2.tar.gz';
    const notification = withRecord(RGW.replaceAll('etcd-hub', bucket), { key });
    expect((await post(http, notification)).json()).toEqual({ accepted: 1, ignored: {} });
    const [job] = await app.queues.queue('verifyObject').getJobs(['waiting', 'delayed', 'active', 'completed', 'failed']);
    expect(job?.data).toMatchObject({ dataset: 'gone', key, external: true });

    await app.queues.waitFor('verifyObject', job!.id!, 30_000);
    // Read again once finished: waitFor may return a copy of the job read before its result was stored.
    const finished = await app.queues.queue('verifyObject').getJob(job!.id!);
    expect(finished?.returnvalue).toMatchObject({ missing: true, key });
    expect(finished?.attemptsMade).toBe(1);
    const missing = { name: 'lifeboat_webhook_events_total', labels: { result: 'missing' }, value: 1 };
    expect(await eventually(() => app.recorder.samples(), (samples) => samples.some((m) => m.name === missing.name && m.labels.result === 'missing'))).toContainEqual(missing);
    expect(await listKeys(client, bucket, 'gone/')).toEqual([]);
  });
});
