import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { listBackups } from '../lib/catalog/catalog.js';
import type { Config } from '../lib/config/schema.js';
import { manifestSchema, verifyRecordSchema } from '../lib/catalog/manifest.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { libpqEnv } from '../lib/postgres/connection.js';
import { runFunction } from '../queue/runner.js';
import { closeApps, createBucket, listKeys, logger, multipartUploads, psql, removeBucket, s3Client, testConfig } from './helpers.js';

// Real PostgreSQL 15 (a throwaway cluster per file, so other test files' databases never race the dump),
// real Redis, real Ceph RGW.
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let scripts: string;
const apps: App[] = [];

const ROWS = { alpha: 3000, beta: 2000, gamma: 1500 };

beforeAll(async () => {
  source = await startThrowawayCluster();
  for (const [db, rows] of Object.entries(ROWS)) {
    await psql(source.url, `create database ${db}`);
    const url = source.url.replace('/postgres?', `/${db}?`);
    await psql(url, `create table items (id int primary key, label text, price numeric(8,2)); insert into items select g, 'item ' || g, g * 1.25 from generate_series(1, ${rows}) g`);
  }
  client = s3Client();
  bucket = await createBucket(client);
  scripts = await mkdtemp(join(tmpdir(), 'lb-pgwrap-'));
});

afterAll(async () => {
  await source?.stop();
  await removeBucket(client, bucket);
  client.destroy();
});

afterEach(async () => closeApps(apps));

function config(overrides: Record<string, unknown> = {}, sourceOverrides: Record<string, unknown> = {}): Config {
  return testConfig({
    datasets: [
      {
        id: 'main',
        kind: 'postgres',
        source: { mode: 'direct', url: source.url, ...sourceOverrides },
        target: { name: 'hub', bucket, prefix: 'nightly/' },
        schedule: '0 2 * * *',
        ...overrides,
      },
    ],
  });
}

async function wrapper(name: string, body: string): Promise<string> {
  const path = join(scripts, name);
  // --version passes through: the version check runs before the dump.
  await writeFile(path, `#!/bin/bash\n[ "$1" = --version ] && exec pg_dumpall --version\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

async function objectBytes(key: string): Promise<Buffer> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** One attempt of a function, the way a worker would run it, without the queue. */
async function attempt(cfg: Config, fn: typeof dumpPostgres | typeof verifyObject, data: unknown) {
  const deps = openLocal(cfg, logger());
  const emitted: unknown[] = [];
  try {
    const result = await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async (event, payload) => { emitted.push({ event, payload }); } });
    return { result, emitted, deps };
  } finally {
    await deps.close();
  }
}

describe('dumpPostgres → verifyObject on real Postgres, Redis and RGW', () => {
  it('dumps three databases; the manifest matches the bytes, verification runs by fan-out, and the dump restores', async () => {
    const cfg = config();
    const app = await openApp(cfg, logger());
    apps.push(app);
    await app.startWorkers();
    const tick = '2026-11-26T02:00:00.000Z';
    const job = await app.queues.enqueue('dumpPostgres', { dataset: 'main', tick });
    const result = (await app.queues.waitFor('dumpPostgres', job.id!, 60_000)) as { key: string };
    expect(result.key).toBe('nightly/main/20261126T020000Z/pg_dumpall.sql.gz');

    const bytes = await objectBytes(result.key);
    const manifest = manifestSchema.parse(JSON.parse((await objectBytes('nightly/main/20261126T020000Z/manifest.json')).toString()));
    expect(manifest.artifact).toMatchObject({ key: result.key, size: bytes.length, sha256: sha256(bytes), compression: 'gzip', format: 'pg_dumpall' });
    expect(manifest.source.databases).toEqual(['alpha', 'beta', 'gamma', 'postgres', 'template1']);
    expect(manifest.source.serverVersion).toMatch(/^15\./);
    expect(manifest.tick).toBe(tick);

    // verifyObject was fanned out and wrote verify.json beside the dump.
    let verify;
    for (let i = 0; i < 100 && !verify; i++) {
      const keys = await listKeys(client, bucket, 'nightly/main/20261126T020000Z/');
      if (keys.includes('nightly/main/20261126T020000Z/verify.json')) verify = verifyRecordSchema.parse(JSON.parse((await objectBytes('nightly/main/20261126T020000Z/verify.json')).toString()));
      else await sleep(100);
    }
    expect(verify).toMatchObject({ ok: true, actual: { size: bytes.length, sha256: sha256(bytes) } });
    expect(verify!.checks.map((c) => [c.name, c.ok])).toEqual([['manifest', true], ['size', true], ['sha256', true], ['gzip', true], ['pg_dumpall trailer', true]]);
    // The same event again (a duplicate delivery) does not verify the same object twice.
    await app.emit('backup.uploaded', {
      dataset: 'main', kind: 'postgres', target: 'hub', bucket, key: result.key, etag: manifest.artifact.etag, size: bytes.length,
      sha256: manifest.artifact.sha256, startedAt: manifest.startedAt, finishedAt: manifest.finishedAt,
    });
    // verify.json is written before the job completes and its metric is recorded: poll for what is asserted.
    const counts = () => app.queues.queue('verifyObject').getJobCounts('completed', 'waiting', 'active', 'delayed');
    const verifiedMetric = async () => (await app.recorder.samples()).some((s) => s.name === 'lifeboat_verify_last_success_timestamp_seconds');
    for (const deadline = Date.now() + 10_000; Date.now() < deadline && !((await counts()).completed === 1 && (await verifiedMetric())); ) await sleep(50);
    await sleep(300); // give a wrongly duplicated job the chance to appear
    expect(await counts()).toEqual({ completed: 1, waiting: 0, active: 0, delayed: 0 });
    const samples = await app.recorder.samples();
    expect(samples).toContainEqual({ name: 'lifeboat_backup_size_bytes', labels: { dataset: 'main', kind: 'postgres' }, value: bytes.length });
    expect(samples.find((s) => s.name === 'lifeboat_verify_last_success_timestamp_seconds')?.value).toBeGreaterThan(0);

    // The dump loads into a fresh cluster and has every row.
    const restored = await startThrowawayCluster();
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=0', '--dbname', restored.url], { env: libpqEnv({ url: restored.url }), stdio: ['pipe', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (c) => (stderr += c));
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(stderr))));
        child.stdin.end(gunzipSync(bytes));
      });
      for (const [db, rows] of Object.entries(ROWS)) {
        const query = 'select count(*), sum(price), md5(string_agg(label, \',\' order by id)) from items';
        const original = await psql(source.url.replace('/postgres?', `/${db}?`), query);
        expect(original.startsWith(`${rows}|`)).toBe(true);
        expect(await psql(restored.url.replace('/postgres?', `/${db}?`), query)).toBe(original);
      }
    } finally {
      await restored.stop();
    }
  });

  it('a re-run of the same tick overwrites the same keys', async () => {
    const cfg = config({ compression: 'none' });
    const tick = '2026-11-20T02:00:00.000Z';
    const first = await attempt(cfg, dumpPostgres, { dataset: 'main', tick });
    const keysAfterFirst = await listKeys(client, bucket, 'nightly/main/20261120T020000Z/');
    const second = await attempt(cfg, dumpPostgres, { dataset: 'main', tick });
    expect(second.result).toMatchObject({ key: (first.result as { key: string }).key });
    expect(await listKeys(client, bucket, 'nightly/main/20261120T020000Z/')).toEqual(keysAfterFirst);
    expect(keysAfterFirst).toEqual(['nightly/main/20261120T020000Z/manifest.json', 'nightly/main/20261120T020000Z/pg_dumpall.sql']);
    expect(first.emitted).toEqual([{ event: 'backup.uploaded', payload: expect.objectContaining({ dataset: 'main', key: 'nightly/main/20261120T020000Z/pg_dumpall.sql' }) }]);
  });

  it('a byte-flipped object on RGW is reported corrupt, permanently, and shows as corrupt in the catalog', async () => {
    const cfg = config();
    const tick = '2026-11-21T02:00:00.000Z';
    const { result } = await attempt(cfg, dumpPostgres, { dataset: 'main', tick });
    const key = (result as { key: string }).key;
    const bytes = await objectBytes(key);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = bytes[middle]! ^ 0xff;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));

    const deps = openLocal(cfg, logger());
    const emitted: Array<{ event: string; payload: unknown }> = [];
    await expect(
      runFunction(verifyObject, { dataset: 'main', key }, { jobId: 'v', attempt: 1, maxAttempts: 5, createdAt: Date.now() }, { deps, emit: async (event, payload) => { emitted.push({ event, payload }); await deps.metrics.onEvent(event, payload); } }),
    ).rejects.toMatchObject({ name: 'CorruptBackupError', message: expect.stringMatching(/sha256: [0-9a-f]{64} differs from the manifest's/) });
    expect(emitted.map((e) => e.event)).toEqual(['backup.corrupt']);
    expect(await deps.metrics.samples()).toContainEqual({ name: 'lifeboat_verify_failures_total', labels: { dataset: 'main', kind: 'postgres' }, value: 1 });
    const verify = verifyRecordSchema.parse(JSON.parse((await objectBytes(key.replace('pg_dumpall.sql.gz', 'verify.json'))).toString()));
    expect(verify.ok).toBe(false);
    expect(verify.checks.find((c) => c.name === 'sha256')?.ok).toBe(false);
    const entry = (await listBackups(deps.storeFor(cfg.datasets[0]!), cfg.datasets[0]!)).find((e) => e.manifest.artifact.key === key);
    expect(entry?.status).toBe('corrupt');
    await deps.close();
  });

  it('pg_dumpall killed mid-stream leaves no object, no manifest and no multipart upload', async () => {
    const pidFile = join(scripts, 'killed.pid');
    // Real pg_dumpall output, then a hang: the test kills the process while the multipart upload is open.
    const script = await wrapper('hang-after-12mb', `echo $$ > ${pidFile}\npg_dumpall "$@" | head -c 12000000\nexec sleep 600`);
    await psql(source.url.replace('/postgres?', '/alpha?'), `create table if not exists bulk as select g, md5(g::text) || repeat('x', 200) as pad from generate_series(1, 80000) g`);
    const cfg = config({ compression: 'none' }, { pgDumpall: script });
    const tick = '2026-11-22T02:00:00.000Z';
    const run = attempt(cfg, dumpPostgres, { dataset: 'main', tick });
    run.catch(() => {});
    const deadline = Date.now() + 30_000;
    while ((await multipartUploads(client, bucket)).length === 0 && Date.now() < deadline) await sleep(20);
    expect(await multipartUploads(client, bucket)).toEqual(['nightly/main/20261122T020000Z/pg_dumpall.sql']);
    process.kill(Number(await readFile(pidFile, 'utf8')), 'SIGKILL');
    await expect(run).rejects.toThrow(/was killed by SIGKILL/);
    expect(await listKeys(client, bucket, 'nightly/main/20261122T020000Z/')).toEqual([]);
    expect(await multipartUploads(client, bucket)).toEqual([]);
    await psql(source.url.replace('/postgres?', '/alpha?'), 'drop table bulk');
  });

  it('output without the completion trailer fails even when pg_dumpall exits 0', async () => {
    const script = await wrapper('truncated', 'pg_dumpall "$@" | head -c -300');
    const cfg = config({}, { pgDumpall: script });
    await expect(attempt(cfg, dumpPostgres, { dataset: 'main', tick: '2026-11-23T02:00:00.000Z' })).rejects.toMatchObject({ name: 'DumpIncompleteError' });
    expect(await listKeys(client, bucket, 'nightly/main/20261123T020000Z/')).toEqual([]);
    expect(await multipartUploads(client, bucket)).toEqual([]);
  });

  it('a pg_dumpall older than the server is refused with a clear, permanent error', async () => {
    const script = join(scripts, 'old-client');
    await writeFile(script, '#!/bin/bash\n[ "$1" = --version ] && { echo "pg_dumpall (PostgreSQL) 14.11"; exit 0; }\nexec pg_dumpall "$@"\n');
    await chmod(script, 0o755);
    const cfg = config({}, { pgDumpall: script });
    await expect(attempt(cfg, dumpPostgres, { dataset: 'main', tick: '2026-11-24T02:00:00.000Z' })).rejects.toMatchObject({
      name: 'PermanentError',
      message: expect.stringMatching(/is version 14 but the server of dataset main runs 15\..*Install the PostgreSQL 15 client/),
    });
    expect(await listKeys(client, bucket, 'nightly/main/20261124T020000Z/')).toEqual([]);
  });
});

describe('dumpPostgres against a server that requires a password', () => {
  let secured: ThrowawayCluster;
  beforeAll(async () => {
    secured = await startThrowawayCluster({ password: 'right-password' });
  });
  afterAll(async () => secured?.stop());

  const securedConfig = () =>
    testConfig({
      datasets: [{ id: 'sec', kind: 'postgres', source: { mode: 'direct', url: secured.url, password: '${env:TEST_PG_PASSWORD}' }, target: { name: 'hub', bucket } }],
    });

  it('a wrong password is a permanent failure that leaves no object and never shows the password', async () => {
    process.env.TEST_PG_PASSWORD = 'wrong-password';
    const cfg = securedConfig();
    const failure = await attempt(cfg, dumpPostgres, { dataset: 'sec', tick: '2026-11-25T02:00:00.000Z' }).catch((e: Error) => e);
    expect(failure).toMatchObject({ name: 'PermanentError', message: expect.stringMatching(/password authentication failed for user "postgres"/) });
    expect(String((failure as Error).message)).not.toContain('wrong-password');
    expect(await listKeys(client, bucket, 'sec/')).toEqual([]);
    expect(await multipartUploads(client, bucket)).toEqual([]);
  });

  it('the right password from an env reference works', async () => {
    process.env.TEST_PG_PASSWORD = 'right-password';
    const cfg = securedConfig();
    const { result } = await attempt(cfg, dumpPostgres, { dataset: 'sec', tick: '2026-11-25T02:00:00.000Z' });
    expect(result).toMatchObject({ key: 'sec/20261125T020000Z/pg_dumpall.sql.gz', databases: ['postgres', 'template1'] });
  });
});
