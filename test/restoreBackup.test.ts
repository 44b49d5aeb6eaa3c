import { randomUUID } from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { restoreBackup } from '../functions/restoreBackup.js';
import { verifyObject } from '../functions/verifyObject.js';
import type { Config } from '../lib/config/schema.js';
import { openApp, type App } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { closeApps, createBucket, ITEMS_FINGERPRINT, listKeys, logger, PG_URL, psql, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, seedDatabases, testConfig, withDatabase , runOnce } from './helpers.js';

// restoreBackup, the web UI's restore, on real services: dumps of a throwaway PostgreSQL and a mirror
// between two RGW users, restored into the destinations named in server.ui.restoreTargets, once
// through a real BullMQ worker (for its job progress) and otherwise inline.

let source: ThrowawayCluster;
let scratch: ThrowawayCluster;
let hub: S3Client;
let mirrorSource: S3Client;
let pgBucket: string;
let mirrorHubBucket: string;
let srcBucket: string;
const restoredBucket = `lb-restored-${randomUUID().slice(0, 8)}`;
let config: Config;
const apps: App[] = [];

beforeAll(async () => {
  [source, scratch] = await Promise.all([startThrowawayCluster(), startThrowawayCluster()]);
  await seedDatabases(source.url, { shop: 400, notes: 150 });
  hub = s3Client();
  const keys = rgwUser('lifeboat-restore-source');
  mirrorSource = s3ClientFor(keys);
  [pgBucket, mirrorHubBucket, srcBucket] = await Promise.all([createBucket(hub), createBucket(hub), createBucket(mirrorSource)]);
  process.env.TEST_RESTORE_MIRROR_KEY = keys.accessKeyId;
  process.env.TEST_RESTORE_MIRROR_SECRET = keys.secretAccessKey;
  const s3 = s3Env();
  config = testConfig({
    targets: { hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
    datasets: [
      { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket: pgBucket } },
      {
        id: 'photos', kind: 'bucket',
        source: { endpoint: s3.endpoint, bucket: srcBucket, accessKeyId: '${env:TEST_RESTORE_MIRROR_KEY}', secretAccessKey: '${env:TEST_RESTORE_MIRROR_SECRET}' },
        target: { name: 'hub', bucket: mirrorHubBucket, prefix: 'rgw/' },
      },
    ],
    server: { ui: { restoreTargets: { scratch: { kind: 'postgres', url: scratch.url }, shared: { kind: 'postgres', url: PG_URL }, 'photos-copy': { kind: 's3', target: 'hub', bucket: restoredBucket } } } },
  });
  for (const tick of ['2026-11-20T02:00:00Z', '2026-11-21T02:00:00Z']) {
    const dump = await runOnce(config, dumpPostgres, { dataset: 'pg', tick });
    await runOnce(config, verifyObject, { dataset: 'pg', key: dump.key });
  }
  for (let i = 0; i < 6; i++) await mirrorSource.send(new PutObjectCommand({ Bucket: srcBucket, Key: `img/${i}.jpg`, Body: Buffer.alloc(2000 + i, i) }));
  await runOnce(config, mirrorBucket, { dataset: 'photos', tick: '2026-11-21T02:00:00Z' });
}, 240_000);

afterAll(async () => {
  await closeApps(apps);
  await Promise.all([source?.stop(), scratch?.stop()]);
  for (const b of [pgBucket, mirrorHubBucket, restoredBucket]) if (b) await removeBucket(hub, b).catch(() => {});
  if (srcBucket) await removeBucket(mirrorSource, srcBucket);
  hub?.destroy();
  mirrorSource?.destroy();
});

async function waitForJob(app: App, fn: string, id: string) {
  const progress: unknown[] = [];
  for (let i = 0; i < 600; i++) {
    const status = (await app.queues.jobStatus(fn, id))!;
    if (status.progress) progress.push(status.progress);
    if (status.state === 'completed' || status.state === 'failed') return { status, progress };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}

describe('restoreBackup (real PostgreSQL, real RGW)', () => {
  it('restores the whole newest dump into a configured server through a real worker, with the job progress in BullMQ', async () => {
    const app = await openApp(config, logger(), { functions: [restoreBackup] });
    apps.push(app);
    await app.startWorkers();
    const { job } = await app.queues.enqueueTick('restoreBackup', { dataset: 'pg', backup: 'latest', into: 'scratch', tick: new Date().toISOString() });
    const { status } = await waitForJob(app, 'restoreBackup', job.id!);
    expect(status.state, status.failedReason).toBe('completed');
    const result = status.result as { backup: string; bytes: number; restored: { databases: string[] } };
    expect(result).toMatchObject({ ok: true, dataset: 'pg', backup: '20261121T020000Z', restored: { databases: expect.arrayContaining(['shop', 'notes']) } });
    // The last report reaches Redis whatever the throttle: the restore read every byte.
    expect(status.progress).toEqual({ phase: 'restoring', bytes: result.bytes, total: result.bytes });
    for (const db of ['shop', 'notes']) {
      expect(await psql(withDatabase(scratch.url, db), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, db), ITEMS_FINGERPRINT));
    }
  });

  it('restores one database under a new name, and refuses a second time without writing (it exists now)', async () => {
    const name = `lb_rb_${randomUUID().slice(0, 8)}`;
    try {
      const result = await runOnce(config, restoreBackup, { dataset: 'pg', backup: '20261120T020000Z', into: 'shared', database: 'shop', as: name });
      expect(result).toMatchObject({ backup: '20261120T020000Z', restored: { database: 'shop', as: name } });
      expect(await psql(withDatabase(PG_URL, name), 'select count(*) from items')).toBe('400');
      await psql(withDatabase(PG_URL, name), 'insert into items (id, label, price) values (100000, $$kept$$, 1)');
      await expect(runOnce(config, restoreBackup, { dataset: 'pg', backup: '20261120T020000Z', into: 'shared', database: 'shop', as: name })).rejects.toMatchObject({
        name: 'RestoreRefusedError', message: expect.stringContaining(`already has database "${name}"`),
      });
      expect(await psql(withDatabase(PG_URL, name), 'select count(*) from items')).toBe('401');
    } finally {
      await psql(PG_URL, `drop database if exists ${name} with (force)`);
    }
  });

  it('a bad request fails for good, naming the field, before anything is read: unknown restore target, wrong kind, unknown backup, as without database', async () => {
    await expect(runOnce(config, restoreBackup, { dataset: 'pg', backup: 'latest', into: 'prod' })).rejects.toMatchObject({ name: 'PermanentError', message: expect.stringMatching(/^into: "prod" is not in server.ui.restoreTargets \(known: scratch, shared, photos-copy\)/) });
    await expect(runOnce(config, restoreBackup, { dataset: 'pg', backup: 'latest', into: 'photos-copy' })).rejects.toMatchObject({ message: expect.stringContaining('into: restore target photos-copy is an s3 bucket') });
    await expect(runOnce(config, restoreBackup, { dataset: 'pg', backup: '20200101T000000Z', into: 'scratch' })).rejects.toMatchObject({ message: 'backup: dataset pg has no backup 20200101T000000Z' });
    await expect(runOnce(config, restoreBackup, { dataset: 'pg', backup: 'latest', into: 'scratch', as: 'x' })).rejects.toMatchObject({ name: 'InvalidInputError', message: expect.stringContaining('as') });
  });

  it('refuses a backup that failed verification', async () => {
    const key = 'pg/20261120T020000Z/pg_dumpall.sql.gz';
    const original = Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: pgBucket, Key: key }))).Body!.transformToByteArray());
    try {
      await hub.send(new PutObjectCommand({ Bucket: pgBucket, Key: key, Body: Buffer.from('rot') }));
      await runOnce(config, verifyObject, { dataset: 'pg', key }).catch(() => undefined);
      await expect(runOnce(config, restoreBackup, { dataset: 'pg', backup: '20261120T020000Z', into: 'shared', database: 'notes', as: 'never_made' })).rejects.toMatchObject({
        name: 'RestoreRefusedError', message: 'backup 20261120T020000Z of pg failed verification; choose another',
      });
      expect(await psql(PG_URL, "select count(*) from pg_database where datname = 'never_made'")).toBe('0');
    } finally {
      await hub.send(new PutObjectCommand({ Bucket: pgBucket, Key: key, Body: original }));
      await runOnce(config, verifyObject, { dataset: 'pg', key });
    }
  });

  it('restores a mirror into the bucket of an s3 restore target, creating it, every object equal', async () => {
    const report = await runOnce(config, restoreBackup, { dataset: 'photos', backup: 'latest', into: 'photos-copy' });
    expect(report).toMatchObject({ ok: true, to: { target: 'hub', bucket: restoredBucket, createdBucket: true }, copied: { count: 6 } });
    expect((await listKeys(hub, restoredBucket)).sort()).toEqual([0, 1, 2, 3, 4, 5].map((i) => `img/${i}.jpg`));
    const body = Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: restoredBucket, Key: 'img/5.jpg' }))).Body!.transformToByteArray());
    expect(body.equals(Buffer.alloc(2005, 5))).toBe(true);
  });
});
