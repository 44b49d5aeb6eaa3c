import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { pruneCheck } from '../functions/pruneCheck.js';
import { verifyObject } from '../functions/verifyObject.js';
import { formatBytes } from '../lib/cli/format.js';
import { loadConfig } from '../lib/config/load.js';
import type { Config } from '../lib/config/schema.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { closeApps, createBucket, hubCli, logger, psql, REDIS_URL, removeBucket, rgwUser, runCli, runOnce, s3Client, s3ClientFor, s3Env, testEnv } from './helpers.js';

// `lifeboat status` and `lifeboat backups ls`, the built CLI against real services: dumps of a throwaway
// PostgreSQL and a mirror between two RGW users on the test RGW, verified, scrubbed and drilled by the
// functions themselves; real Redis for the failed jobs, a closed port for Redis down.

const DAY = 86400_000;
const MIRRORED = [300 * 1024, 300 * 1024, 300 * 1024];
const now = Date.now();
// One backup three days old (its clock too), two of today.
const OLD_TICK = new Date(Math.floor((now - 3 * DAY) / 60_000) * 60_000);
const TICKS = [new Date(Math.floor((now - 2 * 3600_000) / 60_000) * 60_000), new Date(Math.floor((now - 3600_000) / 60_000) * 60_000)];
const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');

let pg: ThrowawayCluster;
let hub: S3Client;
let source: S3Client;
let pgBucket: string;
let corruptBucket: string;
let mirrorDst: string;
let srcBucket: string;
let dir: string;
const apps: App[] = [];

/** A config file (JSON is YAML) with the test RGW as target "hub", and the same config loaded here. */
async function writeConfig(name: string, datasets: unknown[], options: { redis?: string } = {}): Promise<{ file: string; config: Config }> {
  const file = join(dir, `${name}.yaml`);
  const raw = {
    redis: { url: options.redis ?? REDIS_URL, prefix: `lbtest-status-${randomUUID().slice(0, 8)}` },
    targets: { hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', capacityBytes: 2 ** 30 } },
    datasets,
    server: { timezone: 'Europe/Berlin' },
    // Every scrub re-reads every backup: the scrub column has something to show.
    verify: { scrub: { everyDays: 1 } },
  };
  await writeFile(file, JSON.stringify(raw, null, 2));
  return { file, config: (await loadConfig({ file, env: testEnv() })).config };
}

const pgDataset = (extra: Record<string, unknown> = {}) => ({ id: 'pg', kind: 'postgres', source: { mode: 'direct', url: pg.url }, target: { name: 'hub', bucket: pgBucket }, schedule: '0 2 * * *', ...extra });
const photosDataset = () => ({
  id: 'photos', kind: 'bucket', schedule: '0 3 * * *',
  source: { endpoint: s3Env().endpoint, bucket: srcBucket, accessKeyId: '${env:TEST_STATUS_MIRROR_KEY}', secretAccessKey: '${env:TEST_STATUS_MIRROR_SECRET}' },
  target: { name: 'hub', bucket: mirrorDst, prefix: 'photos/' },
});

/** One attempt of a function on a clock stopped at `at`. */
async function runAt(config: Config, fn: AnyFunction, data: unknown, at: Date): Promise<any> {
  const deps = openLocal(config, logger(), { clock: () => at });
  try {
    return await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: at.getTime() }, { deps, emit: async () => {} });
  } finally {
    await deps.close();
  }
}

let healthy: { file: string; config: Config };
let corrupt: { file: string; config: Config };
let photosManifestSize: number;

beforeAll(async () => {
  pg = await startThrowawayCluster();
  await psql(pg.url, "create table notes (id int primary key, body text); insert into notes select g, repeat('n', 50) from generate_series(1, 500) g");
  hub = s3Client();
  const sourceKeys = rgwUser('lifeboat-status-source');
  source = s3ClientFor(sourceKeys);
  process.env.TEST_STATUS_MIRROR_KEY = sourceKeys.accessKeyId;
  process.env.TEST_STATUS_MIRROR_SECRET = sourceKeys.secretAccessKey;
  [pgBucket, corruptBucket, mirrorDst] = await Promise.all([createBucket(hub), createBucket(hub), createBucket(hub)]);
  srcBucket = await createBucket(source);
  dir = await mkdtemp(join(tmpdir(), 'lb-status-'));

  healthy = await writeConfig('healthy', [pgDataset(), photosDataset()]);
  const cfg = healthy.config;
  await runAt(cfg, dumpPostgres, { dataset: 'pg', tick: OLD_TICK.toISOString() }, OLD_TICK);
  for (const tick of TICKS) {
    const dump = await runOnce(cfg, dumpPostgres, { dataset: 'pg', tick: tick.toISOString() });
    await runOnce(cfg, verifyObject, { dataset: 'pg', key: dump.key });
  }
  for (const [i, size] of MIRRORED.entries()) await source.send(new PutObjectCommand({ Bucket: srcBucket, Key: `img/${i}.jpg`, Body: Buffer.alloc(size, i) }));
  const mirrored = await runOnce(cfg, mirrorBucket, { dataset: 'photos', tick: TICKS[1]!.toISOString() });
  await runOnce(cfg, verifyObject, { dataset: 'photos', key: mirrored.key });
  const deps = openLocal(cfg, logger());
  photosManifestSize = (await deps.storeFor(cfg.datasets[1]!).head(mirrored.key))!.size;
  // Capacity history as pruneCheck keeps it: a sample five days ago, then today's run; the forecast needs two.
  await deps.storeFor(cfg.datasets[0]!).putJson('_lifeboat/capacity/hub.json', { target: 'hub', samples: [{ at: new Date(now - 5 * DAY).toISOString(), usedBytes: 10 }] });
  await deps.close();
  // The scrub re-reads everything; the newest pg backup is then verified again by hand, and drilled.
  await runOnce(cfg, verifyObject, { scrub: true });
  await runOnce(cfg, verifyObject, { dataset: 'pg', backup: 'latest' });
  await runOnce(cfg, drillRestore, { dataset: 'pg' });
  await runOnce(cfg, pruneCheck, {});

  // Two good backups, then the older one overwritten on the hub and re-verified: corrupt.
  corrupt = await writeConfig('corrupt', [{ ...pgDataset(), target: { name: 'hub', bucket: corruptBucket } }]);
  const keys: string[] = [];
  for (const tick of TICKS) {
    const dump = await runOnce(corrupt.config, dumpPostgres, { dataset: 'pg', tick: tick.toISOString() });
    await runOnce(corrupt.config, verifyObject, { dataset: 'pg', key: dump.key });
    keys.push(dump.key);
  }
  await hub.send(new PutObjectCommand({ Bucket: corruptBucket, Key: keys[0], Body: Buffer.from('not a dump any more') }));
  await runOnce(corrupt.config, verifyObject, { dataset: 'pg', key: keys[0] }).catch(() => undefined);
}, 300_000);

afterAll(async () => {
  await closeApps(apps);
  await pg?.stop();
  for (const b of [pgBucket, corruptBucket, mirrorDst]) if (b) await removeBucket(hub, b);
  if (srcBucket) await removeBucket(source, srcBucket);
  hub?.destroy();
  source?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('lifeboat status', () => {
  it('all fresh and verified: exit 0, a row per dataset and target, nothing failing', async () => {
    const run = await hubCli(healthy.file, ['status']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toContain(`config: ${healthy.file}`);
    expect(run.stdout).toMatch(/^pg\s+postgres\s+\d+ (s|min) ago\s+verified\s+[\d.]+ KiB\s+ok \d+ (s|min) ago\s+no\s+in \d+ (min|h)$/m);
    // A mirror's size is what it mirrored, not its report.
    expect(run.stdout).toMatch(new RegExp(`^photos\\s+bucket\\s+\\d+ (s|min) ago\\s+verified\\s+${formatBytes(MIRRORED.reduce((a, b) => a + b))}\\s+-\\s+no\\s+in \\d+ (min|h)$`, 'm'));
    expect(run.stdout).toMatch(/^hub\s+s3\s+[\d.]+ [KM]iB\s+1\.0 GiB \(\d+% used\)\s+\d+ d\s+\d+ (s|min) ago$/m);
    expect(run.stdout).toContain('failed jobs in the last 24 h: none');
    expect(run.stdout).toContain('alerts: none');
    expect(run.stdout).toContain('ok: nothing stale, corrupt or failing');
  });

  it('--json: one object in the API\'s shapes, with the next run in server.timezone', async () => {
    const run = await hubCli(healthy.file, ['status', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(Object.keys(report)).toEqual(['generatedAt', 'datasets', 'targets', 'failedJobs', 'alerts', 'redis', 'ok']);
    expect(report).toMatchObject({ failedJobs: [], alerts: [], redis: 'up', ok: true });
    const [pgSummary, photos] = report.datasets;
    expect(pgSummary).toMatchObject({ id: 'pg', kind: 'postgres', target: { name: 'hub', bucket: pgBucket, prefix: '' }, stale: false, backups: 3, corrupt: 0, newest: { id: stamp(TICKS[1]!), status: 'verified' }, lastDrill: { ok: true } });
    expect(photos).toMatchObject({ id: 'photos', kind: 'bucket', newest: { status: 'verified', dataBytes: MIRRORED.reduce((a, b) => a + b), size: photosManifestSize } });
    // "0 2 * * *" in Europe/Berlin: the next 02:00 there, within a day.
    const next = new Date(pgSummary.nextRun);
    expect(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(next)).toBe('02:00');
    expect(next.getTime() - Date.parse(report.generatedAt)).toBeGreaterThan(0);
    expect(next.getTime() - Date.parse(report.generatedAt)).toBeLessThanOrEqual(DAY);
    expect(report.targets).toEqual([expect.objectContaining({ name: 'hub', kind: 's3', capacityBytes: 2 ** 30, usedBytes: expect.any(Number), measuredAt: expect.any(String), daysUntilFull: expect.any(Number) })]);
  });

  it('a corrupt backup: exit 1, the VerifyFailed alert named', async () => {
    const run = await hubCli(corrupt.file, ['status']);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toMatch(/^critical\s+VerifyFailed\s+1 backup of pg failed verification$/m);
    expect(run.stdout).toContain('NOT OK: 1 alert');
    // The newest backup is good: the dataset is not stale, only corrupt.
    expect(run.stdout).toMatch(/^pg\s+postgres\s+.*\s+verified\s+.*\s+no\s+in \d+ (min|h)$/m);
  });

  it('a stale dataset: exit 1', async () => {
    const stale = await writeConfig('stale', [pgDataset({ staleAfterHours: 0.0002 })]);
    const run = await hubCli(stale.file, ['status']);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toMatch(/^pg\s+postgres\s+.*STALE \(over 0\.0002 h\)/m);
    expect(run.stdout).toMatch(/^critical\s+BackupStale\s+the newest good backup of pg/m);
    expect(run.stdout).toContain('NOT OK: 1 alert, 1 stale dataset');
  });

  it('Redis down: the targets are read all the same, within seconds, and Redis named as unreachable', async () => {
    const down = await writeConfig('redis-down', [pgDataset(), photosDataset()], { redis: 'redis://127.0.0.1:1' });
    const started = Date.now();
    const run = await hubCli(down.file, ['status']);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^pg\s+postgres\s+\d+ (s|min) ago\s+verified/m);
    expect(run.stdout).toContain('failed jobs: unknown, Redis is unreachable (cannot reach Redis at redis://127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1); datasets, targets and alerts come from the targets alone');
    const json = JSON.parse((await hubCli(down.file, ['status', '--json'])).stdout);
    expect(json).toMatchObject({ redis: 'down', failedJobs: [], ok: true });
  });

  it('a job that failed for good in the last 24 h: listed, exit 1', async () => {
    const withJobs = await writeConfig('failed-job', [pgDataset(), photosDataset()]);
    const app = await openApp(withJobs.config, logger());
    apps.push(app);
    await app.startWorkers(['verifyObject']);
    const { job } = await app.queues.enqueueTick('verifyObject', { dataset: 'pg', backup: '20200101T000000Z', tick: new Date().toISOString() });
    await expect(app.queues.waitFor('verifyObject', job.id!, 30_000)).rejects.toThrow('dataset pg has no backup 20200101T000000Z');

    const run = await hubCli(withJobs.file, ['status']);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toMatch(new RegExp(`^verifyObject\\s+pg\\s+\\d+ s ago\\s+\\d+\\s+${job.id}\\s+.*has no backup 20200101T000000Z`, 'm'));
    expect(run.stdout).toContain('NOT OK: 1 failed job in the last 24 h');
    const json = JSON.parse((await hubCli(withJobs.file, ['status', '--json'])).stdout);
    expect(json.failedJobs).toEqual([{ fn: 'verifyObject', id: job.id, dataset: 'pg', finishedAt: expect.any(String), attemptsMade: expect.any(Number), failedReason: expect.stringContaining('has no backup 20200101T000000Z') }]);
    expect(json.ok).toBe(false);
  });

  it('documents itself as a cron job and healthcheck; a bad config exits 2', async () => {
    const help = await runCli(['status', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Exit codes: 0 all is well; 1 anything stale, corrupt or failing');
    expect(help.stdout).toMatch(/crontab: .*lifeboat status/);
    const bad = await runCli(['status', '-c', join(dir, 'missing.yaml')]);
    expect(bad.code).toBe(2);
  });
});

describe('lifeboat backups ls', () => {
  it('shows age, verification with the last scrub, the drill, and for a mirror what it mirrored', async () => {
    const run = await hubCli(healthy.file, ['backups', 'ls']);
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^DATASET\s+BACKUP\s+AGE\s+SIZE\s+OBJECTS\s+STATUS\s+DRILL\s+KEY$/);
    const row = (id: string) => lines.find((l) => l.includes(` ${id} `)) ?? '';
    // Verified by hand after the scrub, and drilled; the older ones were last checked by the scrub.
    expect(row(stamp(TICKS[1]!))).toMatch(/^pg\s+\S+\s+\d+ (s|min) ago\s+[\d.]+ KiB\s+-\s+verified \d+ (s|min) ago \(scrub \d+ (s|min) ago\)\s+ok \d+ (s|min) ago\s+pg\/\S+\/pg_dumpall\.sql\.gz$/);
    expect(row(stamp(TICKS[0]!))).toMatch(/^pg\s+\S+\s+\d+ (s|min) ago\s+[\d.]+ KiB\s+-\s+verified \d+ (s|min) ago \(scrub\)\s+-\s+/);
    expect(row(stamp(OLD_TICK))).toMatch(/^pg\s+\S+\s+3 d ago\s+/);
    const total = MIRRORED.reduce((a, b) => a + b);
    // SIZE and OBJECTS are what the mirror copied, not its report file.
    expect(lines.find((l) => l.startsWith('photos'))).toMatch(new RegExp(`^photos\\s+\\S+\\s+\\d+ (s|min) ago\\s+${formatBytes(total)}\\s+3\\s+verified \\d+ (s|min) ago`));
  });

  it('--since (a span or an ISO time) and --status filter the table and --json alike', async () => {
    const ids = async (...args: string[]) => {
      const run = await hubCli(healthy.file, ['backups', 'ls', '--json', '--dataset', 'pg', ...args]);
      expect(run.code, run.stderr).toBe(0);
      return run.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).id);
    };
    expect(await ids()).toEqual([stamp(TICKS[1]!), stamp(TICKS[0]!), stamp(OLD_TICK)]);
    expect(await ids('--since', '2d')).toEqual([stamp(TICKS[1]!), stamp(TICKS[0]!)]);
    expect(await ids('--since', '4d')).toHaveLength(3);
    expect(await ids('--since', new Date(now - DAY).toISOString().replace(/\.\d+Z$/, 'Z'))).toHaveLength(2);
    expect(await ids('--status', 'verified', '--since', '36h')).toHaveLength(2);

    const corruptOnly = await hubCli(corrupt.file, ['backups', 'ls', '--status', 'corrupt']);
    expect(corruptOnly.code, corruptOnly.stderr).toBe(0);
    expect(corruptOnly.stdout.trim().split('\n')).toEqual([expect.stringMatching(/^DATASET/), expect.stringMatching(new RegExp(`^pg\\s+${stamp(TICKS[0]!)}\\s+.*\\s+corrupt \\d+ (s|min) ago\\s+`))]);
  });

  it('a bad --status or --since exits 2 naming the flag, before anything is read', async () => {
    // The target is a closed port: reading anything would exit 3.
    const unreachable = join(dir, 'unreachable.yaml');
    await writeFile(unreachable, JSON.stringify({
      targets: { hub: { kind: 's3', endpoint: 'http://127.0.0.1:1', accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
      datasets: [pgDataset()],
    }));
    const status = await hubCli(unreachable, ['backups', 'ls', '--status', 'fine']);
    expect(status.code).toBe(2);
    expect(status.stderr).toContain("option '--status <status>' argument 'fine' is invalid. Allowed choices are verified, pending, corrupt, changed-since-verified.");
    const since = await hubCli(unreachable, ['backups', 'ls', '--since', 'yesterday']);
    expect(since.code).toBe(2);
    expect(since.stderr).toContain("option '--since <when>' argument 'yesterday' is invalid");
    expect((await hubCli(unreachable, ['backups', 'ls'])).code).toBe(3);
  });

  it('nothing to list: says which config and which targets were read', async () => {
    const filtered = await hubCli(healthy.file, ['backups', 'ls', '--dataset', 'pg', '--status', 'pending']);
    expect(filtered).toMatchObject({ code: 0, stdout: `no backups (status pending) in target hub (s3 ${s3Env().endpoint}), bucket ${pgBucket}, prefix "" — config: ${healthy.file}\n` });
    // No config file anywhere: the embedded defaults, a dir target under the working directory.
    const empty = await mkdtemp(join(dir, 'cwd-'));
    const defaults = await runCli(['backups', 'ls'], { cwd: empty, env: { LOG_LEVEL: 'error' } });
    expect(defaults).toMatchObject({ code: 0, stdout: `no backups in target local (dir ${join(empty, '.lifeboat/data')}), bucket postgres, prefix "" — config: embedded defaults\n` });
  });
});
