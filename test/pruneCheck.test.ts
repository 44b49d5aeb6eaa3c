import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { CreateMultipartUploadCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pruneCheck } from '../functions/pruneCheck.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { forecast, appendSample } from '../lib/catalog/capacity.js';
import { listBackups } from '../lib/catalog/catalog.js';
import type { Config } from '../lib/config/schema.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { backupDir, tickStamp } from '../lib/catalog/layout.js';
import { LIFEBOAT_VERSION, type Manifest } from '../lib/catalog/manifest.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { rebuildMetrics } from '../lib/metrics/rebuild.js';
import { buildServer } from '../lib/server.js';
import type { TargetStore } from '../lib/targets/store.js';
import { runFunction } from '../queue/runner.js';
import { closeApps, createBucket, logger, multipartUploads, removeBucket, s3Client, s3Env, testConfig } from './helpers.js';

// Real Ceph RGW; time is injected through deps.clock, backups are written as dumpPostgres writes them.
const DAY = 86400_000;
const START = Date.parse('2026-10-01T02:00:00Z');
let client: S3Client;
const buckets: string[] = [];
const apps: App[] = [];

beforeAll(() => {
  client = s3Client();
});
afterAll(async () => {
  for (const b of buckets) await removeBucket(client, b);
  client.destroy();
});
afterEach(async () => closeApps(apps));

async function setup(daily: number, extra: Record<string, unknown> = {}) {
  const bucket = await createBucket(client);
  buckets.push(bucket);
  const config = testConfig({
    datasets: [{ id: 'db', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1/postgres' }, target: { name: 'hub', bucket }, retention: { daily } }],
    ...extra,
  });
  const deps = openLocal(config, logger());
  return { config, bucket, store: deps.storeFor(config.datasets[0]!) };
}

/** One nightly backup as dumpPostgres + verifyObject leave it: artifact, manifest, and a verify result. */
async function backup(store: TargetStore, config: Config, day: number, status: 'verified' | 'corrupt' | 'unverified', drill?: boolean) {
  const tick = new Date(START + day * DAY);
  const dir = backupDir(config.datasets[0]!, tick);
  const body = Buffer.from(`dump of day ${day}\n`.repeat(100));
  const put = await store.put(`${dir}pg_dumpall.sql`, Readable.from([body]));
  const manifest: Manifest = {
    format: 'lifeboat.manifest/v1', dataset: 'db', kind: 'postgres', tick: tick.toISOString(),
    artifact: { key: put.key, size: put.size, sha256: put.sha256, compression: 'none', contentType: 'application/sql', format: 'pg_dumpall' },
    source: { databases: ['postgres'] }, startedAt: tick.toISOString(), finishedAt: new Date(tick.getTime() + 60_000).toISOString(), durationMs: 60_000,
    writer: { lifeboat: LIFEBOAT_VERSION, jobId: 't', attempt: 1 },
  };
  await store.putJson(`${dir}manifest.json`, manifest);
  if (status !== 'unverified') {
    const ok = status === 'verified';
    await store.putJson(`${dir}verify.json`, { format: 'lifeboat.verify/v1', dataset: 'db', key: put.key, ok, checkedAt: new Date(tick.getTime() + 120_000).toISOString(), durationMs: 5, expected: { size: put.size, sha256: put.sha256 }, actual: { size: put.size, sha256: ok ? put.sha256 : '0'.repeat(64) }, checks: [] });
  }
  if (drill) await store.putJson(`${dir}drill.json`, { format: 'lifeboat.drill/v1', dataset: 'db', backup: tickStamp(tick), key: put.key, ok: true, mode: 'local', where: 'x', startedAt: new Date(tick.getTime() + 3600_000).toISOString(), finishedAt: new Date(tick.getTime() + 3660_000).toISOString(), durationMs: 60_000, restoreMs: 50_000, checks: [] });
}

async function prune(config: Config, at: number, input: Record<string, unknown> = {}) {
  const deps = createDeps({ config, logger: logger(), metrics: new MemoryMetricsRecorder(), clock: () => new Date(at) });
  const events: string[] = [];
  try {
    const value = (await runFunction(pruneCheck, input, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: at }, { deps, emit: async (e, p) => { events.push(e); await deps.metrics.onEvent(e, p); } })) as any;
    return { value, events, samples: await deps.metrics.samples() };
  } finally {
    await deps.close();
  }
}

const remaining = async (store: TargetStore, config: Config) => (await listBackups(store, config.datasets[0]!)).map((e) => `${e.id}:${e.status}`);

describe('pruneCheck retention on real RGW with an injected clock', () => {
  it('30 days of normal runs keep exactly N, and the dry-run plan is what the real run does', async () => {
    const { config, store } = await setup(14);
    for (let d = 0; d < 30; d++) await backup(store, config, d, 'verified');
    const at = START + 29 * DAY + 3 * 3600_000;
    const plan = await prune(config, at, { dryRun: true });
    expect((await remaining(store, config)).length).toBe(30);
    const real = await prune(config, at);
    expect(real.value.datasets[0].deleted).toEqual(plan.value.datasets[0].deleted);
    expect(real.value.datasets[0].deleted).toHaveLength(16);
    const left = await remaining(store, config);
    expect(left).toHaveLength(14);
    expect(left[0]).toBe(`${tickStamp(new Date(START + 29 * DAY))}:verified`);
    expect(left.at(-1)).toBe(`${tickStamp(new Date(START + 16 * DAY))}:verified`);
  });

  it('20 days of corrupt backups after 10 good days still keep N verified copies', async () => {
    const { config, store } = await setup(7);
    for (let d = 0; d < 10; d++) await backup(store, config, d, 'verified');
    for (let d = 10; d < 30; d++) await backup(store, config, d, 'corrupt');
    await prune(config, START + 29 * DAY + 3 * 3600_000);
    const left = await remaining(store, config);
    expect(left.filter((l) => l.endsWith(':verified'))).toEqual([9, 8, 7, 6, 5, 4, 3].map((d) => `${tickStamp(new Date(START + d * DAY))}:verified`));
    // Corrupt ones are garbage once out of the grace period; the newest stay until verification settles.
    expect(left.filter((l) => l.endsWith(':corrupt'))).toHaveLength(2);
  });

  it('20 days without any backup after 10 good days delete nothing the guard needs', async () => {
    const { config, store } = await setup(7);
    for (let d = 0; d < 10; d++) await backup(store, config, d, 'verified');
    const run = await prune(config, START + 29 * DAY);
    expect(run.value.datasets[0].deleted).toHaveLength(3);
    expect((await remaining(store, config)).filter((l) => l.endsWith(':verified'))).toHaveLength(7);
  });

  it('reads freshness from the target and aborts multipart uploads orphaned for over a day', async () => {
    const { config, store, bucket } = await setup(14);
    await backup(store, config, 0, 'verified', true);
    await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'db/orphan.bin' }));
    const soon = await prune(config, Date.now() + 3600_000);
    expect(soon.value.abortedUploads).toBe(0);
    const later = await prune(config, Date.now() + 2 * DAY);
    expect(later.value.abortedUploads).toBe(1);
    expect(await multipartUploads(client, bucket)).toEqual([]);
    expect(later.samples).toContainEqual({ name: 'lifeboat_backup_last_success_timestamp_seconds', labels: { dataset: 'db', kind: 'postgres' }, value: (START + 60_000) / 1000 });
    expect(later.samples).toContainEqual({ name: 'lifeboat_drill_last_success_timestamp_seconds', labels: { dataset: 'db', kind: 'postgres' }, value: (START + 3660_000) / 1000 });
  });

  it('measures capacity against the configured size and forecasts days until full from its history', async () => {
    const { store, bucket } = await setup(14);
    const config = testConfig({
      targets: { hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', capacityBytes: 100_000 } },
      datasets: [{ id: 'db', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1/postgres' }, target: { name: 'hub', bucket }, retention: { daily: 14 } }],
    });
    let last;
    for (let d = 0; d < 3; d++) {
      await backup(store, config, d, 'verified');
      last = await prune(config, START + d * DAY + 3 * 3600_000);
    }
    const used = last!.value.capacity[0].usedBytes;
    expect(used).toBeGreaterThan(3 * 1700);
    const days = last!.samples.find((s) => s.name === 'lifeboat_target_days_until_full')!.value;
    expect(days).toBeGreaterThan(0);
    expect(last!.samples).toContainEqual({ name: 'lifeboat_target_capacity_bytes', labels: { target: 'hub' }, value: 100_000 });
    expect(last!.samples.find((s) => s.name === 'lifeboat_dataset_bytes')?.value).toBe(used);
  });
});

describe('capacity forecast math', () => {
  it('fits growth by least squares and divides the free space by it', () => {
    const samples = [0, 1, 2, 3].map((d) => ({ at: new Date(Date.UTC(2026, 10, 1 + d)).toISOString(), usedBytes: 1000 + 100 * d }));
    expect(forecast(samples, 2000)).toEqual({ growthPerDay: 100, daysUntilFull: 7 });
    expect(forecast(samples, undefined)).toEqual({ growthPerDay: 100 });
    expect(forecast(samples.map((s) => ({ ...s, usedBytes: 1000 })), 2000)).toEqual({ growthPerDay: 0 });
    expect(forecast(samples.slice(0, 1), 2000)).toEqual({});
  });

  it('keeps one sample per day', () => {
    const a = appendSample([], { at: '2026-11-01T01:00:00.000Z', usedBytes: 1 });
    const b = appendSample(a, { at: '2026-11-01T05:00:00.000Z', usedBytes: 2 });
    expect(appendSample(b, { at: '2026-11-02T05:00:00.000Z', usedBytes: 3 })).toEqual([{ at: '2026-11-01T05:00:00.000Z', usedBytes: 2 }, { at: '2026-11-02T05:00:00.000Z', usedBytes: 3 }]);
  });
});

describe('metrics after Redis lost its state', () => {
  it('are rebuilt from the target: a restart never shows a timestamp of 0', async () => {
    const { config, store } = await setup(14);
    await backup(store, config, 0, 'verified', true);
    await backup(store, config, 1, 'verified');
    await backup(store, config, 2, 'corrupt');
    const app = await openApp(config, logger()); // a fresh key prefix: as after FLUSHALL
    apps.push(app);
    expect(await app.recorder.hasState()).toBe(false);
    // The newest good backup, the newest verification, the catalog (its corrupt backups) and the newest drill.
    expect(await rebuildMetrics(app.deps)).toBe(4);
    const http = await buildServer({ config, recorder: app.recorder, queues: app.queues });
    const body = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(body).toContain(`lifeboat_backup_last_success_timestamp_seconds{dataset="db",kind="postgres"} ${(START + DAY + 60_000) / 1000}`);
    expect(body).toContain(`lifeboat_verify_last_success_timestamp_seconds{dataset="db",kind="postgres"} ${(START + DAY + 120_000) / 1000}`);
    expect(body).toContain(`lifeboat_drill_last_success_timestamp_seconds{dataset="db",kind="postgres"} ${(START + 3660_000) / 1000}`);
    expect(body).toContain('lifeboat_backup_stale_threshold_seconds{dataset="db",kind="postgres"} 93600');
    expect(body).toContain('lifeboat_backups_corrupt{dataset="db",kind="postgres"} 1');
  });
});
