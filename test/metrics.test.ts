import { afterEach, describe, expect, it } from 'vitest';
import { openApp, type App } from '../lib/plumbing/app.js';
import { buildServer } from '../lib/server.js';
import { allFunctions } from '../functions/index.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { runFunction } from '../queue/runner.js';
import { syncSchedulers } from '../triggers/cron.js';
import { closeApps, logger, testConfig } from './helpers.js';

// Real Redis: metric state must outlive the process that recorded it.
const apps: App[] = [];
afterEach(async () => closeApps(apps));

async function open(prefix: string, server: Record<string, unknown> = {}) {
  // The events below are for dataset "main": /metrics exports only configured datasets.
  const config = testConfig({ redisPrefix: prefix, server, datasets: [{ id: 'main', kind: 'velero', target: { name: 'hub', bucket: 'velero' } }] });
  const app = await openApp(config, logger(), { functions: allFunctions });
  apps.push(app);
  const http = await buildServer({ config, recorder: app.recorder, queues: app.queues });
  return { app, http, config };
}

const uploaded = (finishedAt: string, size: number) => ({
  dataset: 'main', kind: 'postgres', target: 'hub', bucket: 'postgres', key: `main/${finishedAt}/pg_dumpall.sql.gz`, size, startedAt: '2026-11-26T01:59:00Z', finishedAt,
});

describe('/metrics', () => {
  it('serves state persisted in Redis: a restarted serve shows the same values', async () => {
    const prefix = `lbtest-metrics-${Date.now()}`;
    const first = await open(prefix);
    await first.app.emit('backup.uploaded', uploaded('2026-11-26T02:00:00Z', 1234));
    await first.app.emit('backup.corrupt', { dataset: 'main', kind: 'postgres', key: 'k', checkedAt: '2026-11-26T02:01:00Z', reason: 'sha256' });
    await first.app.deps.metrics.jobFailed('dumpPostgres', { id: 'main', kind: 'postgres' }, new Date('2026-11-26T03:00:00Z'));
    const before = (await first.http.inject({ method: 'GET', url: '/metrics' })).body;
    await first.http.close();
    await first.app.close();
    apps.splice(0); // closed by hand: the next open must find the state in Redis

    const second = await open(prefix);
    const after = (await second.http.inject({ method: 'GET', url: '/metrics' })).body;
    const lines = (text: string) => text.split('\n').filter((l) => l.startsWith('lifeboat_') && !l.startsWith('lifeboat_queue_jobs'));
    expect(lines(after)).toEqual(lines(before));
    expect(after).toContain('lifeboat_backup_last_success_timestamp_seconds{dataset="main",kind="postgres"} 1795658400');
    expect(after).toContain('lifeboat_backup_size_bytes{dataset="main",kind="postgres"} 1234');
    expect(after).toContain('lifeboat_backup_duration_seconds{dataset="main",kind="postgres"} 60');
    expect(after).toContain('lifeboat_verify_failures_total{dataset="main",kind="postgres"} 1');
    expect(after).toContain('lifeboat_job_failures_total{fn="dumpPostgres"} 1');
    expect(after).toContain('lifeboat_backup_last_failure_timestamp_seconds{dataset="main",kind="postgres",fn="dumpPostgres"} 1795662000');
    expect(after).toMatch(/# TYPE lifeboat_verify_failures_total counter/);
  });

  it('a late event for an older backup never moves last-success or size backwards', async () => {
    const { app, http } = await open(`lbtest-metrics-late-${Date.now()}`);
    await app.emit('backup.uploaded', uploaded('2026-11-26T02:00:00Z', 2000));
    await app.emit('backup.uploaded', uploaded('2026-11-25T02:00:00Z', 1000));
    const body = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(body).toContain('lifeboat_backup_last_success_timestamp_seconds{dataset="main",kind="postgres"} 1795658400');
    expect(body).toContain('lifeboat_backup_size_bytes{dataset="main",kind="postgres"} 2000');
  });

  it('a failed drill counts once, however often pruneCheck or a rebuild replays it; a later failure counts again', async () => {
    const { app, http } = await open(`lbtest-metrics-drill-${Date.now()}`);
    const failed = (finishedAt: string) => ({ dataset: 'main', kind: 'postgres', key: 'k', ok: false, startedAt: '2026-11-29T05:00:00Z', finishedAt, failedChecks: ['rows'] });
    for (let i = 0; i < 3; i++) await app.emit('drill.completed', failed('2026-11-29T05:10:00Z'));
    const once = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(once).toContain('lifeboat_drill_failures_total{dataset="main",kind="postgres"} 1');
    await app.emit('drill.completed', failed('2026-12-06T05:10:00Z'));
    const twice = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(twice).toContain('lifeboat_drill_failures_total{dataset="main",kind="postgres"} 2');
    expect(twice).toContain('lifeboat_drill_last_failure_timestamp_seconds{dataset="main",kind="postgres"} 1796533800');
  });

  it('does not export state of datasets no longer in the config', async () => {
    const { app, http } = await open(`lbtest-metrics-removed-${Date.now()}`);
    await app.emit('backup.uploaded', { ...uploaded('2026-11-26T02:00:00Z', 10), dataset: 'gone' });
    const withConfig = testConfig({ redisPrefix: app.config.redis.prefix, datasets: [{ id: 'main', kind: 'velero', target: { name: 'hub', bucket: 'velero' } }] });
    const scoped = await buildServer({ config: withConfig, recorder: app.recorder, queues: app.queues });
    const body = (await scoped.inject({ method: 'GET', url: '/metrics' })).body;
    expect(body).not.toContain('dataset="gone"');
    expect((await http.inject({ method: 'GET', url: '/metrics' })).body).not.toContain('dataset="gone"');
  });

  it('shows queue depth per function', async () => {
    const { app, http } = await open(`lbtest-metrics-depth-${Date.now()}`);
    await app.queues.enqueue('dumpPostgres', { dataset: 'main' });
    await app.queues.enqueue('dumpPostgres', { dataset: 'main' });
    const body = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(body).toContain('lifeboat_queue_jobs{fn="dumpPostgres",state="waiting"} 2');
    expect(body).toContain('lifeboat_queue_jobs{fn="verifyObject",state="waiting"} 0');
  });

  it("counts the job schedulers' next runs as scheduled, not delayed", async () => {
    const { app, http, config } = await open(`lbtest-metrics-scheduled-${Date.now()}`);
    const { upserted } = await syncSchedulers(allFunctions, config, app.queues, logger());
    expect(upserted.length).toBeGreaterThan(0);
    await app.queues.queue('verifyObject').add('verifyObject', { dataset: 'main' }, { delay: 3600_000 });
    const body = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    for (const fn of new Set(upserted.map((u) => u.fn))) {
      expect(body).toContain(`lifeboat_queue_jobs{fn="${fn}",state="scheduled"} ${upserted.filter((u) => u.fn === fn).length}`);
    }
    expect(body).toContain('lifeboat_queue_jobs{fn="verifyObject",state="delayed"} 1');
    expect(body).toContain('lifeboat_queue_jobs{fn="pruneCheck",state="delayed"} 0');
  });

  it('a job naming a dataset this worker does not know says to reload, and counts under its function only', async () => {
    const { app, http } = await open(`lbtest-metrics-unknown-${Date.now()}`);
    const run = runFunction(dumpPostgres, { dataset: 'nas-pg' }, { jobId: 't', attempt: 1, maxAttempts: 3, createdAt: Date.now() }, { deps: app.deps, emit: app.emit });
    await expect(run).rejects.toMatchObject({
      name: 'PermanentError',
      message: `dataset "nas-pg" is not in this worker's config (known: main); if it was added since the worker started, reload it (SIGHUP) or restart the worker`,
    });
    expect(await app.recorder.samples()).toEqual([{ name: 'lifeboat_job_failures_total', labels: { fn: 'dumpPostgres' }, value: 1 }]);
    expect((await http.inject({ method: 'GET', url: '/metrics' })).body).toContain('lifeboat_job_failures_total{fn="dumpPostgres"} 1');
  });
});

describe('Bull Board', () => {
  it('lists every function queue at /queues', async () => {
    const { http } = await open(`lbtest-board-${Date.now()}`);
    const page = await http.inject({ method: 'GET', url: '/queues' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    const api = await http.inject({ method: 'GET', url: '/queues/api/queues' });
    expect(api.statusCode).toBe(200);
    const names = (api.json() as { queues: Array<{ name: string }> }).queues.map((q) => q.name).sort();
    expect(names).toEqual(allFunctions.map((f) => f.name).sort());
  });

  it('asks for basic auth when configured, and compares it in constant time', async () => {
    process.env.TEST_BOARD_PASSWORD = 'board-pass';
    const { http } = await open(`lbtest-board-auth-${Date.now()}`, { board: { username: 'ops', password: '${env:TEST_BOARD_PASSWORD}' } });
    expect((await http.inject({ method: 'GET', url: '/queues' })).statusCode).toBe(401);
    const wrong = Buffer.from('ops:nope').toString('base64');
    expect((await http.inject({ method: 'GET', url: '/queues', headers: { authorization: `Basic ${wrong}` } })).statusCode).toBe(401);
    const right = Buffer.from('ops:board-pass').toString('base64');
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues', headers: { authorization: `Basic ${right}` } })).statusCode).toBe(200);
    // /metrics stays open for Prometheus.
    expect((await http.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
  });
});
