import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { CLI, psql, runCli } from './helpers.js';

// The built CLI (npm test builds first), as an operator runs it: real Postgres, real Redis, a dir target.
const lifeboat = runCli;

let cluster: ThrowawayCluster;
let dir: string;
let configFile: string;
const prefix = `lbtest-cli-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  cluster = await startThrowawayCluster();
  await psql(cluster.url, 'create table notes (id int primary key, body text); insert into notes select g, repeat(\'n\', 50) from generate_series(1, 1000) g');
  dir = await mkdtemp(join(tmpdir(), 'lb-cli-'));
  configFile = join(dir, 'lifeboat.yaml');
  await writeFile(
    configFile,
    `redis:
  url: redis://127.0.0.1:6379
  prefix: ${prefix}
targets:
  local:
    kind: dir
    path: ./data
datasets:
  - id: notes
    kind: postgres
    source:
      mode: direct
      url: "${cluster.url}"
    target: { name: local, bucket: postgres }
    schedule: "0 2 * * *"
server:
  port: 0
  shutdownGraceMs: 5000
`,
  );
});

afterAll(async () => {
  await cluster?.stop();
});

describe('lifeboat CLI', () => {
  it('config check names each bad field by path, exits 2, and never echoes a secret', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(
      bad,
      `targets:
  hub: { kind: s3, endpoint: "http://pi:9000", accessKeyId: "\${env:LB_MISSING_KEY}", secretAccessKey: "inline-secret-value" }
datasets:
  - id: main
    kind: postgres
    source: { mode: direct, url: "postgres://u:pw-in-url@db/postgres" }
    target: { name: hub, bucket: postgres }
  - id: second
    kind: postgres
    source: { mode: direct }
    target: { name: nas, bucket: pg }
`,
    );
    const run = await lifeboat(['config', 'check', '-c', bad]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('targets.hub.accessKeyId: environment variable LB_MISSING_KEY is not set');
    expect(run.stderr).toContain('targets.hub.secretAccessKey: must be a ${env:NAME} or ${file:/path} reference');
    expect(run.stderr).toContain('datasets[0].source.url: must be a valid URL without a password');
    expect(run.stderr).toContain('datasets[1].source.url: Required');
    expect(run.stderr).toContain('datasets[1].target.name: unknown target "nas" (known: hub)');
    expect(run.stderr + run.stdout).not.toMatch(/inline-secret-value|pw-in-url/);

    const good = await lifeboat(['config', 'check'], { env: { LIFEBOAT_CONFIG: configFile } });
    expect(good).toMatchObject({ code: 0, stdout: expect.stringContaining('ok (1 targets, 1 datasets: notes [postgres])') });
  });

  it('has --help everywhere and meaningful exit codes for usage errors', async () => {
    for (const args of [[], ['worker'], ['serve'], ['run'], ['backups', 'ls'], ['config', 'check'], ['demo']]) {
      const run = await lifeboat([...args, '--help']);
      expect(run.code, args.join(' ')).toBe(0);
      expect(run.stdout).toContain('Usage: lifeboat');
    }
    expect((await lifeboat(['run', 'dumpPostgres'])).code).toBe(2); // missing --dataset
    expect((await lifeboat(['run', 'nope', '--dataset', 'notes', '-c', configFile])).code).toBe(1);
    const unknown = await lifeboat(['run', 'dumpPostgres', '--dataset', 'nope', '-c', configFile]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no dataset "nope" in the config (known: notes)');
  });

  it('run --inline dumps and verifies without Redis; backups ls reads the target alone', async () => {
    const run = await lifeboat(['run', 'dumpPostgres', '--dataset', 'notes', '--inline', '--tick', '2026-11-01T02:00:00Z', '-c', configFile], { env: { LOG_LEVEL: 'error' } });
    expect(run.code, run.stderr).toBe(0);
    const results = run.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(results.map((r) => [r.fn, r.ok])).toEqual([['dumpPostgres', true], ['verifyObject', true]]);

    const ls = await lifeboat(['backups', 'ls', '--json', '-c', configFile], { env: { LOG_LEVEL: 'error' } });
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout.trim().split('\n')[0]!)).toMatchObject({ dataset: 'notes', id: '20261101T020000Z', status: 'verified', key: 'notes/20261101T020000Z/pg_dumpall.sql.gz' });
  });

  it('worker consumes what run --wait enqueues, and drains on SIGTERM', async () => {
    const worker: ChildProcess = spawn(process.execPath, [CLI, 'worker', '-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    worker.stderr!.on('data', (c) => (log += c));
    try {
      for (let i = 0; i < 100 && !log.includes('worker started'); i++) await sleep(100);
      const run = await lifeboat(['run', 'dumpPostgres', '--dataset', 'notes', '--wait', '--tick', '2026-11-02T02:00:00Z', '-c', configFile]);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({ fn: 'dumpPostgres', ok: true, result: { key: 'notes/20261102T020000Z/pg_dumpall.sql.gz' } });
      for (let i = 0; i < 100; i++) {
        const ls = await lifeboat(['backups', 'ls', '--json', '--dataset', 'notes', '-c', configFile], { env: { LOG_LEVEL: 'error' } });
        if (ls.stdout.includes('"id":"20261102T020000Z","status":"verified"')) break;
        await sleep(100);
      }
      const table = await lifeboat(['backups', 'ls', '-c', configFile]);
      expect(table.stdout).toMatch(/notes\s+20261102T020000Z\s+\S+\s+[\d.]+ KiB\s+verified/);
    } finally {
      const exited = new Promise<number | null>((resolve) => worker.on('close', resolve));
      worker.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    expect(log).toContain('draining');
  });

  it('demo dumps, verifies by fan-out, prints the catalog and the URLs', async () => {
    const run = await lifeboat(['demo', '--no-serve', '-c', configFile]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/notes\s+\d{8}T\d{6}Z\s+\S+\s+[\d.]+ KiB\s+verified/);
    expect(run.stdout).toMatch(/Bull Board: http:\/\/127\.0\.0\.1:\d+\/queues/);
    expect(run.stdout).toMatch(/Metrics:\s+http:\/\/127\.0\.0\.1:\d+\/metrics/);
  });
});
