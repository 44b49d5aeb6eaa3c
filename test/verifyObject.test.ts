import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { pruneCheck } from '../functions/pruneCheck.js';
import { verifyObject, type VerifyFinding } from '../functions/verifyObject.js';
import { openApp, type App } from '../lib/plumbing/app.js';
import { listBackups } from '../lib/catalog/catalog.js';
import type { Config, Dataset } from '../lib/config/schema.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { drillRecordSchema, verifyRecordSchema } from '../lib/catalog/manifest.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { planScrub, type ScrubCandidate } from '../lib/catalog/scrub.js';
import { buildServer } from '../lib/server.js';
import { foreignVerifyKey } from '../lib/catalog/verify.js';
import type { AnyFunction } from '../queue/define.js';
import type { Emit } from '../queue/runner.js';
import { runFunction } from '../queue/runner.js';
import { closeApps, createBucket, logger, removeBucket, runCli, s3Client, s3Env, seedDatabases, testConfig, type CliRun } from './helpers.js';
import { startPrometheus, type LivePrometheus } from './livePrometheus.js';

// Real PostgreSQL (a throwaway cluster), real Ceph RGW and a real directory target. Corruption is made
// the two ways it happens on a hub: an overwrite through S3 (a new ETag), and rot in place on the disk
// (the same ETag, which nothing but a re-read can find). Time is injected through deps.clock.
const DAY = 86400_000;
const MINUTE = 60_000;
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let dataDir: string;
let work: string;
const apps: App[] = [];

beforeAll(async () => {
  source = await startThrowawayCluster();
  await seedDatabases(source.url, { alpha: 400 });
  client = s3Client();
  bucket = await createBucket(client);
  work = await mkdtemp(join(tmpdir(), 'lb-verify-'));
  dataDir = join(work, 'data');
});

afterAll(async () => {
  await source?.stop();
  await removeBucket(client, bucket);
  client.destroy();
  await rm(work, { recursive: true, force: true });
});

afterEach(async () => closeApps(apps));

/** Two datasets per test: one on RGW, one on a directory, each under its own prefix. */
function config(label: string, extra: { retention?: unknown } = {}): Config {
  const dataset = (id: string, target: string) => ({
    id, kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: target, bucket: target === 'hub' ? bucket : 'postgres', prefix: `${label}/` },
    ...(extra.retention ? { retention: extra.retention } : {}),
  });
  return testConfig({
    targets: { disk: { kind: 'dir', path: dataDir } },
    datasets: [dataset('s3db', 'hub'), dataset('diskdb', 'disk')],
  });
}

const withScrub = (cfg: Config, scrub: Partial<Config['verify']['scrub']>): Config => ({ ...cfg, verify: { scrub: { ...cfg.verify.scrub, ...scrub } } });

interface Outcome {
  ok: boolean;
  value?: any;
  error?: any;
  events: Array<{ event: string; payload: any }>;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

/** One attempt of a function at an injected time, with metrics in memory. */
async function runAt(cfg: Config, fn: AnyFunction, data: unknown, at: number, meta: { attempt?: number; maxAttempts?: number } = {}): Promise<Outcome> {
  const deps = createDeps({ config: cfg, logger: logger(), metrics: new MemoryMetricsRecorder(), clock: () => new Date(at) });
  const events: Outcome['events'] = [];
  const emit: Emit = async (event, payload) => {
    events.push({ event, payload });
    await deps.metrics.onEvent(event, payload);
  };
  try {
    const value = await runFunction(fn, data, { jobId: 't', attempt: meta.attempt ?? 1, maxAttempts: meta.maxAttempts ?? 1, createdAt: at }, { deps, emit });
    return { ok: true, value, events, samples: await deps.metrics.samples() };
  } catch (error) {
    return { ok: false, error, events, samples: await deps.metrics.samples() };
  } finally {
    await deps.close();
  }
}

const datasetOf = (cfg: Config, id: string) => cfg.datasets.find((d) => d.id === id)!;
const storeOf = (cfg: Config, id: string) => createDeps({ config: cfg, logger: logger(), metrics: new MemoryMetricsRecorder() }).storeFor(datasetOf(cfg, id));

/** A nightly dump and its verification by fan-out, as dumpPostgres and verifyObject leave them. */
async function nightly(cfg: Config, id: string, tick: number): Promise<string> {
  const dump = await runAt(cfg, dumpPostgres, { dataset: id, tick: new Date(tick).toISOString() }, tick);
  if (!dump.ok) throw dump.error;
  const key = dump.value.key as string;
  const verified = await runAt(cfg, verifyObject, { dataset: id, key }, tick + MINUTE);
  if (!verified.ok) throw verified.error;
  return key;
}

/** Rewrites the object through S3 with one byte flipped: what a bad writer or a bit flip on upload leaves. */
async function flipThroughS3(key: string): Promise<void> {
  const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = Buffer.from(await got.Body!.transformToByteArray());
  bytes[bytes.length >> 1]! ^= 0x01;
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));
}

/** Flips one byte of the file in place and puts its mtime back: disk rot, invisible to size, mtime and ETag. */
async function rotInPlace(key: string): Promise<void> {
  const file = join(dataDir, 'postgres', ...key.split('/'));
  const before = await stat(file);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1]! ^= 0x01;
  await writeFile(file, bytes);
  await utimes(file, before.atimeMs / 1000, before.mtimeMs / 1000);
}

/** The built CLI with a config file; Redis points at a closed port, since none of these commands may need it. */
async function lifeboat(cfg: Config, args: string[]): Promise<CliRun> {
  const file = join(work, `lifeboat-${Math.random().toString(36).slice(2)}.yaml`);
  const s3 = s3Env();
  const lines = [
    'redis: { url: "redis://127.0.0.1:1" }',
    'targets:',
    `  hub: { kind: s3, endpoint: "${s3.endpoint}", accessKeyId: "\${env:TEST_S3_ACCESS_KEY}", secretAccessKey: "\${env:TEST_S3_SECRET_KEY}" }`,
    `  disk: { kind: dir, path: "${dataDir}" }`,
    'datasets:',
    ...cfg.datasets.map((d) => `  - { id: ${d.id}, kind: postgres, source: { mode: direct, url: "${source.url}" }, target: { name: ${d.target.name}, bucket: ${d.target.bucket}, prefix: "${d.target.prefix}" } }`),
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  return runCli(['-c', file, ...args], { env: { TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'fatal' } });
}

const T0 = Date.parse('2026-11-10T02:00:00Z');

describe('corruption after verification, on real RGW and a real directory', () => {
  it('a byte flipped through S3 (a new ETag): the catalog stops vouching, the scrub finds it, verify, restore and the drill refuse it', async () => {
    const cfg = config('s3flip');
    const key = await nightly(cfg, 's3db', T0);
    const store = storeOf(cfg, 's3db');
    expect((await listBackups(store, datasetOf(cfg, 's3db')))[0]).toMatchObject({ status: 'verified' });

    await flipThroughS3(key);
    // The old good verdict no longer stands: it read other bytes.
    const [changed] = await listBackups(store, datasetOf(cfg, 's3db'));
    expect(changed).toMatchObject({ status: 'unverified', changedSinceVerified: expect.stringContaining('rewritten after it was verified') });

    const scrub = await runAt(cfg, verifyObject, { scrub: true, dataset: 's3db' }, T0 + 3600_000);
    expect(scrub.ok).toBe(false);
    expect(scrub.error).toMatchObject({ name: 'CorruptBackupError', message: expect.stringContaining('scrub: 1 of 1 corrupt') });
    expect(scrub.events.map((e) => e.event)).toEqual(['backup.corrupt']);
    expect(scrub.samples).toContainEqual({ name: 'lifeboat_backups_corrupt', labels: { dataset: 's3db', kind: 'postgres' }, value: 1 });
    const record = verifyRecordSchema.parse(await store.getJson(key.replace(/[^/]+$/, 'verify.json')));
    expect(record.history?.map((h) => [h.ok, h.trigger])).toEqual([[false, 'scrub'], [true, 'upload']]);
    expect(record.checks.find((c) => c.name === 'sha256')).toMatchObject({ ok: false });
    expect((await listBackups(store, datasetOf(cfg, 's3db')))[0]).toMatchObject({ status: 'corrupt' });

    const verify = await lifeboat(cfg, ['verify', 's3db']);
    expect(verify.code, verify.stderr).toBe(1);
    expect(verify.stdout).toMatch(/^BACKUP\s+SIZE\s+CHECKS\s+RESULT\s+DETAIL/m);
    expect(verify.stdout).toMatch(/^20261110T020000Z\s+\S+ \S+\s+\d+\s+CORRUPT\s+size|sha256/m);
    expect(verify.stdout).toContain('s3db: 0 of 1 verified, 1 CORRUPT');

    const restore = await lifeboat(cfg, ['restore', 's3db', '--to', source.url]);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toContain('failed verification');
    const forced = await lifeboat(cfg, ['restore', 's3db', '--to', source.url, '--force']);
    expect(forced.code).toBe(1);
    expect(forced.stderr).toContain('refusing to restore');

    // The drill fails on its first attempt of two: a damaged backup is final, not retried or swapped for another.
    const drill = await runAt(cfg, drillRestore, { dataset: 's3db', backup: '20261110T020000Z' }, T0 + 2 * 3600_000, { attempt: 1, maxAttempts: 2 });
    expect(drill.ok).toBe(false);
    expect(drill.error.name).toBe('DrillFailedError');
    const drilled = drillRecordSchema.parse(await store.getJson(key.replace(/[^/]+$/, 'drill.json')));
    expect(drilled.ok).toBe(false);
    expect(drilled.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(expect.arrayContaining([expect.stringMatching(/^(gzip|sha256)$/)]));
    expect(drill.events).toContainEqual({ event: 'drill.completed', payload: expect.objectContaining({ ok: false }) });
    expect(drill.samples).toContainEqual({ name: 'lifeboat_drill_failures_total', labels: { dataset: 's3db', kind: 'postgres' }, value: 1 });
  });

  it('a byte rotted in place on the directory target (the same ETag): found by the scrub once due, by verify, refused by restore, failed by the drill', async () => {
    const cfg = config('rot');
    const key = await nightly(cfg, 'diskdb', T0);
    const store = storeOf(cfg, 'diskdb');
    // A drill that passes first, so the failing drill's table below cannot be this one's.
    const passing = await lifeboat(cfg, ['drill', 'diskdb']);
    expect(passing.code, passing.stderr).toBe(0);
    expect(passing.stdout).toContain('drill of diskdb backup 20261110T020000Z: passed');

    const etag = (await store.head(key))!.etag;
    await rotInPlace(key);
    expect((await store.head(key))!.etag).toBe(etag);
    // Nothing short of a re-read can know.
    expect((await listBackups(store, datasetOf(cfg, 'diskdb')))[0]).toMatchObject({ status: 'verified' });

    const early = await runAt(cfg, verifyObject, { scrub: true, dataset: 'diskdb' }, T0 + DAY);
    expect(early).toMatchObject({ ok: true, value: { checked: 0, notDue: 1 } });
    const due = await runAt(cfg, verifyObject, { scrub: true, dataset: 'diskdb' }, T0 + 30 * DAY);
    expect(due.ok).toBe(false);
    expect(due.error.findings).toEqual([expect.objectContaining({ backup: '20261110T020000Z', ok: false })]);

    const verify = await lifeboat(cfg, ['verify', 'diskdb', '--backup', 'all', '--json']);
    expect(verify.code).toBe(1);
    const rows = verify.stdout.trim().split('\n').map((l) => JSON.parse(l) as VerifyFinding);
    expect(rows).toEqual([expect.objectContaining({ backup: '20261110T020000Z', ok: false, reason: expect.stringMatching(/sha256|gzip/) })]);

    const restore = await lifeboat(cfg, ['restore', 'diskdb', '--to', source.url, '--force']);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toContain('does not match its manifest');

    const drill = await lifeboat(cfg, ['drill', 'diskdb', '--backup', '20261110T020000Z']);
    expect(drill.code).toBe(1);
    expect(drill.stdout).toMatch(/^(gzip|sha256)\s+FAILED/m);
    expect(drill.stdout).toContain('drill of diskdb backup 20261110T020000Z: FAILED');
    expect(drill.stdout).not.toContain('passed');
    expect(drillRecordSchema.parse(await store.getJson(key.replace(/[^/]+$/, 'drill.json'))).ok).toBe(false);
  });

  it('`lifeboat verify` exits 0 for good backups, 2 for a usage error; `run verifyObject --dataset x --inline` works', async () => {
    const cfg = config('good');
    await nightly(cfg, 'diskdb', T0);
    const ok = await lifeboat(cfg, ['verify', 'diskdb', '--backup', 'latest']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^20261110T020000Z\s+\S+ \S+\s+\d+\s+ok/m);
    expect((await lifeboat(cfg, ['verify', 'nope'])).code).toBe(2);
    expect((await lifeboat(cfg, ['verify'])).code).toBe(2);
    const missing = await lifeboat(cfg, ['verify', 'diskdb', '--backup', '20200101T000000Z']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('has no backup 20200101T000000Z (have: 20261110T020000Z)');
    const run = await lifeboat(cfg, ['run', 'verifyObject', '--dataset', 'diskdb', '--inline']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim().split('\n')[0]!)).toMatchObject({ fn: 'verifyObject', ok: true, result: { findings: [expect.objectContaining({ ok: true })] } });
    const record = verifyRecordSchema.parse(await storeOf(cfg, 'diskdb').getJson('good/diskdb/20261110T020000Z/verify.json'));
    expect(record.history?.map((h) => h.trigger)).toEqual(['manual', 'manual', 'upload']);
  });
});

describe('retention re-proves what it keeps', () => {
  it('5 backups, the 3 newest overwritten through S3 after verification: the 2 intact ones are kept', async () => {
    const cfg = config('keep5', { retention: { daily: 2 } });
    const keys: string[] = [];
    for (let day = 0; day < 5; day++) keys.push(await nightly(cfg, 's3db', T0 + day * DAY));
    for (const key of keys.slice(2)) await flipThroughS3(key);
    const prune = await runAt(cfg, pruneCheck, { dataset: 's3db' }, T0 + 10 * DAY);
    expect(prune.ok, String(prune.error)).toBe(true);
    const outcome = prune.value.datasets[0];
    expect(outcome.reproved).toEqual([
      { id: '20261114T020000Z', ok: false }, { id: '20261113T020000Z', ok: false }, { id: '20261112T020000Z', ok: false },
    ]);
    const left = (await listBackups(storeOf(cfg, 's3db'), datasetOf(cfg, 's3db'))).map((e) => `${e.id}:${e.status}`);
    expect(left).toEqual(['20261111T020000Z:verified', '20261110T020000Z:verified']);
  });

  it('the same with rot in place (same ETag): checks older than everyDays are re-read before anything is deleted', async () => {
    const cfg = config('rot5', { retention: { daily: 2 } });
    const keys: string[] = [];
    for (let day = 0; day < 5; day++) keys.push(await nightly(cfg, 'diskdb', T0 + day * DAY));
    for (const key of keys.slice(2)) await rotInPlace(key);
    const prune = await runAt(cfg, pruneCheck, { dataset: 'diskdb' }, T0 + 40 * DAY);
    expect(prune.ok, String(prune.error)).toBe(true);
    expect(prune.value.datasets[0].reproved.filter((r: { ok: boolean }) => !r.ok).map((r: { id: string }) => r.id)).toEqual(['20261114T020000Z', '20261113T020000Z', '20261112T020000Z']);
    const left = (await listBackups(storeOf(cfg, 'diskdb'), datasetOf(cfg, 'diskdb'))).map((e) => `${e.id}:${e.status}`);
    expect(left).toEqual(['20261111T020000Z:verified', '20261110T020000Z:verified']);
  });

  it('a folder whose manifest cannot be read is reported and kept, never dropped silently', async () => {
    const cfg = config('badmanifest');
    const key = await nightly(cfg, 'diskdb', T0);
    const store = storeOf(cfg, 'diskdb');
    await store.put(key.replace(/[^/]+$/, 'manifest.json'), Readable.from([Buffer.from('{"format": "lifeboat.manifest/v1", "trunc')]));
    const prune = await runAt(cfg, pruneCheck, { dataset: 'diskdb' }, T0 + 10 * DAY);
    expect(prune.ok, String(prune.error)).toBe(true);
    expect(prune.value.datasets[0].unreadable).toEqual(['20261110T020000Z']);
    expect(await store.head(key)).toBeDefined();
    const ls = await lifeboat(cfg, ['backups', 'ls', '--dataset', 'diskdb']);
    expect(ls.stdout).toMatch(/diskdb\s+20261110T020000Z\s+\d+ (s|min) ago\s+\S+ \S+\s+\d+\s+unreadable manifest/);
  });
});

describe('the scrub: what is due, and the objects other tools wrote', () => {
  const dataset = { id: 'x' } as Dataset;
  const candidate = (id: string, bytes: number, lastChecked?: number): ScrubCandidate => ({ dataset, id, key: id, bytes, lastChecked: lastChecked === undefined ? undefined : new Date(lastChecked) });
  const now = new Date(T0 + 100 * DAY);

  it('never-checked first, then oldest check first; due one interval early so nothing slips past everyDays', () => {
    const plan = planScrub([candidate('fresh', 1, now.getTime() - 5 * DAY), candidate('old', 1, now.getTime() - 40 * DAY), candidate('never', 1), candidate('edge', 1, now.getTime() - 29.5 * DAY)], { now, everyDays: 30, intervalMs: DAY });
    expect(plan.check.map((c) => c.id)).toEqual(['never', 'old', 'edge']);
    expect(plan.notDue).toBe(1);
  });

  it('stops at maxBytesPerRun, always taking the first due one; the rest is first next time', () => {
    const plan = planScrub([candidate('a', 500, 1), candidate('b', 400, 2), candidate('c', 300, 3)], { now, everyDays: 30, intervalMs: DAY, maxBytesPerRun: 800 });
    expect(plan.check.map((c) => c.id)).toEqual(['a']);
    expect(plan.deferred.map((c) => c.id)).toEqual(['b', 'c']);
    expect(planScrub([candidate('huge', 5000, 1)], { now, everyDays: 30, intervalMs: DAY, maxBytesPerRun: 10 }).check.map((c) => c.id)).toEqual(['huge']);
  });

  it('is a cron trigger of verifyObject (daily at 06:00 by default), and its input is validated', async () => {
    const cfg = config('cron');
    const cron = verifyObject.triggers.flatMap((t) => ('cron' in t ? t.cron(cfg) : []));
    expect(cron).toEqual([{ id: 'scrub', pattern: '0 6 * * *', input: { scrub: true } }]);
    expect(verifyObject.triggers.flatMap((t) => ('cron' in t ? t.cron(withScrub(cfg, { enabled: false })) : []))).toEqual([]);
    const bad = await runAt(cfg, verifyObject, {}, T0);
    expect(bad.error).toMatchObject({ name: 'InvalidInputError', problems: ['dataset: Required'] });
    const both = await runAt(cfg, verifyObject, { scrub: true, key: 'a' }, T0);
    expect(both.error.problems).toEqual(['key: a scrub chooses its own objects; give no key']);
  });

  it('re-reads a Velero object it verified once; one Velero pruned loses its record, and is no corruption', async () => {
    const cfg = testConfig({ targets: { disk: { kind: 'dir', path: dataDir } }, datasets: [{ id: 'velero', kind: 'velero', target: { name: 'disk', bucket: 'velero', prefix: 'v/' } }] });
    const store = storeOf(cfg, 'velero');
    const body = JSON.stringify({ status: { phase: 'Completed', completionTimestamp: '2026-11-10T03:05:00Z' } });
    await store.put('v/backups/a/velero-backup.json', Readable.from([Buffer.from(body)]));
    await store.put('v/backups/b/velero-backup.json', Readable.from([Buffer.from(body)]));
    for (const key of ['v/backups/a/velero-backup.json', 'v/backups/b/velero-backup.json']) {
      expect((await runAt(cfg, verifyObject, { dataset: 'velero', key, external: true }, T0)).ok).toBe(true);
    }
    await store.delete(['v/backups/b/velero-backup.json']);
    const scrub = await runAt(cfg, verifyObject, { scrub: true }, T0 + 31 * DAY);
    expect(scrub).toMatchObject({ ok: true, value: { checked: 1, corrupt: 0 } });
    expect(scrub.events.map((e) => e.event)).toEqual(['backup.verified', 'backup.observed']);
    expect(await store.getJson(foreignVerifyKey(datasetOf(cfg, 'velero'), 'v/backups/b/velero-backup.json'))).toBeUndefined();
    const kept = verifyRecordSchema.parse(await store.getJson(foreignVerifyKey(datasetOf(cfg, 'velero'), 'v/backups/a/velero-backup.json')));
    expect(kept.history?.map((h) => h.trigger)).toEqual(['scrub', 'upload']);
  });
});

describe('live Prometheus: a scrub finding and the drill of it alert', () => {
  let prometheus: LivePrometheus | undefined;
  afterAll(async () => prometheus?.stop());

  it('VerifyFailed fires for a rotten old backup even after a newer one verified, and DrillFailed for its drill', async () => {
    // Real Redis through openApp; the scrub runs with everyDays so small that every backup is due.
    const cfg = withScrub(config('live'), { everyDays: 0.001 });
    const now = Date.now();
    const old = await nightly(cfg, 'diskdb', now - 2 * DAY);
    await nightly(cfg, 'diskdb', now - DAY);
    await rotInPlace(old);

    const app = await openApp(cfg, logger());
    apps.push(app);
    const run = (fn: AnyFunction, data: unknown) =>
      runFunction(fn, data, { jobId: 'live', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps: app.deps, emit: app.emit }).then(() => true, () => false);
    expect(await run(verifyObject, { scrub: true, dataset: 'diskdb' })).toBe(false);
    const samples = await app.recorder.samples();
    const at = (name: string) => samples.find((s) => s.name === name && s.labels.dataset === 'diskdb')?.value ?? 0;
    // The good newer backup was re-read after the bad one: by timestamps alone all would look well.
    expect(at('lifeboat_verify_last_success_timestamp_seconds')).toBeGreaterThanOrEqual(at('lifeboat_verify_last_failure_timestamp_seconds'));
    expect(at('lifeboat_backups_corrupt')).toBe(1);
    expect(await run(drillRestore, { dataset: 'diskdb', backup: old.split('/').at(-2) })).toBe(false);

    const http = await buildServer({ config: cfg, recorder: app.recorder, queues: app.queues });
    await http.listen({ host: '127.0.0.1', port: 0 });
    try {
      prometheus = await startPrometheus((http.server.address() as AddressInfo).port);
      const alerts = await prometheus.waitForFiring(['VerifyFailed', 'DrillFailed']);
      const firing = alerts.filter((a) => a.state === 'firing' && a.labels.dataset === 'diskdb').map((a) => a.labels.alertname).sort();
      expect(firing).toEqual(['DrillFailed', 'VerifyFailed']);
    } finally {
      await http.close();
    }
  }, 120_000);
});
