import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { backupDir } from '../../lib/catalog/layout.js';
import { LIFEBOAT_VERSION, type Manifest } from '../../lib/catalog/manifest.js';
import type { Config } from '../../lib/config/schema.js';
import { MemoryMetricsRecorder, type Sample } from '../../lib/metrics/recorder.js';
import { openApp, openLocal, rebuildMissingMetrics, type App } from '../../lib/plumbing/app.js';
import { createDeps } from '../../lib/plumbing/deps.js';
import { freePort } from '../../lib/plumbing/net.js';
import { RedisUnavailableError } from '../../lib/plumbing/redis.js';
import { buildServer } from '../../lib/server.js';
import { defineFunction, type AnyFunction } from '../../queue/define.js';
import { PermanentError } from '../../queue/errors.js';
import { runInline } from '../../queue/inline.js';
import { WorkerGroup } from '../../queue/workers.js';
import { syncSchedulers } from '../../triggers/cron.js';
import { CLI, runCli, testConfig } from '../helpers.js';

// Redis lost and found again, on a private redis-server per suite (never the shared one on 6379, which
// other test files use at the same time): startup against a closed port, an outage under serve and a
// worker, Redis coming back empty, and failures that only BullMQ sees (a job whose worker died twice).

const ROOT = process.cwd();
const FINISHED_AT = '2026-11-20T02:01:00.000Z';

/** A redis-server of our own, without persistence: a restart comes back empty. */
class PrivateRedis {
  #child: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  static async start(): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort(), await mkdtemp(join(tmpdir(), 'lb-redis-')));
    await redis.restart();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts the server (again) on the same port; resolves once it accepts connections. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error('redis-server is already running');
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', this.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    let output = '';
    child.stdout!.on('data', (c) => (output += c));
    child.stderr!.on('data', (c) => (output += c));
    for (const deadline = Date.now() + 10_000; !output.includes('Ready to accept connections'); await sleep(20)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not start:\n${output}`);
    }
  }

  /** SIGKILL of exactly our server process; resolves once it is gone. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    await this.kill();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A logger whose lines the test can read. */
function capturingLogger(): { logger: Logger; lines: Array<{ level: number; msg: string; [key: string]: unknown }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as { level: number; msg: string });
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}
const WARN = 40;
const RESTORED = 'Redis came back without the job schedulers or the metric state; restored them';

async function until<T>(what: string, read: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(50)) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
  }
}

/** A config on the private Redis, with a dir target holding the datasets' backups. */
function configOn(url: string, targetDir: string, extra: { datasets?: unknown[] } = {}): Config {
  const base = testConfig({
    targets: { local: { kind: 'dir', path: targetDir } },
    datasets: extra.datasets ?? [{ id: 'db', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1/postgres' }, target: { name: 'local', bucket: 'postgres' }, schedule: '0 2 * * *' }],
  });
  return { ...base, redis: { ...base.redis, url } };
}

/** One verified backup on the target, as dumpPostgres and verifyObject leave it. */
async function writeBackup(config: Config): Promise<void> {
  const deps = openLocal(config, pino({ level: 'silent' }));
  const dataset = config.datasets[0]!;
  const store = deps.storeFor(dataset);
  const tick = new Date('2026-11-20T02:00:00.000Z');
  const dir = backupDir(dataset, tick);
  const put = await store.put(`${dir}pg_dumpall.sql`, Readable.from([Buffer.from('-- PostgreSQL database cluster dump complete\n')]));
  const manifest: Manifest = {
    format: 'lifeboat.manifest/v1', dataset: dataset.id, kind: 'postgres', tick: tick.toISOString(),
    artifact: { key: put.key, size: put.size, sha256: put.sha256, compression: 'none', contentType: 'application/sql', format: 'pg_dumpall' },
    source: { databases: ['postgres'] }, startedAt: tick.toISOString(), finishedAt: FINISHED_AT, durationMs: 60_000,
    writer: { lifeboat: LIFEBOAT_VERSION, jobId: 't', attempt: 1 },
  };
  await store.putJson(`${dir}manifest.json`, manifest);
  await store.putJson(`${dir}verify.json`, { format: 'lifeboat.verify/v1', dataset: dataset.id, key: put.key, ok: true, checkedAt: '2026-11-20T02:02:00.000Z', durationMs: 5, expected: { size: put.size, sha256: put.sha256 }, actual: { size: put.size, sha256: put.sha256 }, checks: [] });
  await deps.close();
}

const LAST_SUCCESS = `lifeboat_backup_last_success_timestamp_seconds{dataset="db",kind="postgres"} ${Date.parse(FINISHED_AT) / 1000}`;

async function schedulerCount(app: App): Promise<number> {
  let count = 0;
  for (const queue of app.queues.queues.values()) count += (await queue.getJobSchedulers()).length;
  return count;
}

const failuresOf = (samples: Sample[], fn: string) => samples.filter((s) => s.name === 'lifeboat_job_failures_total' && s.labels.fn === fn);
const lastFailureOf = (samples: Sample[], fn: string) => samples.filter((s) => s.name === 'lifeboat_backup_last_failure_timestamp_seconds' && s.labels.fn === fn);

/** Runs lib/cli/main.ts in this process, as `lifeboat <args>`: its exit code, what it wrote to stderr, how long it took. */
async function mainInProcess(args: string[]): Promise<{ code: number | string | null | undefined; stderr: string; ms: number }> {
  const argv = process.argv;
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: unknown) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  process.argv = [process.execPath, 'lifeboat', ...args];
  process.exitCode = undefined;
  vi.resetModules();
  const started = Date.now();
  try {
    await import('../../lib/cli/main.js');
  } finally {
    process.argv = argv;
    process.stderr.write = write;
  }
  const code = process.exitCode;
  process.exitCode = undefined;
  return { code, stderr, ms: Date.now() - started };
}

describe('Redis down at startup', () => {
  let work: string;
  let configFile: string;
  let closedUrl: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'lb-noredis-'));
    // A port nothing listens on: connections are refused at once.
    closedUrl = `redis://127.0.0.1:${await freePort()}`;
    configFile = join(work, 'lifeboat.yaml');
    await writeFile(configFile, JSON.stringify({ redis: { url: closedUrl, prefix: 'lbtest-noredis' }, targets: { local: { kind: 'dir', path: work } } }));
  });
  afterAll(async () => rm(work, { recursive: true, force: true }));

  it('openApp throws RedisUnavailableError naming the URL, within 10 s', async () => {
    const started = Date.now();
    const error = await openApp(configOn(closedUrl, work), pino({ level: 'silent' })).then(
      (app) => app.close().then(() => undefined),
      (err: unknown) => err,
    );
    const ms = Date.now() - started;
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect((error as Error).message).toBe(`cannot reach Redis at ${closedUrl}: connect ECONNREFUSED ${closedUrl.slice('redis://'.length)}`);
    expect(ms).toBeLessThan(10_000);
    console.info(`openApp against a closed port failed after ${ms} ms`);
  });

  it('openApp gives up on a server that accepts connections but never answers, within 10 s', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => void sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const url = `redis://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const started = Date.now();
      const error = await openApp(configOn(url, work), pino({ level: 'silent' })).then(
        (app) => app.close().then(() => undefined),
        (err: unknown) => err,
      );
      const ms = Date.now() - started;
      expect(error).toBeInstanceOf(RedisUnavailableError);
      expect((error as Error).message).toMatch(new RegExp(`^cannot reach Redis at ${url}: `));
      expect(ms).toBeLessThan(10_000);
      console.info(`openApp against a silent server failed after ${ms} ms: ${(error as Error).message}`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('`worker`, `serve` and `run` (lib/cli/main.ts, in process) exit 3 within 10 s, naming the URL', async () => {
    for (const args of [['worker'], ['serve'], ['run', 'pruneCheck']]) {
      const { code, stderr, ms } = await mainInProcess(['-c', configFile, ...args]);
      expect(code, args.join(' ')).toBe(3);
      expect(stderr, args.join(' ')).toContain(`cannot reach Redis at ${closedUrl}: connect ECONNREFUSED`);
      expect(ms, args.join(' ')).toBeLessThan(10_000);
      console.info(`lifeboat ${args.join(' ')} (in process) exited ${code} after ${ms} ms`);
    }
  });

  // dist/ is what `npm test` builds first; a dist/ built before this change would hang here instead.
  const distHasTheCheck = existsSync(join(ROOT, 'dist/lib/plumbing/redis.js')) && readFileSync(join(ROOT, 'dist/lib/plumbing/redis.js'), 'utf8').includes('RedisUnavailableError');
  // The 10 s bound is the in-process test's; here Node's own start (3.5 s idle, far more on a loaded
  // machine) comes on top, so this one proves the exit code and that nothing hangs.
  it.runIf(distHasTheCheck)('the built CLI: `worker`, `serve` and `run` exit 3, naming the URL, and never hang', async () => {
    for (const args of [['worker'], ['serve'], ['run', 'pruneCheck']]) {
      const started = Date.now();
      const run = await Promise.race([runCli(['-c', configFile, ...args]), sleep(45_000).then(() => undefined)]);
      const ms = Date.now() - started;
      expect(run, `${CLI} ${args.join(' ')} still running after 45 s`).toBeDefined();
      expect(run!.code, args.join(' ')).toBe(3);
      expect(run!.stderr, args.join(' ')).toContain(`cannot reach Redis at ${closedUrl}: connect ECONNREFUSED`);
      console.info(`built CLI: lifeboat ${args.join(' ')} exited ${run!.code} after ${ms} ms`);
    }
  });
});

describe('serve and a worker through a Redis outage, and Redis coming back empty', () => {
  let redis: PrivateRedis;
  let work: string;
  const apps: App[] = [];
  const servers: FastifyInstance[] = [];
  const problems: unknown[] = [];
  const onProblem = (err: unknown) => problems.push(err);
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    work = await mkdtemp(join(tmpdir(), 'lb-outage-'));
    process.on('unhandledRejection', onProblem);
    process.on('uncaughtException', onProblem);
    // ioredis prints an 'error' event that nobody listens to with console.error.
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void consoleErrors.push(args.map(String).join(' ')));
  });
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.close();
    for (const app of apps.splice(0)) await app.close();
  });
  afterAll(async () => {
    process.off('unhandledRejection', onProblem);
    process.off('uncaughtException', onProblem);
    vi.restoreAllMocks();
    await redis.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** serve (openApp, schedulers, metric state, the HTTP server) and a worker for every function, in process. */
  async function serveAndWork(config: Config, logger: Logger, keepStateEveryMs: number) {
    const app = await openApp(config, logger);
    apps.push(app);
    await syncSchedulers(app.functions, config, app.queues, logger);
    await rebuildMissingMetrics(app);
    const keeper = app.keepRedisState({ intervalMs: keepStateEveryMs });
    const http = await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: app.deps });
    servers.push(http);
    const group = await app.startWorkers();
    return { app, http, group, keeper };
  }

  async function timed(http: FastifyInstance, url: string) {
    const started = Date.now();
    const response = await http.inject({ method: 'GET', url });
    return { status: response.statusCode, body: response.body, ms: Date.now() - started };
  }

  it('no unhandled error, /healthz 503 and /metrics from the target while down; schedulers and metrics back after Redis restarts empty', async () => {
    const config = configOn(redis.url, work);
    await writeBackup(config);
    const { logger, lines } = capturingLogger();
    // A periodic check far beyond this test: only the reconnect can trigger the restore here.
    const { app, http } = await serveAndWork(config, logger, 3600_000);
    const schedulers = await schedulerCount(app);
    expect(schedulers).toBeGreaterThanOrEqual(3);
    expect((await timed(http, '/healthz')).status).toBe(200);
    const before = await timed(http, '/metrics');
    expect(before.body).toContain('lifeboat_redis_up 1');
    expect(before.body).toContain(LAST_SUCCESS);
    expect(before.body).toContain('lifeboat_queue_jobs{');

    let reconnects = 0;
    app.redis.on('reconnecting', () => (reconnects += 1));
    await redis.kill();
    const killedAt = Date.now();
    await until('the app sees Redis down', () => (app.watch.up ? undefined : true), 5000);

    const health = await timed(http, '/healthz');
    expect(health.status).toBe(503);
    expect(JSON.parse(health.body)).toMatchObject({ ok: false, redis: 'down', url: redis.url });
    expect(health.ms).toBeLessThan(3000);
    const live = await timed(http, '/livez');
    expect(live.status).toBe(200);
    const down = await timed(http, '/metrics');
    expect(down.status).toBe(200);
    expect(down.ms).toBeLessThan(3000);
    expect(down.body).toContain('lifeboat_redis_up 0');
    expect(down.body).toContain(LAST_SUCCESS);
    expect(down.body).toContain('lifeboat_backup_stale_threshold_seconds{dataset="db",kind="postgres"} 93600');
    // Counters and queue depths live only in Redis: absent, rather than a 0 that increase() would misread.
    expect(down.body).not.toContain('lifeboat_queue_jobs{');
    expect(down.body).not.toMatch(/^lifeboat_\w+_total\{/m);
    console.info(`while Redis was down: /healthz ${health.status} in ${health.ms} ms, /metrics ${down.status} in ${down.ms} ms`);

    // Let ioredis and BullMQ go through several failed reconnection attempts (about 6 s of backoff).
    await until('six reconnection attempts', () => (reconnects >= 6 ? true : undefined), 20_000);
    expect(lines.filter((l) => l.msg === 'Redis connection lost')).toHaveLength(1);

    await redis.restart();
    const restartedAt = Date.now();
    const timings = await until(
      'schedulers, metric state and /healthz back',
      async () => {
        if (!app.watch.up) return undefined;
        const [count, samples, healthz] = await Promise.all([schedulerCount(app), app.recorder.samples(), timed(http, '/healthz')]);
        const rebuilt = samples.some((s) => s.name === 'lifeboat_backup_last_success_timestamp_seconds' && s.labels.dataset === 'db');
        const logged = lines.some((l) => l.msg === RESTORED);
        return count === schedulers && rebuilt && logged && healthz.status === 200 ? { ms: Date.now() - restartedAt } : undefined;
      },
      40_000,
    );
    console.info(`Redis down for ${restartedAt - killedAt} ms; schedulers, metric state and /healthz back ${timings.ms} ms after the restart`);
    const after = await timed(http, '/metrics');
    expect(after.body).toContain('lifeboat_redis_up 1');
    expect(after.body).toContain(LAST_SUCCESS);

    const warnings = lines.filter((l) => l.level >= WARN);
    expect(warnings.map((l) => l.msg)).toEqual(['Redis connection lost', 'Redis connection restored', RESTORED]);
    expect(warnings[0]).toMatchObject({ redis: redis.url, err: expect.stringContaining('ECONNREFUSED') });
    expect(warnings[1]).toMatchObject({ redis: redis.url });
    expect(warnings[2]).toMatchObject({ schedulers, metricEvents: expect.any(Number) });
    expect(problems).toEqual([]);
    expect(consoleErrors).toEqual([]);
  });

  it('a FLUSHALL without any disconnect is repaired by the periodic check', async () => {
    if (!redis.running) await redis.restart();
    const config = configOn(redis.url, work);
    await writeBackup(config);
    const { logger, lines } = capturingLogger();
    const { app } = await serveAndWork(config, logger, 500);
    const schedulers = await schedulerCount(app);
    const admin = new Redis(redis.url);
    try {
      await admin.flushall(); // the private server only
    } finally {
      admin.disconnect();
    }
    const flushedAt = Date.now();
    const ms = await until(
      'schedulers and metric state back',
      async () => {
        const rebuilt = (await app.recorder.samples()).some((s) => s.name === 'lifeboat_backup_last_success_timestamp_seconds');
        const logged = lines.some((l) => l.msg === RESTORED);
        return (await schedulerCount(app)) === schedulers && rebuilt && logged ? Date.now() - flushedAt : undefined;
      },
      40_000,
    );
    console.info(`after FLUSHALL, schedulers and metric state back within ${ms} ms`);
    expect(lines.filter((l) => l.level >= WARN).map((l) => l.msg)).toEqual([RESTORED]);
    expect(problems).toEqual([]);
    expect(consoleErrors).toEqual([]);
  });
});

describe('every final failure is counted once', () => {
  let redis: PrivateRedis;
  let work: string;
  const apps: App[] = [];
  const groups: WorkerGroup[] = [];
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    work = await mkdtemp(join(tmpdir(), 'lb-failures-'));
  });
  afterEach(async () => {
    for (const child of children) child.kill('SIGKILL');
    children.clear();
    for (const group of groups.splice(0)) await group.close({ force: true });
    for (const app of apps.splice(0)) await app.close();
  });
  afterAll(async () => {
    await redis.stop();
    await rm(work, { recursive: true, force: true });
  });

  const input = z.object({ dataset: z.string() });
  const fn = (name: string, handler: () => Promise<unknown>, attempts = 3): AnyFunction =>
    defineFunction({ name, description: name, input, triggers: [], retries: { attempts, backoffMs: 10 }, concurrency: 1, timeoutMs: 5000, handler });

  async function start(functions: AnyFunction[]): Promise<App> {
    const app = await openApp(configOn(redis.url, work), pino({ level: 'silent' }), { functions });
    apps.push(app);
    return app;
  }

  /**
   * A worker process that takes one job of `queue` and never finishes it: plain BullMQ, like a lifeboat
   * worker that is killed mid-job. Resolves once it has taken the job.
   */
  async function takeAndHang(app: App, queue: string): Promise<ChildProcess> {
    const script = `
      import { Worker } from 'bullmq';
      const worker = new Worker(process.env.QUEUE, async (job) => {
        process.stdout.write('took ' + job.id + '\\n');
        await new Promise(() => {});
      }, { connection: { host: '127.0.0.1', port: Number(process.env.PORT) }, prefix: process.env.PREFIX, lockDuration: 1000, stalledInterval: 500, maxStalledCount: 1 });
      worker.on('error', () => {});`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, QUEUE: queue, PORT: String(redis.port), PREFIX: app.config.redis.prefix }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let output = '';
    child.stdout!.on('data', (c) => (output += c));
    child.stderr!.on('data', (c) => (output += c));
    await until('a child worker took the job', () => (output.includes('took ') ? true : child.exitCode !== null ? Promise.reject(new Error(output)) : undefined), 20_000);
    return child;
  }

  async function sigkill(child: ChildProcess): Promise<void> {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    children.delete(child);
  }

  it('a job whose worker died twice is failed by stall detection and counted once, with its last-failure time', async () => {
    let handlerRuns = 0;
    const fragile = fn('fragile', async () => { handlerRuns += 1; });
    const app = await start([fragile]);
    const job = await app.queues.enqueue('fragile', { dataset: 'db' });

    // First death: the job stalls, and the next worker's stall check puts it back (maxStalledCount 1).
    await sigkill(await takeAndHang(app, 'fragile'));
    // Second death: that next worker takes it and dies too.
    await sigkill(await takeAndHang(app, 'fragile'));
    const secondDeathAt = Date.now();

    // A lifeboat worker with short stall detection finds the job stalled a second time: BullMQ fails it.
    const group = new WorkerGroup({ functions: [fragile], deps: app.deps, emit: app.emit, connection: app.redis, prefix: app.config.redis.prefix, shutdownGraceMs: 1000, lockDurationMs: 1000, stalledIntervalMs: 500, maxStalledCount: 1 });
    groups.push(group);
    const failedAfter = await until('the job failed and counted', async () => {
      const state = await job.getState();
      const counted = failuresOf(await app.recorder.samples(), 'fragile').length > 0;
      return state === 'failed' && counted ? Date.now() - secondDeathAt : undefined;
    }, 30_000);
    console.info(`stalled job failed and counted ${failedAfter} ms after its second worker died`);
    await group.close();

    const stored = await app.queues.queue('fragile').getJob(job.id!);
    expect(stored?.failedReason).toBe('job stalled more than allowable limit');
    expect(handlerRuns).toBe(0);
    const samples = await app.recorder.samples();
    expect(failuresOf(samples, 'fragile')).toEqual([{ name: 'lifeboat_job_failures_total', labels: { fn: 'fragile' }, value: 1 }]);
    const lastFailure = lastFailureOf(samples, 'fragile');
    expect(lastFailure).toHaveLength(1);
    expect(lastFailure[0]!.labels).toEqual({ dataset: 'db', kind: 'postgres', fn: 'fragile' });
    expect(lastFailure[0]!.value * 1000).toBeGreaterThan(secondDeathAt - 1000);
  });

  it('a permanent failure and a retries-exhausted failure through a real worker are each counted once', async () => {
    const calls = { perm: 0, flaky: 0 };
    const perm = fn('perm', async () => { calls.perm += 1; throw new PermanentError('bucket does not exist'); });
    const flaky = fn('flaky', async () => { calls.flaky += 1; throw new Error('connection reset'); });
    const app = await start([perm, flaky]);
    const group = await app.startWorkers();
    groups.push(group);
    const jobs = { perm: await app.queues.enqueue('perm', { dataset: 'db' }), flaky: await app.queues.enqueue('flaky', { dataset: 'db' }) };
    for (const name of ['perm', 'flaky'] as const) {
      await expect(app.queues.waitFor(name, jobs[name].id!, 20_000)).rejects.toThrow();
    }
    // close() waits for the failure metrics being written, so what is stored now is final.
    await group.close();
    expect(calls).toEqual({ perm: 1, flaky: 3 });
    const samples = await app.recorder.samples();
    for (const name of ['perm', 'flaky']) {
      expect(failuresOf(samples, name), name).toEqual([{ name: 'lifeboat_job_failures_total', labels: { fn: name }, value: 1 }]);
      expect(lastFailureOf(samples, name).map((s) => s.labels), name).toEqual([{ dataset: 'db', kind: 'postgres', fn: name }]);
    }
  });

  it('inline runs still count their final failures once: permanent, retries exhausted, stopped by shutdown', async () => {
    const config = configOn(redis.url, work);
    const metrics = new MemoryMetricsRecorder();
    const deps = createDeps({ config, logger: pino({ level: 'silent' }), metrics });
    try {
      const perm = fn('perm', async () => { throw new PermanentError('gone'); });
      const flaky = fn('flaky', async () => { throw new Error('reset'); });
      const controller = new AbortController();
      const stuck = fn('stuck', () => new Promise((resolve) => setTimeout(resolve, 10_000).unref()));
      await runInline([perm, flaky, stuck], 'perm', { dataset: 'db' }, deps, { maxBackoffMs: 10 });
      await runInline([perm, flaky, stuck], 'flaky', { dataset: 'db' }, deps, { maxBackoffMs: 10 });
      setTimeout(() => controller.abort(), 100);
      const [stopped] = await runInline([perm, flaky, stuck], 'stuck', { dataset: 'db' }, deps, { signal: controller.signal });
      expect(stopped).toMatchObject({ ok: false, attempts: 1 });
      const samples = await metrics.samples();
      for (const name of ['perm', 'flaky', 'stuck']) expect(failuresOf(samples, name).map((s) => s.value), name).toEqual([1]);
    } finally {
      await deps.close();
    }
  });
});
