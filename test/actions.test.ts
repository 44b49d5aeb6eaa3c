import { Worker } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { openApp, type App } from '../lib/plumbing/app.js';
import { buildServer } from '../lib/server.js';
import { closeApps, logger, PG_URL, testConfig, openWithRedisDown } from './helpers.js';

// The web UI's buttons (lib/api/actions.ts) on real Redis: jobs are enqueued, not run (no worker here).

process.env.TEST_ACTIONS_OPERATOR = 'operator-pass';
process.env.TEST_ACTIONS_VIEWER = 'viewer-pass';
const users = [
  { name: 'olga', password: '${env:TEST_ACTIONS_OPERATOR}', role: 'operator' },
  { name: 'vic', password: '${env:TEST_ACTIONS_VIEWER}', role: 'viewer' },
];
const basic = (name: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}` });
const operator = basic('olga', 'operator-pass');
const viewer = basic('vic', 'viewer-pass');

const apps: App[] = [];
afterEach(async () => closeApps(apps));

function actionsConfig() {
  return testConfig({
    datasets: [
      { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: PG_URL }, target: { name: 'hub', bucket: 'anything' } },
      { id: 'velero', kind: 'velero', target: { name: 'hub', bucket: 'velero' } },
    ],
    server: { ui: { users, restoreTargets: { scratch: { kind: 'postgres', url: PG_URL }, 'bucket-copy': { kind: 's3', target: 'hub', bucket: 'restored' } } } },
  });
}

async function serve(): Promise<{ http: FastifyInstance; app: App }> {
  const config = actionsConfig();
  const app = await openApp(config, logger());
  apps.push(app);
  const http = await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: app.deps });
  return { http, app };
}

describe('POST /api/actions/:action and GET /api/jobs (real Redis)', () => {
  it('an operator enqueues back up, verify and drill now as this minute\'s job; the same click again finds the same job', async () => {
    const { http, app } = await serve();
    const backup = await http.inject({ method: 'POST', url: '/api/actions/backup', headers: operator, payload: { dataset: 'pg' } });
    expect(backup.statusCode, backup.body).toBe(202);
    const first = backup.json();
    expect(first).toMatchObject({ action: 'backup', fn: 'dumpPostgres', dataset: 'pg', created: true, state: 'waiting', tick: expect.stringMatching(/:00\.000Z$/) });
    expect(await app.queues.jobStatus('dumpPostgres', first.jobId)).toMatchObject({ state: 'waiting', data: { dataset: 'pg', tick: first.tick } });

    const again = await http.inject({ method: 'POST', url: '/api/actions/backup', headers: operator, payload: { dataset: 'pg' } });
    expect(again.json()).toMatchObject({ jobId: first.jobId, created: first.tick !== again.json().tick });

    const status = await http.inject({ method: 'GET', url: first.status, headers: viewer });
    expect(status.statusCode).toBe(200);
    expect(status.json()).toMatchObject({ fn: 'dumpPostgres', id: first.jobId, state: 'waiting', attemptsMade: 0 });

    for (const [action, fn, data] of [['verify', 'verifyObject', { dataset: 'pg', backup: 'latest' }], ['drill', 'drillRestore', { dataset: 'pg' }]] as const) {
      const r = await http.inject({ method: 'POST', url: `/api/actions/${action}`, headers: operator, payload: { dataset: 'pg' } });
      expect(r.statusCode, r.body).toBe(202);
      expect(await app.queues.jobStatus(fn, r.json().jobId)).toMatchObject({ state: 'waiting', data });
    }
  });

  it('an operator enqueues a restore into a configured restore target; a viewer gets 403', async () => {
    const { http, app } = await serve();
    const payload = { dataset: 'pg', backup: '20261201T020000Z', into: 'scratch', database: 'shop', as: 'shop_restored' };
    expect((await http.inject({ method: 'POST', url: '/api/actions/restore', headers: viewer, payload })).statusCode).toBe(403);
    const r = await http.inject({ method: 'POST', url: '/api/actions/restore', headers: operator, payload });
    expect(r.statusCode, r.body).toBe(202);
    expect(r.json()).toMatchObject({ action: 'restore', fn: 'restoreBackup', dataset: 'pg', created: true });
    expect(await app.queues.jobStatus('restoreBackup', r.json().jobId)).toMatchObject({ state: 'waiting', data: { ...payload, tick: r.json().tick } });
    // Another database in the same minute is another job; the same one again is the same job.
    const other = await http.inject({ method: 'POST', url: '/api/actions/restore', headers: operator, payload: { ...payload, as: 'shop_other' } });
    expect(other.json().jobId).not.toBe(r.json().jobId);
  });

  it('once this minute\'s job has ended, the same click enqueues a new run instead of showing the old result', async () => {
    const { http, app } = await serve();
    const click = async () => (await http.inject({ method: 'POST', url: '/api/actions/verify', headers: operator, payload: { dataset: 'pg' } })).json();
    const first = await click();
    // A bare BullMQ worker finishes the job (this test is about the queue, not verifyObject).
    const connection = app.queues.connection.duplicate();
    const worker = new Worker('verifyObject', async () => 'checked', { connection, prefix: app.config.redis.prefix });
    try {
      await expect.poll(async () => (await app.queues.jobStatus('verifyObject', first.jobId))?.state, { timeout: 10_000 }).toBe('completed');
    } finally {
      await worker.close();
      connection.disconnect();
    }
    const second = await click();
    expect(second).toMatchObject({ created: true, state: 'waiting' });
    expect(second.jobId).not.toBe(first.jobId);
    if (second.tick === first.tick) expect(second.jobId).toMatch(new RegExp(`^${first.jobId}-again-\\d+$`));
    expect(await app.queues.jobStatus('verifyObject', second.jobId)).toMatchObject({ state: 'waiting', data: { dataset: 'pg', backup: 'latest' } });
  });

  it('a viewer may read a job but not run an action (403); bad input is 400 or 404 naming the field, and nothing is enqueued', async () => {
    const { http, app } = await serve();
    const denied = await http.inject({ method: 'POST', url: '/api/actions/backup', headers: viewer, payload: { dataset: 'pg' } });
    expect(denied.statusCode).toBe(403);
    const cases: Array<[string, unknown, number, string]> = [
      ['/api/actions/backup', { dataset: 'nope' }, 404, 'dataset'],
      ['/api/actions/backup', {}, 400, 'dataset'],
      ['/api/actions/backup', { dataset: 'pg', extra: 1 }, 400, 'extra'],
      ['/api/actions/backup', { dataset: 'pg', into: 'scratch' }, 400, 'into'],
      ['/api/actions/restore', { dataset: 'pg', into: 'scratch' }, 400, 'backup'],
      ['/api/actions/restore', { dataset: 'pg', backup: 'latest', into: 'prod' }, 400, 'into'],
      ['/api/actions/restore', { dataset: 'pg', backup: 'latest', into: 'bucket-copy' }, 400, 'into'],
      ['/api/actions/restore', { dataset: 'pg', backup: 'latest', into: 'scratch', as: 'shop_copy' }, 400, 'as'],
      ['/api/actions/restore', { dataset: 'velero', backup: 'latest', into: 'scratch' }, 400, 'dataset'],
      ['/api/actions/restore-everything', { dataset: 'pg' }, 404, 'action'],
      ['/api/actions/backup', { dataset: 'velero' }, 400, 'action'],
    ];
    for (const [url, payload, code, field] of cases) {
      const r = await http.inject({ method: 'POST', url, headers: operator, payload: payload as Record<string, unknown> });
      expect(r.statusCode, `${url} ${JSON.stringify(payload)}: ${r.body}`).toBe(code);
      expect(r.json().field, url).toBe(field);
    }
    expect(await app.queues.queue('dumpPostgres').getWaitingCount()).toBe(0);
    expect(await app.queues.queue('restoreBackup').getWaitingCount()).toBe(0);
    const unknown = await http.inject({ method: 'GET', url: '/api/jobs/dumpPostgres/no-such-job', headers: viewer });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json()).toMatchObject({ field: 'id' });
    expect((await http.inject({ method: 'GET', url: '/api/jobs/rmRf/x', headers: viewer })).json()).toMatchObject({ field: 'fn' });
  });

  it('with Redis down an action answers 503 naming the queue, fast', async () => {
    const { config: down, queues, deps, close } = openWithRedisDown(actionsConfig());
    const http = await buildServer({ config: down, recorder: new MemoryMetricsRecorder(), queues, deps });
    try {
      const started = Date.now();
      const r = await http.inject({ method: 'POST', url: '/api/actions/backup', headers: operator, payload: { dataset: 'pg' } });
      expect(r.statusCode, r.body).toBe(503);
      expect(r.json()).toMatchObject({ field: 'redis', error: expect.stringContaining('the queue (Redis at redis://127.0.0.1:1) is unavailable') });
      expect((await http.inject({ method: 'GET', url: '/api/jobs/dumpPostgres/x', headers: viewer })).statusCode).toBe(503);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await http.close();
      await close();
    }
  });
});
