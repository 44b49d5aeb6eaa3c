import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { QueueEvents } from 'bullmq';
import { z } from 'zod';
import { openApp, type App } from '../lib/plumbing/app.js';
import type { Config } from '../lib/config/schema.js';
import { defineFunction, type AnyFunction, type Ctx } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';
import { runInline } from '../queue/inline.js';
import { syncSchedulers } from '../triggers/cron.js';
import { closeApps, logger, testConfig } from './helpers.js';

// Real Redis; every test gets its own key prefix, so its queues are fresh.
const apps: App[] = [];
afterEach(async () => closeApps(apps));

async function start(functions: AnyFunction[], config: Config = testConfig()): Promise<App> {
  const app = await openApp(config, logger(), { functions });
  apps.push(app);
  return app;
}

const input = z.object({ dataset: z.string(), n: z.number().optional() });

function fn(name: string, handler: (i: z.infer<typeof input>, ctx: Ctx) => Promise<unknown>, extra: Partial<AnyFunction> = {}): AnyFunction {
  return defineFunction({ name, description: name, input, triggers: [], retries: { attempts: 3, backoffMs: 10 }, concurrency: 1, timeoutMs: 5000, handler, ...extra });
}

async function outcome(app: App, name: string, jobId: string): Promise<{ ok: boolean; value: unknown }> {
  try {
    return { ok: true, value: await app.queues.waitFor(name, jobId, 20_000) };
  } catch (err) {
    return { ok: false, value: (err as Error).message };
  }
}

describe('runtime on real Redis', () => {
  it('a PermanentError fails after exactly one attempt', async () => {
    let calls = 0;
    const app = await start([fn('perm', async () => { calls += 1; throw new PermanentError('bucket does not exist'); })]);
    await app.startWorkers();
    const job = await app.queues.enqueue('perm', { dataset: 'x' });
    const result = await outcome(app, 'perm', job.id!);
    expect(result).toEqual({ ok: false, value: 'PermanentError: bucket does not exist' });
    expect(calls).toBe(1);
    const stored = await app.queues.queue('perm').getJob(job.id!);
    expect(stored?.attemptsMade).toBe(1);
    expect(await stored?.getState()).toBe('failed');
  });

  it('a transient error is retried with backoff until attempts run out', async () => {
    const seen: number[] = [];
    const app = await start([fn('flaky', async (_i, ctx) => { seen.push(ctx.attempt); throw new Error('connection reset'); })]);
    await app.startWorkers();
    const job = await app.queues.enqueue('flaky', { dataset: 'x' });
    expect((await outcome(app, 'flaky', job.id!)).ok).toBe(false);
    expect(seen).toEqual([1, 2, 3]);
    expect((await app.queues.queue('flaky').getJob(job.id!))?.attemptsMade).toBe(3);
  });

  it('a transient error followed by success completes the job', async () => {
    const app = await start([fn('recovers', async (_i, ctx) => { if (ctx.attempt < 2) throw new Error('timeout'); return { attempt: ctx.attempt }; })]);
    await app.startWorkers();
    const job = await app.queues.enqueue('recovers', { dataset: 'x' });
    expect(await outcome(app, 'recovers', job.id!)).toEqual({ ok: true, value: { attempt: 2 } });
  });

  it('invalid job data never reaches the handler and fails once, naming the field', async () => {
    let calls = 0;
    const app = await start([fn('strict', async () => { calls += 1; })]);
    await app.startWorkers();
    // enqueue() refuses it outright: no job is created.
    await expect(app.queues.enqueue('strict', { dataset: 42 })).rejects.toThrow('invalid input for strict: dataset: Invalid input: expected string, received number');
    expect(await app.queues.queue('strict').count()).toBe(0);
    // A payload that bypasses enqueue() (another producer, a hand-edited job) is caught by the runner.
    const job = await app.queues.queue('strict').add('strict', { n: 'seven' }, { attempts: 3 });
    const result = await outcome(app, 'strict', job.id!);
    expect(result.ok).toBe(false);
    expect(result.value).toMatch(/InvalidInputError: invalid input for strict: dataset: Required; n: Invalid input: expected number/);
    expect(calls).toBe(0);
    expect((await app.queues.queue('strict').getJob(job.id!))?.attemptsMade).toBe(1);
    const failures = (await app.recorder.samples()).find((s) => s.name === 'lifeboat_job_failures_total');
    expect(failures).toEqual({ name: 'lifeboat_job_failures_total', labels: { fn: 'strict' }, value: 1 });
  });

  it('fans an event out to subscribers once per dedupe key, and to the metrics recorder', async () => {
    const verified: string[] = [];
    const producer = fn('producer', async (i, ctx) => {
      const payload = { dataset: i.dataset, kind: 'postgres', target: 't', bucket: 'b', key: 'k1', etag: 'e1', size: 10, startedAt: '2026-11-26T02:00:00Z', finishedAt: '2026-11-26T02:00:05Z' };
      await ctx.emit('backup.uploaded', payload);
      await ctx.emit('backup.uploaded', payload); // a duplicate delivery
      await ctx.emit('backup.uploaded', { ...payload, etag: 'e2' }); // a new version of the object
    });
    const consumer = defineFunction({
      name: 'consumer',
      description: 'records what it was asked to verify',
      input: z.object({ dataset: z.string(), key: z.string(), etag: z.string() }),
      triggers: [{ event: 'backup.uploaded', dedupe: (e: { bucket: string; key: string; etag: string }) => `${e.bucket}/${e.key}/${e.etag}` }],
      retries: { attempts: 1, backoffMs: 10 },
      concurrency: 1,
      timeoutMs: 5000,
      handler: async (i) => { verified.push(i.etag); },
    });
    const app = await start([producer, consumer]);
    await app.startWorkers();
    const job = await app.queues.enqueue('producer', { dataset: 'pg' });
    expect(await outcome(app, 'producer', job.id!)).toEqual({ ok: true, value: null });
    const deadline = Date.now() + 10_000;
    // The handler runs before BullMQ marks the job completed: poll for both.
    while ((verified.length < 2 || (await app.queues.queue('consumer').getCompletedCount()) < 2) && Date.now() < deadline) await sleep(50);
    await sleep(300); // give a wrongly duplicated job the chance to run
    expect(verified.sort()).toEqual(['e1', 'e2']);
    expect(await app.queues.queue('consumer').getCompletedCount()).toBe(2);
    const samples = await app.recorder.samples();
    expect(samples).toContainEqual({ name: 'lifeboat_backup_last_success_timestamp_seconds', labels: { dataset: 'pg', kind: 'postgres' }, value: Date.parse('2026-11-26T02:00:05Z') / 1000 });
    expect(samples).toContainEqual({ name: 'lifeboat_backup_size_bytes', labels: { dataset: 'pg', kind: 'postgres' }, value: 10 });
  });

  it('aborts ctx.signal at the timeout and retries, even if the handler ignores the signal', async () => {
    const signals: AbortSignal[] = [];
    const app = await start([
      fn('slow', async (_i, ctx) => {
        signals.push(ctx.signal);
        await sleep(2000); // ignores its signal
      }, { timeoutMs: 100, retries: { attempts: 2, backoffMs: 10 } }),
    ]);
    await app.startWorkers();
    const job = await app.queues.enqueue('slow', { dataset: 'x' });
    const result = await outcome(app, 'slow', job.id!);
    expect(result).toEqual({ ok: false, value: 'timed out after 100 ms' });
    expect(signals.map((s) => s.aborted)).toEqual([true, true]);
    expect((await app.queues.queue('slow').getJob(job.id!))?.attemptsMade).toBe(2);
  });

  it('shutdown lets a running job finish within the grace period', async () => {
    let finished = false;
    const app = await start([fn('steady', async () => { await sleep(300); finished = true; })]);
    const group = await app.startWorkers();
    const job = await app.queues.enqueue('steady', { dataset: 'x' });
    while ((await job.getState()) !== 'active') await sleep(20);
    await group.close();
    expect(finished).toBe(true);
    expect(await job.getState()).toBe('completed');
  });

  it('shutdown past the grace period aborts the handler and leaves the job for a retry', async () => {
    const config = testConfig({ server: { shutdownGraceMs: 100 } });
    let sawAbort = false;
    const app = await start([
      fn('stuck', async (_i, ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
        sawAbort = true;
        ctx.signal.throwIfAborted();
      }, { retries: { attempts: 3, backoffMs: 60_000 } }),
    ], config);
    const group = await app.startWorkers();
    const job = await app.queues.enqueue('stuck', { dataset: 'x' });
    while ((await job.getState()) !== 'active') await sleep(20);
    await group.close();
    expect(sawAbort).toBe(true);
    const stored = await app.queues.queue('stuck').getJob(job.id!);
    expect(await stored!.getState()).toBe('delayed'); // waiting for its retry, not failed
    expect(stored!.failedReason).toBe('worker is shutting down');
  });

  it('ctx.progress reaches the BullMQ job coalesced to one report a second, the last one always', async () => {
    const app = await start([
      fn('progressing', async (_i, ctx) => {
        for (let bytes = 1; bytes <= 20_000; bytes++) {
          ctx.progress({ phase: 'copying', bytes, total: 20_000 });
          if (bytes % 5000 === 0) await sleep(600);
        }
        return 'done';
      }),
    ]);
    await app.startWorkers();
    const seen: unknown[] = [];
    const connection = app.queues.connection.duplicate(); // QueueEvents blocks on its connection
    const events = new QueueEvents('progressing', { connection, prefix: app.config.redis.prefix });
    events.on('progress', ({ data }) => seen.push(data));
    await events.waitUntilReady();
    try {
      const job = await app.queues.enqueue('progressing', { dataset: 'x' });
      expect(await outcome(app, 'progressing', job.id!)).toEqual({ ok: true, value: 'done' });
      expect((await app.queues.jobStatus('progressing', job.id!))!.progress).toEqual({ phase: 'copying', bytes: 20_000, total: 20_000 });
      await sleep(200);
      // 2.4 s of work: about three reports, not 20,000.
      expect(seen.length).toBeGreaterThanOrEqual(2);
      expect(seen.length).toBeLessThanOrEqual(5);
      expect(seen.at(-1)).toEqual({ phase: 'copying', bytes: 20_000, total: 20_000 });
    } finally {
      await events.close();
      connection.disconnect();
    }
  });

  it('runs inline without Redis: same validation, retries and fan-out', async () => {
    let attempts = 0;
    const producer = fn('producer', async (_i, ctx) => {
      attempts += 1;
      if (attempts === 1) throw new Error('transient');
      await ctx.emit('backup.verified', { dataset: 'pg', kind: 'postgres', key: 'k', size: 1, checkedAt: '2026-11-26T02:00:00Z' });
      return 'done';
    });
    const { openLocal } = await import('../lib/plumbing/app.js');
    const deps = openLocal(testConfig(), logger());
    const results = await runInline([producer], 'producer', { dataset: 'pg' }, deps);
    expect(results).toEqual([{ fn: 'producer', jobId: expect.any(String), ok: true, attempts: 2, result: 'done' }]);
    expect(await deps.metrics.samples()).toContainEqual({ name: 'lifeboat_verify_last_success_timestamp_seconds', labels: { dataset: 'pg', kind: 'postgres' }, value: Date.parse('2026-11-26T02:00:00Z') / 1000 });
    const bad = await runInline([producer], 'producer', { nope: true }, deps);
    expect(bad).toEqual([{ fn: 'producer', jobId: expect.any(String), ok: false, attempts: 1, error: expect.stringContaining('dataset: Required'), failure: expect.objectContaining({ name: 'InvalidInputError', problems: ['dataset: Required'] }) }]);
  });
});

describe('cron triggers', () => {
  const datasets = (ids: string[]) => ids.map((id) => ({ id, kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1/postgres' }, target: { name: 'hub', bucket: 'postgres', prefix: `${id}/` }, schedule: '* * * * * *' }));

  it('upserts one scheduler per configured dataset and removes those no longer configured', async () => {
    const scheduled = defineFunction({
      name: 'nightly',
      description: 'per-dataset cron',
      input,
      triggers: [{ cron: (config: Config) => config.datasets.map((d) => ({ id: d.id, pattern: '0 2 * * *', input: { dataset: d.id } })) }],
      retries: { attempts: 1, backoffMs: 10 },
      concurrency: 1,
      timeoutMs: 1000,
      handler: async () => {},
    });
    const config = testConfig({ datasets: datasets(['a', 'b']), server: { timezone: 'Europe/Berlin' } });
    const app = await start([scheduled], config);
    const first = await syncSchedulers([scheduled], config, app.queues, logger());
    expect(first.upserted.map((u) => u.id)).toEqual(['a', 'b']);
    const stored = await app.queues.queue('nightly').getJobSchedulers();
    expect(stored.map((s) => [s.key, s.pattern, s.tz]).sort()).toEqual([['a', '0 2 * * *', 'Europe/Berlin'], ['b', '0 2 * * *', 'Europe/Berlin']]);

    const shrunk = { ...config, datasets: config.datasets.filter((d) => d.id === 'b') };
    const second = await syncSchedulers([scheduled], shrunk, app.queues, logger());
    expect(second.removed).toEqual([{ fn: 'nightly', id: 'a' }]);
    expect((await app.queues.queue('nightly').getJobSchedulers()).map((s) => s.key)).toEqual(['b']);
  });

  it('a scheduled run carries its tick, the slot the scheduler planned, so keys are deterministic', async () => {
    const ticks: Date[] = [];
    const everySecond = defineFunction({
      name: 'ticker',
      description: 'records its tick',
      input,
      triggers: [{ cron: () => [{ id: 'every-second', pattern: '* * * * * *', input: { dataset: 'x' } }] }],
      retries: { attempts: 1, backoffMs: 10 },
      concurrency: 1,
      timeoutMs: 1000,
      handler: async (_i, ctx) => { ticks.push(ctx.tick); },
    });
    const config = testConfig();
    const app = await start([everySecond], config);
    await syncSchedulers([everySecond], config, app.queues, logger());
    await app.startWorkers();
    const deadline = Date.now() + 10_000;
    while (ticks.length < 2 && Date.now() < deadline) await sleep(50);
    expect(ticks.length).toBeGreaterThanOrEqual(2);
    for (const tick of ticks) expect(tick.getTime() % 1000).toBe(0);
    // Consecutive slots; a loaded machine may skip one, never land between two.
    const gap = ticks[1]!.getTime() - ticks[0]!.getTime();
    expect(gap).toBeGreaterThan(0);
    expect(gap % 1000).toBe(0);
  });
});
