import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { allFunctions } from '../functions/index.js';
import { listBackups } from '../lib/catalog/catalog.js';
import type { Config } from '../lib/config/schema.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { RedisLocks } from '../lib/plumbing/locks.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { defineFunction, type AnyFunction } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';
import { runInline, type AttemptFailure } from '../queue/inline.js';
import { closeApps, createBucket, listKeys, logger, psql, REDIS_URL, removeBucket, s3Client, testConfig } from './helpers.js';

// Real Redis, real Ceph RGW, a real PostgreSQL throwaway cluster. Two apps on one prefix are two worker
// processes and two serve replicas sharing one Redis.
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let redis: Redis;
const apps: App[] = [];

beforeAll(async () => {
  source = await startThrowawayCluster();
  await psql(source.url, "create table notes (id int primary key, body text); insert into notes select g, repeat('n', 40) from generate_series(1, 500) g");
  client = s3Client();
  bucket = await createBucket(client);
  redis = new Redis(REDIS_URL);
});

afterEach(async () => closeApps(apps));

afterAll(async () => {
  await source?.stop();
  if (client) {
    await removeBucket(client, bucket);
    client.destroy();
  }
  redis?.disconnect();
});

function config(): Config {
  return testConfig({
    datasets: [{ id: 'main', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket, prefix: `tick-${Date.now()}/` }, schedule: '0 2 * * *' }],
  });
}

async function open(cfg: Config, functions: readonly AnyFunction[]): Promise<App> {
  const app = await openApp(cfg, logger(), { functions });
  apps.push(app);
  return app;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function jobCount(app: App, fn: string): Promise<number> {
  const counts = await app.queues.queue(fn).getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children');
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

describe('one job per tick', () => {
  it('the same dumpPostgres tick enqueued 10 times across two serve replicas and two workers is one job, one upload, one verified backup', async () => {
    const uploads: string[] = [];
    // Every backup.uploaded becomes one job here: no dedupe, so a second upload could not hide.
    const uploadCounter = defineFunction({
      name: 'uploadCounter',
      description: 'counts upload events',
      input: z.object({ key: z.string() }),
      triggers: [{ event: 'backup.uploaded' }],
      retries: { attempts: 1, backoffMs: 10 },
      concurrency: 1,
      timeoutMs: 5000,
      handler: async (input) => {
        uploads.push(input.key);
      },
    });
    const cfg = config();
    const functions = [...allFunctions, uploadCounter];
    const [a, b] = [await open(cfg, functions), await open(cfg, functions)];
    await a.startWorkers();
    await b.startWorkers();

    const tick = '2026-11-26T02:00:00.000Z';
    const enqueued = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).queues.enqueueTick('dumpPostgres', { dataset: 'main', tick })));
    expect(new Set(enqueued.map((e) => e.job.id))).toEqual(new Set(['dumpPostgres-main-20261126T020000Z']));
    expect(enqueued.filter((e) => e.created)).toHaveLength(1);

    const result = (await a.queues.waitFor('dumpPostgres', 'dumpPostgres-main-20261126T020000Z', 60_000)) as { key: string };
    const dataset = cfg.datasets[0]!;
    const store = openLocal(cfg, logger());
    try {
      const backups = await until('the backup to be verified', async () => {
        const entries = await listBackups(store.storeFor(dataset), dataset);
        return entries.every((e) => e.status === 'verified') && entries.length > 0 ? entries : undefined;
      });
      expect(backups.map((e) => [e.id, e.status])).toEqual([['20261126T020000Z', 'verified']]);
    } finally {
      await store.close();
    }
    await until('the upload event to be counted', async () => (uploads.length > 0 ? true : undefined));
    expect(uploads).toEqual([result.key]);
    expect(await jobCount(a, 'dumpPostgres')).toBe(1);
    expect(await jobCount(a, 'uploadCounter')).toBe(1);
    expect((await listKeys(client, bucket, dataset.target.prefix)).filter((k) => k.endsWith('/manifest.json'))).toHaveLength(1);
    expect((await a.queues.queue('dumpPostgres').getJob('dumpPostgres-main-20261126T020000Z'))?.attemptsMade).toBe(1);

    // Later, the finished job still holds its id: `run` reports it instead of dumping again.
    const again = await b.queues.enqueueTick('dumpPostgres', { dataset: 'main', tick });
    expect(again).toMatchObject({ created: false, state: 'completed' });
    expect(await jobCount(a, 'dumpPostgres')).toBe(1);

    // Another tick is another job.
    const next = await b.queues.enqueueTick('dumpPostgres', { dataset: 'main', tick: '2026-11-27T02:00:00.000Z' });
    expect(next).toMatchObject({ created: true, job: { id: 'dumpPostgres-main-20261127T020000Z' } });
  });

  it('any other input is part of the id: a verify of another backup in the same second is its own job', async () => {
    const app = await open(testConfig(), allFunctions);
    const tick = '2026-11-26T02:00:00.000Z';
    const latest = await app.queues.enqueueTick('verifyObject', { dataset: 'main', tick, backup: 'latest' });
    const all = await app.queues.enqueueTick('verifyObject', { dataset: 'main', tick, backup: 'all' });
    expect(latest.created && all.created).toBe(true);
    expect(latest.job.id).not.toBe(all.job.id);
    expect(latest.job.id).toMatch(/^verifyObject-main-20261126T020000Z-[0-9a-f]{12}$/);
    // enqueue() with a tick takes the same path.
    expect((await app.queues.enqueue('verifyObject', { dataset: 'main', tick, backup: 'all' })).id).toBe(all.job.id);
    expect(await jobCount(app, 'verifyObject')).toBe(2);
  });
});

describe('the dataset lock', () => {
  /** A function that records when each run starts and ends, to find overlap. */
  function recorder(name: string, extra: Partial<AnyFunction>) {
    const runs: Array<{ tick: string; start: number; end: number }> = [];
    const fn = defineFunction({
      name,
      description: 'records its runs',
      input: z.object({ dataset: z.string(), tick: z.string() }),
      triggers: [],
      retries: { attempts: 3, backoffMs: 10 },
      concurrency: 2,
      timeoutMs: 10_000,
      handler: async (input) => {
        const start = Date.now();
        await sleep(1000); // a write that takes a while
        runs.push({ tick: input.tick, start, end: Date.now() });
      },
      ...extra,
    });
    return { fn, runs };
  }
  const overlaps = (runs: Array<{ start: number; end: number }>) => runs.some((r, i) => runs.some((o, j) => i !== j && r.start < o.end && o.start < r.end));

  async function twoTicksAtOnce(fn: AnyFunction) {
    const cfg = testConfig();
    const [a, b] = [await open(cfg, [fn]), await open(cfg, [fn])];
    await a.startWorkers();
    await b.startWorkers();
    const [first, second] = await Promise.all([
      a.queues.enqueueTick(fn.name, { dataset: 'main', tick: '2026-11-26T02:00:00.000Z' }),
      b.queues.enqueueTick(fn.name, { dataset: 'main', tick: '2026-11-26T03:00:00.000Z' }),
    ]);
    await Promise.all([a.queues.waitFor(fn.name, first.job.id!, 30_000), a.queues.waitFor(fn.name, second.job.id!, 30_000)]);
    const jobs = await Promise.all([first, second].map((e) => a.queues.queue(fn.name).getJob(e.job.id!)));
    return { app: a, jobs: jobs.map((j) => j!) };
  }

  it('two ticks of one dataset at once never run their handlers together, and waiting costs no attempt', async () => {
    const { fn, runs } = recorder('lockedWriter', { lock: 'dataset' });
    const { app, jobs } = await twoTicksAtOnce(fn);
    expect(runs).toHaveLength(2);
    expect(overlaps(runs)).toBe(false);
    // One found the lock taken and came back later: started twice, one attempt made, no failure recorded.
    expect(jobs.map((j) => j.attemptsMade)).toEqual([1, 1]);
    expect(Math.max(...jobs.map((j) => j.attemptsStarted))).toBeGreaterThanOrEqual(2);
    expect((await app.recorder.samples()).filter((s) => s.name === 'lifeboat_job_failures_total')).toEqual([]);
    expect(await redis.exists(`${app.config.redis.prefix}:lock:dataset:main`)).toBe(0);
  });

  it('(control) without the lock the same two ticks do overlap, so the check above can see overlap', async () => {
    const { fn, runs } = recorder('freeWriter', {});
    await twoTicksAtOnce(fn);
    expect(runs).toHaveLength(2);
    expect(overlaps(runs)).toBe(true);
  });

  it('inline runs take no lock (no Redis), even when a worker holds it', async () => {
    const { fn, runs } = recorder('inlineWriter', { lock: 'dataset' });
    const cfg = testConfig();
    const locks = new RedisLocks(redis, cfg.redis.prefix);
    const held = await locks.acquire('dataset:main', 'a worker');
    const deps = openLocal(cfg, logger());
    try {
      expect(held).toBeDefined();
      const [result] = await runInline([fn], fn.name, { dataset: 'main', tick: '2026-11-26T02:00:00.000Z' }, deps);
      expect(result).toMatchObject({ ok: true, attempts: 1 });
      expect(runs).toHaveLength(1);
    } finally {
      await held?.release();
      await deps.close();
    }
  });
});

describe('RedisLocks', () => {
  const prefix = () => `lbtest-locks-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

  it('is exclusive, names its holder, and is free again once released', async () => {
    const locks = new RedisLocks(redis, prefix());
    const first = await locks.acquire('dataset:main', 'dumpPostgres job a');
    expect(first).toBeDefined();
    expect(await locks.acquire('dataset:main', 'dumpPostgres job b')).toBeUndefined();
    expect(await locks.holder('dataset:main')).toBe('dumpPostgres job a');
    expect(await locks.acquire('dataset:other', 'dumpPostgres job c').then((l) => l?.release().then(() => true))).toBe(true);
    await first!.release();
    expect(await locks.holder('dataset:main')).toBeUndefined();
    const second = await locks.acquire('dataset:main', 'dumpPostgres job b');
    expect(second).toBeDefined();
    await second!.release();
  });

  it('the same owner takes it over (the retry of a job whose worker died), and the old lease learns it lost', async () => {
    const locks = new RedisLocks(redis, prefix(), { ttlMs: 300 });
    const dead = await locks.acquire('dataset:main', 'dumpPostgres job x');
    expect(await locks.acquire('dataset:main', 'dumpPostgres job xy')).toBeUndefined(); // a prefix is not the owner
    const retry = await locks.acquire('dataset:main', 'dumpPostgres job x');
    expect(retry).toBeDefined();
    await until('the old lease to notice', async () => (dead!.lost.aborted ? true : undefined), 5000);
    await dead!.release(); // leaves the retry's lock alone
    expect(await locks.holder('dataset:main')).toBe('dumpPostgres job x');
    expect(retry!.lost.aborted).toBe(false);
    await retry!.release();
    expect(await locks.holder('dataset:main')).toBeUndefined();
  });

  it('is renewed while held: it outlives its TTL', async () => {
    const locks = new RedisLocks(redis, prefix(), { ttlMs: 300 });
    const lease = await locks.acquire('dataset:main', 'long job');
    try {
      await sleep(1200); // four TTLs
      expect(lease!.lost.aborted).toBe(false);
      expect(await locks.holder('dataset:main')).toBe('long job');
      expect(await redis.pttl(locks.key('dataset:main'))).toBeGreaterThan(0);
    } finally {
      await lease!.release();
    }
  });

  it('expires when its holder stops renewing (a killed worker), and a stale holder neither releases nor keeps the new one', async () => {
    const locks = new RedisLocks(redis, prefix(), { ttlMs: 300 });
    // A holder that died: its token is there, nobody renews it.
    await redis.set(locks.key('dataset:main'), 'dead job 0000', 'PX', 300);
    const started = Date.now();
    const lease = await until('the dead holder\'s lock to expire', () => locks.acquire('dataset:main', 'next job'), 5000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);

    // The lease is taken from under it (as if it had expired during a stall): it notices, and its release leaves the new holder alone.
    await redis.set(locks.key('dataset:main'), 'usurper 1111', 'PX', 10_000);
    await until('the lease to notice', async () => (lease.lost.aborted ? true : undefined), 5000);
    expect(lease.lost.reason).toMatchObject({ name: 'LockLostError' });
    await lease.release();
    expect(await locks.holder('dataset:main')).toBe('usurper');
    await redis.del(locks.key('dataset:main'));
  });
});

describe('inline retries', () => {
  it('retries as told, a fixed delay apart, reporting each failed attempt as it happens', async () => {
    let calls = 0;
    const flaky = defineFunction({
      name: 'flaky',
      description: 'fails twice',
      input: z.object({ dataset: z.string() }),
      triggers: [],
      retries: { attempts: 4, backoffMs: 60_000 }, // production backoff: the override must win
      concurrency: 1,
      timeoutMs: 5000,
      handler: async () => {
        calls += 1;
        if (calls < 3) throw new Error(`connection refused (${calls})`);
        return 'ok';
      },
    });
    const deps = openLocal(testConfig(), logger());
    const failures: AttemptFailure[] = [];
    const started = Date.now();
    const [result] = await runInline([flaky], 'flaky', { dataset: 'x' }, deps, { retries: { attempts: 3, backoffMs: 100 }, onAttemptFailed: (f) => failures.push(f) });
    expect(result).toMatchObject({ ok: true, attempts: 3, result: 'ok' });
    expect(failures.map((f) => [f.what, f.attempt, f.attempts, (f.error as Error).message, f.retryInMs])).toEqual([
      ['flaky', 1, 3, 'connection refused (1)', 100],
      ['flaky', 2, 3, 'connection refused (2)', 100],
    ]);
    expect(Date.now() - started).toBeLessThan(5000);

    calls = 0;
    const [once] = await runInline([flaky], 'flaky', { dataset: 'x' }, deps, { retries: { attempts: 2, backoffMs: 50 } });
    expect(once).toMatchObject({ ok: false, attempts: 2, error: 'Error: connection refused (2)' });
  });

  it('a permanent error is not retried and not reported as a retry', async () => {
    const broken = defineFunction({
      name: 'broken',
      description: 'always permanent',
      input: z.object({ dataset: z.string() }),
      triggers: [],
      retries: { attempts: 4, backoffMs: 10 },
      concurrency: 1,
      timeoutMs: 5000,
      handler: async () => {
        throw new PermanentError('no such bucket');
      },
    });
    const failures: AttemptFailure[] = [];
    const [result] = await runInline([broken], 'broken', { dataset: 'x' }, openLocal(testConfig(), logger()), { retries: { attempts: 5, backoffMs: 10 }, onAttemptFailed: (f) => failures.push(f) });
    expect(result).toMatchObject({ ok: false, attempts: 1 });
    expect(failures).toEqual([]);
  });
});
