import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups } from '../../lib/catalog/catalog.js';
import { hashStream } from '../../lib/targets/hash.js';
import type { Config } from '../../lib/config/schema.js';
import { openApp, type App } from '../../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../../lib/postgres/cluster.js';
import { CLI, closeApps, createBucket, logger, multipartUploads, psql, removeBucket, s3Client, s3Env, testConfig } from '../helpers.js';

// Real worker processes (the built CLI) are SIGKILLed in the middle of a multipart upload to the real
// Ceph RGW, ten times over; a new worker must finish each job, with nothing partial ever visible.
// Stall detection runs with short settings (worker.lockDurationMs) so a trial takes seconds, not a minute.
const TRIALS = 10;
const LOCK_MS = 2000;
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let work: string;
let configFile: string;
let cfg: Config;
const apps: App[] = [];
const workers = new Set<ChildProcess>();

const datasetConfig = () => ({
  id: 'killme',
  kind: 'postgres',
  // A dump that stalls for a moment after its first 12 MiB: two parts are uploaded, the upload is open.
  source: { mode: 'direct', url: source.url, pgDumpall: join(work, 'slow-pg_dumpall') },
  target: { name: 'hub', bucket, prefix: 'kill/' },
  compression: 'none',
});

beforeAll(async () => {
  source = await startThrowawayCluster();
  await psql(source.url, "create table filler as select g as id, md5(g::text) || md5((g * 7)::text) as pad from generate_series(1, 300000) g");
  client = s3Client();
  bucket = await createBucket(client);
  work = await mkdtemp(join(tmpdir(), 'lb-kill-'));
  const wrapper = join(work, 'slow-pg_dumpall');
  await writeFile(wrapper, '#!/bin/bash\n[ "$1" = --version ] && exec pg_dumpall --version\nset -o pipefail\npg_dumpall "$@" | { dd bs=1M count=12 iflag=fullblock 2>/dev/null; sleep 2; cat; }\n');
  await chmod(wrapper, 0o755);
  const s3 = s3Env();
  configFile = join(work, 'lifeboat.yaml');
  cfg = testConfig({ datasets: [datasetConfig()] });
  await writeFile(
    configFile,
    JSON.stringify({
      redis: { url: cfg.redis.url, prefix: cfg.redis.prefix },
      worker: { lockDurationMs: LOCK_MS, stalledIntervalMs: 1000 },
      targets: { hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', partSizeMiB: 5 } },
      datasets: [datasetConfig()],
    }),
  );
});

afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await closeApps(apps);
  await source?.stop();
  await removeBucket(client, bucket);
  client.destroy();
  await rm(work, { recursive: true, force: true });
});

/** A `lifeboat worker` process for dumpPostgres, ready once it logs "worker started". */
async function startWorker(): Promise<ChildProcess> {
  const s3 = s3Env();
  const child = spawn(process.execPath, [CLI, 'worker', '--functions', 'dumpPostgres', '-c', configFile], {
    env: { ...process.env, TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  workers.add(child);
  child.on('exit', () => workers.delete(child));
  let log = '';
  child.stdout!.on('data', (c) => (log += c));
  child.stderr!.on('data', (c) => (log += c));
  for (const deadline = Date.now() + 20_000; !log.includes('worker started'); await sleep(50)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`worker did not start:\n${log}`);
  }
  return child;
}

async function until<T>(what: string, read: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(25)) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
  }
}

const visible = (key: string) => client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).then(() => true, () => false);

describe(`kill -9 of a worker mid-upload, ${TRIALS} times (real CLI workers, Redis, RGW)`, () => {
  it('a new worker finishes every job; nothing partial is visible; the new attempt aborts the dead one\'s upload at once', async () => {
    const app = await openApp(cfg, logger());
    apps.push(app);
    const recoveries: number[] = [];
    let worker = await startWorker();
    for (let trial = 0; trial < TRIALS; trial++) {
      const tick = new Date(Date.UTC(2026, 10, 1 + trial, 2)).toISOString();
      const stamp = tick.replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
      const key = `kill/killme/${stamp}/pg_dumpall.sql`;
      const job = await app.queues.enqueue('dumpPostgres', { dataset: 'killme', tick });
      // Mid-upload: parts are on the hub, the upload is open.
      await until('multipart upload open', async () => ((await multipartUploads(client, bucket)).includes(key) ? true : undefined), 30_000);
      worker.kill('SIGKILL');
      const killedAt = Date.now();
      await until('killed worker gone', async () => (worker.exitCode !== null || worker.signalCode !== null ? true : undefined), 5000);
      expect(await visible(key), `trial ${trial}: partial object visible after the kill`).toBe(false);

      worker = await startWorker();
      // The new attempt aborts the dead attempt's upload for the same key before it starts its own.
      const result = (await app.queues.waitFor('dumpPostgres', job.id!, 60_000)) as { key: string; sha256: string };
      recoveries.push(Date.now() - killedAt);
      expect(result.key).toBe(key);
      expect(await multipartUploads(client, bucket), `trial ${trial}: orphan uploads`).toEqual([]);
      const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      expect((await hashStream(got.Body as NodeJS.ReadableStream)).sha256).toBe(result.sha256);
    }
    const backups = await listBackups(app.deps.storeFor(app.config.datasets[0]!), app.config.datasets[0]!);
    expect(backups).toHaveLength(TRIALS);
    // Recovery: stall detection (lockDurationMs + stalledIntervalMs) plus the re-run of the dump.
    const sorted = [...recoveries].sort((a, b) => a - b);
    console.log(`recovery after kill -9, ${TRIALS} trials: min ${sorted[0]} ms, median ${sorted[sorted.length >> 1]} ms, max ${sorted.at(-1)} ms (lockDurationMs ${LOCK_MS})`);
    worker.kill('SIGTERM');
  }, 600_000);
});
