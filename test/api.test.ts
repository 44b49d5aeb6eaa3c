import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { pruneCheck } from '../functions/pruneCheck.js';
import { verifyObject } from '../functions/verifyObject.js';
import type { Config } from '../lib/config/schema.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { buildServer } from '../lib/server.js';
import { closeApps, createBucket, logger, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, seedDatabases, testConfig, openWithRedisDown , runOnce } from './helpers.js';

// The web UI's read-only JSON API (/api/) on real services: real dumps of a throwaway PostgreSQL, a real
// mirror between two RGW users, verification and a drill through the functions themselves, then the
// API's answers, with Redis up and with Redis down (the API reads only the targets).

const TICKS = ['2026-11-20T02:00:00Z', '2026-11-21T02:00:00Z', '2026-11-22T02:00:00Z'];
const IDS = ['20261120T020000Z', '20261121T020000Z', '20261122T020000Z'];
const CAPACITY = 4096;

let pg: ThrowawayCluster;
let hub: S3Client;
let source: S3Client;
let pgBucket: string;
let mirrorBucketName: string;
let srcBucket: string;
let dirRoot: string;
let config: Config;
const apps: App[] = [];
const servers: FastifyInstance[] = [];

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const readS3Json = async (bucket: string, key: string) => JSON.parse(Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray()).toString());

async function listen(server: FastifyInstance): Promise<string> {
  servers.push(server);
  await server.listen({ port: 0, host: '127.0.0.1' });
  return `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
}

async function getJson(base: string, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}${path}`);
  return { status: res.status, body: await res.json() };
}

let base: string;

beforeAll(async () => {
  pg = await startThrowawayCluster();
  await seedDatabases(pg.url, { shop: 500, notes: 200 });
  hub = s3Client();
  const sourceKeys = rgwUser('lifeboat-api-source');
  source = s3ClientFor(sourceKeys);
  pgBucket = await createBucket(hub);
  mirrorBucketName = await createBucket(hub);
  srcBucket = await createBucket(source);
  dirRoot = await mkdtemp(join(tmpdir(), 'lb-api-dir-'));
  process.env.TEST_API_MIRROR_KEY = sourceKeys.accessKeyId;
  process.env.TEST_API_MIRROR_SECRET = sourceKeys.secretAccessKey;
  const s3 = s3Env();
  config = testConfig({
    targets: {
      hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', partSizeMiB: 5, queueSize: 2, capacityBytes: CAPACITY },
      local: { kind: 'dir', path: dirRoot },
    },
    datasets: [
      { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: pg.url }, target: { name: 'hub', bucket: pgBucket } },
      // Stale within a second of its backup: the BackupStale case.
      { id: 'pgdir', kind: 'postgres', staleAfterHours: 0.0002, source: { mode: 'direct', url: pg.url }, target: { name: 'local', bucket: 'backups' } },
      {
        id: 'photos', kind: 'bucket',
        source: { endpoint: s3.endpoint, bucket: srcBucket, accessKeyId: '${env:TEST_API_MIRROR_KEY}', secretAccessKey: '${env:TEST_API_MIRROR_SECRET}' },
        target: { name: 'hub', bucket: mirrorBucketName, prefix: 'rgw/' },
      },
    ],
  });

  for (const tick of TICKS) {
    const dump = (await runOnce(config, dumpPostgres, { dataset: 'pg', tick })) as { key: string };
    await runOnce(config, verifyObject, { dataset: 'pg', key: dump.key });
  }
  const dirDump = (await runOnce(config, dumpPostgres, { dataset: 'pgdir', tick: TICKS[2] })) as { key: string };
  await runOnce(config, verifyObject, { dataset: 'pgdir', key: dirDump.key });

  for (let i = 0; i < 5; i++) await source.send(new PutObjectCommand({ Bucket: srcBucket, Key: `img/${i}.jpg`, Body: Buffer.alloc(1000 + i, i) }));
  const mirrored = (await runOnce(config, mirrorBucket, { dataset: 'photos', tick: TICKS[2] })) as { key: string };
  await runOnce(config, verifyObject, { dataset: 'photos', key: mirrored.key });

  // Capacity history as pruneCheck keeps it: one sample 40 days ago (outside the API's 30), one 5 days ago, then today's run.
  const day = 86400_000;
  await openLocal(config, logger()).storeFor(config.datasets[0]!).putJson('_lifeboat/capacity/hub.json', {
    target: 'hub',
    samples: [{ at: new Date(Date.now() - 40 * day).toISOString(), usedBytes: 10 }, { at: new Date(Date.now() - 5 * day).toISOString(), usedBytes: 100 }],
  });
  await runOnce(config, pruneCheck, {}); // before the corruption: retention would prune a corrupt copy


  // The newest dump passes a real drill; the middle one is then overwritten on the hub and re-verified: corrupt.
  await runOnce(config, drillRestore, { dataset: 'pg' });
  await hub.send(new PutObjectCommand({ Bucket: pgBucket, Key: `pg/${IDS[1]}/pg_dumpall.sql.gz`, Body: Buffer.from('not a dump any more') }));
  await runOnce(config, verifyObject, { dataset: 'pg', key: `pg/${IDS[1]}/pg_dumpall.sql.gz` }).catch(() => undefined);

  const app = await openApp(config, logger());
  apps.push(app);
  base = await listen(await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: app.deps }));
}, 240_000);

afterAll(async () => {
  for (const s of servers.splice(0)) await s.close();
  await closeApps(apps);
  await pg?.stop();
  for (const b of [pgBucket, mirrorBucketName]) if (b) await removeBucket(hub, b);
  if (srcBucket) await removeBucket(source, srcBucket);
  hub?.destroy();
  source?.destroy();
  if (dirRoot) await rm(dirRoot, { recursive: true, force: true });
});

describe('GET /api/datasets', () => {
  it('sums up each dataset from its target: newest backup, status, drill, staleness, counts', async () => {
    const { status, body } = await getJson(base, '/api/datasets');
    expect(status).toBe(200);
    const byId = Object.fromEntries(body.datasets.map((d: any) => [d.id, d]));
    expect(Object.keys(byId)).toEqual(['pg', 'pgdir', 'photos']);

    const pgSummary = byId.pg;
    expect(pgSummary).toMatchObject({ kind: 'postgres', target: { name: 'hub', bucket: pgBucket, prefix: '' }, staleAfterHours: 26, backups: 3, corrupt: 1, stale: false });
    expect(pgSummary.newest).toMatchObject({ id: IDS[2], status: 'verified', size: expect.any(Number) });
    expect(pgSummary.newest.ageSeconds).toBeLessThan(600);
    expect(pgSummary.newest.checkedAt).toEqual(expect.any(String));
    expect(pgSummary.lastDrill).toMatchObject({ ok: true, failedChecks: [] });
    expect(pgSummary.lastDrill.ageSeconds).toBeLessThan(600);

    await new Promise((r) => setTimeout(r, 1000)); // pgdir's threshold is 0.72 s
    const again = (await getJson(base, '/api/datasets')).body.datasets.find((d: any) => d.id === 'pgdir');
    expect(again).toMatchObject({ kind: 'postgres', target: { name: 'local', bucket: 'backups' }, backups: 1, stale: true, newest: { id: IDS[2], status: 'verified' } });

    // A mirror's newest backup is its report; dataBytes is what it mirrored.
    expect(byId.photos).toMatchObject({ kind: 'bucket', backups: 1, newest: { id: IDS[2], status: 'verified', dataBytes: 5 * 1000 + (0 + 1 + 2 + 3 + 4) } });
  });
});

describe('GET /api/datasets/:id/backups', () => {
  it('pages, sorts and filters, with the total', async () => {
    const all = await getJson(base, '/api/datasets/pg/backups');
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ dataset: 'pg', total: 3, offset: 0, limit: 50 });
    expect(all.body.backups.map((b: any) => [b.id, b.status])).toEqual([[IDS[2], 'verified'], [IDS[1], 'corrupt'], [IDS[0], 'verified']]);

    const page1 = await getJson(base, '/api/datasets/pg/backups?limit=2');
    const page2 = await getJson(base, '/api/datasets/pg/backups?limit=2&offset=2');
    expect([page1.body.total, page2.body.total]).toEqual([3, 3]);
    expect([...page1.body.backups, ...page2.body.backups].map((b: any) => b.id)).toEqual([IDS[2], IDS[1], IDS[0]]);

    const asc = await getJson(base, '/api/datasets/pg/backups?order=asc');
    expect(asc.body.backups.map((b: any) => b.id)).toEqual(IDS);
    const bySize = await getJson(base, '/api/datasets/pg/backups?sort=size&order=asc');
    const sizes = bySize.body.backups.map((b: any) => b.size);
    expect(sizes).toEqual([...sizes].sort((a, b) => a - b));
    // The overwritten one ("not a dump any more") is by far the smallest artifact as listed, but its manifest size is the dump's.
    expect(bySize.body.backups).toHaveLength(3);

    const corrupt = await getJson(base, '/api/datasets/pg/backups?status=corrupt');
    expect(corrupt.body.total).toBe(1);
    expect(corrupt.body.backups[0]).toMatchObject({ id: IDS[1], status: 'corrupt' });
    expect(corrupt.body.backups[0].verifyHistory[0]).toMatchObject({ ok: false });
    expect(corrupt.body.backups[0].verifyHistory[1]).toMatchObject({ ok: true });
  });

  it('each entry carries the full sha256, the verify history, the drill and the key', async () => {
    const { body } = await getJson(base, '/api/datasets/pg/backups?limit=1');
    const manifest = await readS3Json(pgBucket, `pg/${IDS[2]}/manifest.json`);
    expect(body.backups[0]).toEqual({
      id: IDS[2],
      status: 'verified',
      finishedAt: manifest.finishedAt,
      size: manifest.artifact.size,
      sha256: manifest.artifact.sha256,
      checkedAt: expect.any(String),
      verifyHistory: [expect.objectContaining({ ok: true, trigger: 'upload' })],
      drill: { ok: true, at: expect.any(String), failedChecks: [] },
      key: `pg/${IDS[2]}/pg_dumpall.sql.gz`,
    });
    expect(body.backups[0].sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('answers bad input with 400/404 naming the field', async () => {
    const cases: Array<[string, number, string]> = [
      ['/api/datasets/pg/backups?limit=0', 400, 'limit'],
      ['/api/datasets/pg/backups?limit=501', 400, 'limit'],
      ['/api/datasets/pg/backups?limit=ten', 400, 'limit'],
      ['/api/datasets/pg/backups?offset=-1', 400, 'offset'],
      ['/api/datasets/pg/backups?sort=name', 400, 'sort'],
      ['/api/datasets/pg/backups?order=up', 400, 'order'],
      ['/api/datasets/pg/backups?status=fine', 400, 'status'],
      ['/api/datasets/pg/backups?colour=red', 400, 'colour'],
      ['/api/datasets/nope/backups', 404, 'dataset'],
      ['/api/backups/nope/20261122T020000Z', 404, 'dataset'],
      ['/api/backups/pg/20261122T020000', 400, 'id'],
      ['/api/backups/pg/..%2F..%2Fetc%2Fpasswd', 400, 'id'],
      ['/api/backups/pgdir/..%2Fpg%2F20261122T020000Z/download', 400, 'id'],
      ['/api/backups/pg/etcd-snapshot-x', 400, 'id'],
      ['/api/backups/pg/20991122T020000Z', 404, 'id'],
      ['/api/backups/pgdir/20991122T020000Z/download', 404, 'id'],
    ];
    for (const [path, status, field] of cases) {
      const res = await getJson(base, path);
      expect([path, res.status, res.body.field]).toEqual([path, status, field]);
      expect(res.body.error, path).toEqual(expect.any(String));
    }
  });
});

describe('GET /api/backups/:dataset/:id', () => {
  it('returns the stored records, the restore command and a presigned download of the exact bytes', async () => {
    const { status, body } = await getJson(base, `/api/backups/pg/${IDS[2]}`);
    expect(status).toBe(200);
    const manifest = await readS3Json(pgBucket, `pg/${IDS[2]}/manifest.json`);
    expect(body.manifest).toEqual(manifest);
    expect(body.verify).toEqual(await readS3Json(pgBucket, `pg/${IDS[2]}/verify.json`));
    expect(body.drill).toEqual(await readS3Json(pgBucket, `pg/${IDS[2]}/drill.json`));
    expect(body.drill.ok).toBe(true);
    expect(body.status).toBe('verified');
    expect(body.restoreCommand).toBe(`lifeboat restore pg --backup ${IDS[2]} --to postgres://postgres@HOST:5432/postgres`);
    expect(body.download.url).toMatch(/X-Amz-Signature=/);
    expect(Date.parse(body.download.expiresAt)).toBeGreaterThan(Date.now());
    const res = await fetch(body.download.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toContain('pg_dumpall.sql.gz');
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(manifest.artifact.sha256);
    // Not usable for anything else: the signature covers the key.
    const tampered = await fetch(body.download.url.replace(`pg/${IDS[2]}/pg_dumpall.sql.gz`, `pg/${IDS[0]}/pg_dumpall.sql.gz`));
    expect(tampered.status).toBe(403);
  });

  it('a corrupted backup shows corrupt with the failed check, and raises VerifyFailed', async () => {
    const { body } = await getJson(base, `/api/backups/pg/${IDS[1]}`);
    expect(body.status).toBe('corrupt');
    expect(body.verify.ok).toBe(false);
    expect(body.verify.checks.find((c: any) => !c.ok)).toBeTruthy();
    const alerts = (await getJson(base, '/api/alerts')).body.alerts;
    expect(alerts).toContainEqual(expect.objectContaining({ alert: 'VerifyFailed', severity: 'critical', dataset: 'pg' }));
  });

  it('a mirror shows its report and the bucket restore command', async () => {
    const { body } = await getJson(base, `/api/backups/photos/${IDS[2]}`);
    expect(body.report).toMatchObject({ format: 'lifeboat.mirror-report/v1', dataset: 'photos', ok: true });
    expect(body.manifest.source).toMatchObject({ objects: 5, bytes: 5010 });
    expect(body.restoreCommand).toBe(`lifeboat restore photos --backup ${IDS[2]} --to-target hub --to-bucket DESTINATION-BUCKET`);
  });

  it('a dir target streams the artifact from /download with its length and a file name', async () => {
    const { body } = await getJson(base, `/api/backups/pgdir/${IDS[2]}`);
    expect(body.download).toEqual({ path: `/api/backups/pgdir/${IDS[2]}/download` });
    const res = await fetch(`${base}${body.download.path}`);
    expect(res.status).toBe(200);
    expect(Number(res.headers.get('content-length'))).toBe(body.manifest.artifact.size);
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="pg_dumpall\.sql\.gz"/);
    expect(res.headers.get('content-type')).toBe(body.manifest.artifact.contentType);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(body.manifest.artifact.sha256);
  });
});

describe('GET /api/targets and /api/alerts', () => {
  it('reports capacity with the last 30 days of history and a forecast', async () => {
    const { status, body } = await getJson(base, '/api/targets');
    expect(status).toBe(200);
    const hubTarget = body.targets.find((t: any) => t.name === 'hub');
    expect(hubTarget).toMatchObject({ kind: 's3', capacityBytes: CAPACITY });
    expect(hubTarget.history).toHaveLength(2);
    expect(hubTarget.history[0].usedBytes).toBe(100);
    expect(hubTarget.usedBytes).toBe(hubTarget.history[1].usedBytes);
    expect(hubTarget.usedBytes).toBeGreaterThan(CAPACITY);
    expect(hubTarget.daysUntilFull).toBe(0);
    expect(body.targets.find((t: any) => t.name === 'local')).toMatchObject({ kind: 'dir', history: [expect.objectContaining({ usedBytes: expect.any(Number) })] });
  });

  it('lists what would fire now: stale, corrupt, disk high, full soon; not a passing drill', async () => {
    const { body } = await getJson(base, '/api/alerts');
    const fired = body.alerts.map((a: any) => [a.alert, a.dataset ?? a.target]).sort();
    expect(fired).toEqual([['BackupStale', 'pgdir'], ['TargetDiskHigh', 'hub'], ['TargetFullSoon', 'hub'], ['VerifyFailed', 'pg']]);
  });
});

describe('with Redis down', () => {
  it('the API answers from the targets alone while /healthz says Redis is down', async () => {
    const { config: down, queues, deps, close } = openWithRedisDown(config);
    try {
      const downBase = await listen(await buildServer({ config: down, recorder: new MemoryMetricsRecorder(), queues, deps }));
      expect((await fetch(`${downBase}/healthz`)).status).toBe(503);
      const datasets = await getJson(downBase, '/api/datasets');
      expect(datasets.status).toBe(200);
      expect(datasets.body.datasets.map((d: any) => [d.id, d.backups, d.newest?.status])).toEqual([['pg', 3, 'verified'], ['pgdir', 1, 'verified'], ['photos', 1, 'verified']]);
      const page = await getJson(downBase, '/api/datasets/pg/backups?status=corrupt');
      expect(page.body.backups.map((b: any) => b.id)).toEqual([IDS[1]]);
      expect((await getJson(downBase, '/api/targets')).status).toBe(200);
      expect((await getJson(downBase, '/api/alerts')).body.alerts).toContainEqual(expect.objectContaining({ alert: 'VerifyFailed', dataset: 'pg' }));
      const detail = await getJson(downBase, `/api/backups/pgdir/${IDS[2]}`);
      const res = await fetch(`${downBase}${detail.body.download.path}`);
      expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(detail.body.manifest.artifact.sha256);
      // Without deps the API opens its own stores (as the demo's server does).
      const ownBase = await listen(await buildServer({ config: down, recorder: new MemoryMetricsRecorder(), queues }));
      expect((await getJson(ownBase, '/api/datasets/pg/backups?limit=1')).body.backups[0].id).toBe(IDS[2]);
    } finally {
      await close();
    }
  });
});
