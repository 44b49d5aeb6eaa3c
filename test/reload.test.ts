import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allFunctions } from '../functions/index.js';
import { freePort } from '../lib/plumbing/net.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { QueueSet } from '../queue/queues.js';
import { CLI, psql, REDIS_URL } from './helpers.js';

// `serve` and `worker` as an operator runs them (the built CLI), reloading the config file they were started with.

interface LogLine {
  msg?: string;
  level?: number;
  [field: string]: unknown;
}

/** A CLI process and its stderr: pino's JSON lines, parsed. */
class Running {
  readonly lines: LogLine[] = [];
  readonly exited: Promise<number | null>;
  #text = '';

  constructor(readonly child: ChildProcess) {
    child.stderr!.on('data', (chunk) => {
      this.#text += chunk;
      const complete = this.#text.split('\n');
      this.#text = complete.pop()!;
      for (const line of complete) this.lines.push(line.startsWith('{') ? (JSON.parse(line) as LogLine) : { msg: line });
    });
    this.exited = new Promise((resolve) => child.on('close', resolve));
  }

  /** The first line with this message (after `skip` such lines), within `timeoutMs`. */
  async line(msg: string, options: { skip?: number; timeoutMs?: number } = {}): Promise<LogLine> {
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    for (;;) {
      const found = this.lines.filter((l) => l.msg === msg)[options.skip ?? 0];
      if (found) return found;
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`no "${msg}" in the log:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`);
      await sleep(50);
    }
  }

  count(msg: string): number {
    return this.lines.filter((l) => l.msg === msg).length;
  }

  /** SIGTERM; resolves with the exit code and how long the exit took. */
  async stop(): Promise<{ code: number | null; ms: number }> {
    const started = Date.now();
    this.child.kill('SIGTERM');
    const code = await this.exited;
    return { code, ms: Date.now() - started };
  }
}

function start(command: 'serve' | 'worker', configFile: string): Running {
  return new Running(spawn(process.execPath, [CLI, command, '-c', configFile], { env: { ...process.env, LOG_LEVEL: 'debug' }, stdio: ['ignore', 'ignore', 'pipe'] }));
}

/** Generous: on a busy machine the CLI alone takes seconds to load. */
const STARTUP_MS = 30_000;

let cluster: ThrowawayCluster;
let dir: string;

beforeAll(async () => {
  cluster = await startThrowawayCluster();
  await psql(cluster.url, "create table notes (id int primary key, body text); insert into notes select g, repeat('n', 50) from generate_series(1, 1000) g");
  dir = await mkdtemp(join(tmpdir(), 'lb-reload-'));
});

afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A config file: a dir target, and a postgres dataset per id on the throwaway cluster. */
function configText(prefix: string, datasets: Array<{ id: string; pgDumpall?: string }>, options: { port?: number; extra?: string } = {}): string {
  return `redis: { url: "${REDIS_URL}", prefix: ${prefix} }
targets:
  local: { kind: dir, path: ./data }
datasets:
${datasets
  .map((d) => `  - id: ${d.id}
    kind: postgres
    source: { mode: direct, url: "${cluster.url}"${d.pgDumpall ? `, pgDumpall: "${d.pgDumpall}"` : ''} }
    target: { name: local, bucket: ${d.id}-bucket }
    schedule: "0 2 * * *"
`)
  .join('')}server: { port: ${options.port ?? 0}, shutdownGraceMs: 2000 }
${options.extra ?? ''}`;
}

async function deleteKeys(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

describe('serve reloads its config', () => {
  const prefix = `lbtest-reload-serve-${randomUUID().slice(0, 8)}`;
  afterAll(() => deleteKeys(prefix));

  it('follows edits to the file, ignores SIGHUP without a change, keeps serving through a bad edit, and exits 0 on SIGTERM', async () => {
    const file = join(dir, 'serve.yaml');
    await writeFile(file, configText(prefix, [{ id: 'a' }]));
    const serve = start('serve', file);
    const redis = new Redis(REDIS_URL);
    const queues = new QueueSet(allFunctions, redis, prefix);
    try {
      const { address } = await serve.line('serving', { timeoutMs: STARTUP_MS });
      const datasets = async (at = address) => ((await (await fetch(`${at}/api/datasets`)).json()) as { datasets: Array<{ id: string }> }).datasets.map((d) => d.id);
      const schedulers = async () => (await queues.queue('dumpPostgres').getJobSchedulers()).map((s) => s.key).sort();
      expect(await datasets()).toEqual(['a']);

      // Added to the file: served and scheduled without a signal.
      await writeFile(file, configText(prefix, [{ id: 'a' }, { id: 'b' }]));
      const reloaded = await serve.line('config reloaded');
      expect(reloaded).toMatchObject({ source: file, added: ['b'], removed: [], changed: [], address });
      expect(await datasets()).toEqual(['a', 'b']);
      expect(await schedulers()).toEqual(['a', 'b']);

      serve.child.kill('SIGHUP');
      await serve.line('config unchanged');

      // Broken edits: the reason is logged, the last good config keeps serving.
      await writeFile(file, configText(prefix, [{ id: 'a' }], { extra: 'bogus: 1\n' }));
      const unknownKey = await serve.line('config reload failed: keeping the running config');
      expect(unknownKey).toMatchObject({ level: 50, source: file, problems: [expect.stringContaining('bogus')] });
      await writeFile(file, `${configText(prefix, [{ id: 'a' }])}datasets: [\n`);
      const badYaml = await serve.line('config reload failed: keeping the running config', { skip: 1 });
      expect(badYaml).toMatchObject({ level: 50, source: file, problems: expect.arrayContaining([expect.stringContaining('YAML: ')]) });
      expect(await datasets()).toEqual(['a', 'b']);
      expect(serve.count('config reloaded')).toBe(1);

      // Fixed (and b removed): reloaded, b's scheduler gone.
      await writeFile(file, configText(prefix, [{ id: 'a' }]));
      expect(await serve.line('config reloaded', { skip: 1 })).toMatchObject({ added: [], removed: ['b'], address });
      expect(await datasets()).toEqual(['a']);
      expect(await schedulers()).toEqual(['a']);

      // A new port that is taken: the old address keeps serving.
      const taken = createServer();
      await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
      await writeFile(file, configText(prefix, [{ id: 'a' }], { port: (taken.address() as AddressInfo).port }));
      const inUse = await serve.line('config reload failed: keeping the running config', { skip: 2 });
      expect(inUse.problems).toEqual([expect.stringContaining('EADDRINUSE')]);
      taken.close();
      expect(await datasets()).toEqual(['a']);

      // A free new port: listened on first, then the old one let go.
      const port = await freePort();
      await writeFile(file, configText(prefix, [{ id: 'a' }], { port }));
      const moved = await serve.line('serving on a new address');
      expect(moved).toMatchObject({ from: address, to: `http://127.0.0.1:${port}` });
      expect(await datasets(moved.to as string)).toEqual(['a']);
      await expect(fetch(`${address}/api/datasets`)).rejects.toThrow();

      const stopped = await serve.stop();
      expect(stopped.code).toBe(0);
      expect(stopped.ms).toBeLessThan(5000);
    } finally {
      serve.child.kill('SIGKILL');
      await queues.close();
      redis.disconnect();
    }
  });
});

describe('worker reloads its config', () => {
  const prefix = `lbtest-reload-worker-${randomUUID().slice(0, 8)}`;
  afterAll(() => deleteKeys(prefix));

  it('knows a dataset added by SIGHUP, lets a job running across the reload finish, and exits 0 on SIGTERM', async () => {
    // A pg_dumpall that takes a few seconds: the job is still running when the reload comes.
    const slowDumpall = join(dir, 'slow-pg_dumpall');
    await writeFile(slowDumpall, '#!/bin/sh\n[ "$1" = "--version" ] || sleep 6\nexec pg_dumpall "$@"\n');
    await chmod(slowDumpall, 0o755);
    const file = join(dir, 'worker.yaml');
    await writeFile(file, configText(prefix, [{ id: 'a', pgDumpall: slowDumpall }]));
    const worker = start('worker', file);
    const redis = new Redis(REDIS_URL);
    const queues = new QueueSet(allFunctions, redis, prefix);
    try {
      await worker.line('worker started', { timeoutMs: STARTUP_MS });
      const unknown = await queues.enqueue('dumpPostgres', { dataset: 'b', tick: '2026-11-01T02:00:00Z' });
      await expect(queues.waitFor('dumpPostgres', unknown.id!, 10_000)).rejects.toThrow(/dataset "b" is not in/);

      const running = await queues.enqueue('dumpPostgres', { dataset: 'a', tick: '2026-11-01T02:00:00Z' });
      for (let i = 0; i < 100 && (await running.getState()) !== 'active'; i++) await sleep(50);
      expect(await running.getState()).toBe('active');

      await writeFile(file, configText(prefix, [{ id: 'a', pgDumpall: slowDumpall }, { id: 'b' }]));
      worker.child.kill('SIGHUP');
      expect(await worker.line('config reloaded')).toMatchObject({ source: file, added: ['b'], removed: [], changed: [], restarted: expect.arrayContaining(['dumpPostgres', 'verifyObject']) });
      // The file watch and the SIGHUP, within the debounce: one reload.
      await sleep(500);
      expect(worker.count('config reloaded')).toBe(1);
      expect(await running.getState()).toBe('active');

      const added = await queues.enqueue('dumpPostgres', { dataset: 'b', tick: '2026-11-02T02:00:00Z' });
      expect(await queues.waitFor('dumpPostgres', added.id!, 15_000)).toMatchObject({ key: 'b/20261102T020000Z/pg_dumpall.sql.gz' });
      expect(await queues.waitFor('dumpPostgres', running.id!, 15_000)).toMatchObject({ key: 'a/20261101T020000Z/pg_dumpall.sql.gz' });

      const stopped = await worker.stop();
      expect(stopped.code).toBe(0);
      expect(stopped.ms).toBeLessThan(5000);
    } finally {
      worker.child.kill('SIGKILL');
      await queues.close();
      redis.disconnect();
    }
  });
});
