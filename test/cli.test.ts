import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { CLI, psql, REDIS_URL, runCli } from './helpers.js';

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
    expect(good).toMatchObject({ code: 0, stdout: expect.stringContaining('ok (1 target, 1 dataset: notes [postgres])') });
  });

  it('has --help everywhere and meaningful exit codes for usage errors', async () => {
    for (const args of [[], ['worker'], ['serve'], ['run'], ['backups', 'ls'], ['config', 'check'], ['demo']]) {
      const run = await lifeboat([...args, '--help']);
      expect(run.code, args.join(' ')).toBe(0);
      expect(run.stdout).toContain('Usage: lifeboat');
    }
    expect((await lifeboat(['run', 'dumpPostgres'])).code).toBe(2); // missing --dataset
    expect((await lifeboat(['run', 'nope', '--dataset', 'notes', '-c', configFile])).code).toBe(2);
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
      expect(table.stdout).toMatch(/notes\s+20261102T020000Z\s+\d+ (s|min) ago\s+[\d.]+ KiB\s+-\s+verified \d+ (s|min) ago\s+-\s+notes\/20261102T020000Z\/pg_dumpall\.sql\.gz/);
    } finally {
      const exited = new Promise<number | null>((resolve) => worker.on('close', resolve));
      worker.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    expect(log).toContain('draining');
  });

  it('demo dumps, verifies by fan-out and prints the catalog; without serving it prints no URL, only how to serve', async () => {
    const run = await lifeboat(['demo', '--no-serve', '-c', configFile]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/notes\s+\d{8}T\d{6}Z\s+\d+ (s|min) ago\s+[\d.]+ KiB\s+-\s+verified/);
    expect(run.stdout).not.toMatch(/http:\/\//);
    expect(run.stdout).toContain(`Web UI, Bull Board and /metrics: run \`npx lifeboat serve -c ${configFile}\``);
  });
});

/** Starts `lifeboat worker` on a config and resolves once it consumes; stop() sends SIGTERM and resolves with its exit code. */
async function startWorker(config: string): Promise<{ stop(): Promise<number | null> }> {
  const worker: ChildProcess = spawn(process.execPath, [CLI, 'worker', '-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  worker.stderr!.on('data', (c) => (log += c));
  const exited = new Promise<number | null>((resolve) => worker.on('close', resolve));
  const deadline = Date.now() + 20_000;
  while (!log.includes('worker started')) {
    if (Date.now() > deadline || worker.exitCode !== null) {
      worker.kill('SIGKILL');
      throw new Error(`worker did not start: ${log}`);
    }
    await sleep(50);
  }
  return {
    stop: () => {
      worker.kill('SIGTERM');
      return exited;
    },
  };
}

describe('lifeboat run: one job per tick', () => {
  it('the same tick twice is one job: the second run says so and exits 0, or waits for it with --wait', async () => {
    const tick = '2026-11-06T02:00:00Z';
    const jobId = 'dumpPostgres-notes-20261106T020000Z';
    const args = ['run', 'dumpPostgres', '--dataset', 'notes', '--tick', tick, '-c', configFile];
    // Two operators at once, before any worker runs: one job.
    const [x, y] = await Promise.all([lifeboat(args), lifeboat(args)]);
    expect([x.code, y.code]).toEqual([0, 0]);
    const said = [x.stderr, y.stderr].map((e) => e.trim().split('\n').at(-1)).sort();
    expect(said).toEqual([`enqueued dumpPostgres job ${jobId} for dataset notes`, `job ${jobId} for dumpPostgres notes tick 2026-11-06T02:00:00.000Z already exists (state: waiting)`].sort());
    expect([x, y].map((r) => JSON.parse(r.stdout).created).sort()).toEqual([false, true]);

    const worker = await startWorker(configFile);
    try {
      const waited = await lifeboat([...args, '--wait']);
      expect(waited.code, waited.stderr).toBe(0);
      expect(JSON.parse(waited.stdout)).toMatchObject({ fn: 'dumpPostgres', jobId, ok: true, result: { key: 'notes/20261106T020000Z/pg_dumpall.sql.gz' } });

      const again = await lifeboat(args);
      expect(again.code).toBe(0);
      expect(again.stderr).toContain(`job ${jobId} for dumpPostgres notes tick 2026-11-06T02:00:00.000Z already exists (state: completed)`);
      expect(JSON.parse(again.stdout)).toEqual({ fn: 'dumpPostgres', jobId, created: false, state: 'completed' });
    } finally {
      expect(await worker.stop()).toBe(0);
    }
    const redis = new Redis(REDIS_URL);
    try {
      const jobs = (await redis.keys(`${prefix}:dumpPostgres:dumpPostgres-notes-20261106T020000Z*`)).filter((k) => !k.endsWith(':lock') && !k.endsWith(':logs'));
      expect(jobs).toEqual([`${prefix}:dumpPostgres:${jobId}`]);
    } finally {
      redis.disconnect();
    }
  });
});

describe('lifeboat: input refused before anything runs, short inline retries, exit codes', () => {
  let extraConfig: string;
  let redisDownConfig: string;
  let bin: string;
  const farEnv = { LB_FAR_KEY: 'far-access', LB_FAR_SECRET: 'far-secret' };
  const PASSWORD = 'pw-S3cret-42';

  // notes: the file's cluster; down: Postgres on a closed port; far: an S3 target on a closed port.
  beforeAll(async () => {
    extraConfig = join(dir, 'extra.yaml');
    await writeFile(
      extraConfig,
      `redis:
  url: redis://127.0.0.1:6379
  prefix: ${prefix}-extra
targets:
  local: { kind: dir, path: ./data }
  far: { kind: s3, endpoint: "http://127.0.0.1:1", accessKeyId: "\${env:LB_FAR_KEY}", secretAccessKey: "\${env:LB_FAR_SECRET}" }
datasets:
  - id: notes
    kind: postgres
    source: { mode: direct, url: "${cluster.url}" }
    target: { name: local, bucket: postgres }
  - id: down
    kind: postgres
    source: { mode: direct, url: "postgres://postgres@127.0.0.1:1/postgres" }
    target: { name: local, bucket: down }
  - id: far
    kind: postgres
    source: { mode: direct, url: "${cluster.url}" }
    target: { name: far, bucket: postgres }
`,
    );
    await writeFile(join(dir, 'bad-target.yaml'), (await readFile(extraConfig, 'utf8')).replace('target: { name: far,', 'target: { name: nas,'));
    redisDownConfig = join(dir, 'redis-down.yaml');
    await writeFile(redisDownConfig, (await readFile(configFile, 'utf8')).replace('redis://127.0.0.1:6379', 'redis://127.0.0.1:1'));
    // A psql that writes down its command line (what `ps` shows) and whether it got PGPASSWORD.
    bin = await mkdtemp(join(tmpdir(), 'lb-cli-bin-'));
    const realPsql = execFileSync('which', ['psql']).toString().trim();
    await writeFile(join(bin, 'psql'), `#!/bin/bash\nprintf '%s\\n' "$*" >> "${bin}/argv.log"\nprintf '%s\\n' "\${PGPASSWORD-<unset>}" >> "${bin}/pgpassword.log"\nexec ${realPsql} "$@"\n`);
    await chmod(join(bin, 'psql'), 0o755);
    // A verified backup of notes for restore, verify and drill.
    const made = await lifeboat(['run', 'dumpPostgres', '--dataset', 'notes', '--inline', '--tick', '2026-11-05T02:00:00Z', '-c', extraConfig], { env: { ...farEnv, LOG_LEVEL: 'error' } });
    expect(made.code, made.stderr).toBe(0);
  });

  const extra = (args: string[], env: NodeJS.ProcessEnv = {}) => lifeboat(args.includes('-c') ? args : [...args, '-c', extraConfig], { env: { ...farEnv, LOG_LEVEL: 'error', ...env } });

  it('run refuses unknown functions, bad flag values and datasets of the wrong kind with exit 2, naming them, before any job exists', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['run', 'nope', '--dataset', 'notes'], /unknown function "nope" \(known: dumpPostgres, verifyObject, .*pruneCheck.*\)/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--tick', '2026-02-30'], /option '--tick <iso-time>' argument '2026-02-30' is invalid/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--tick', '2026-02-30T02:00:00Z'], /'--tick <iso-time>' argument '2026-02-30T02:00:00Z' is invalid\. 2026-02-30T02:00:00Z is not a real time \(it would become 2026-03-02T02:00:00\.000Z\)/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--wait', '--timeout', 'abc'], /option '--timeout <seconds>' argument 'abc' is invalid\. expected a positive number of seconds/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--wait', '--timeout', '0'], /'--timeout <seconds>' argument '0' is invalid/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--inline', '--retries', '0'], /'--retries <n>' argument '0' is invalid\. expected a whole number of attempts from 1 to 10/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--inline', '--retries', '11'], /'--retries <n>' argument '11' is invalid/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--inline', '--retries', '1.5'], /'--retries <n>' argument '1\.5' is invalid/],
      [['run', 'dumpPostgres', '--dataset', 'notes', '--retries', '3'], /--retries: only with --inline/],
      [['run', 'mirrorBucket', '--dataset', 'notes'], /mirrorBucket takes bucket datasets, but dataset "notes" is a postgres dataset/],
      [['run', 'uploadEtcd', '--dataset', 'notes', '--inline'], /uploadEtcd takes etcd datasets, but dataset "notes" is a postgres dataset/],
      [['run', 'drillRestore', '--dataset', 'nope'], /no dataset "nope" in the config/],
    ];
    // A prefix of its own: afterwards Redis must hold nothing under it, not a job, not a metric.
    const refusals = join(dir, 'refusals.yaml');
    await writeFile(refusals, (await readFile(configFile, 'utf8')).replace(`prefix: ${prefix}`, `prefix: ${prefix}-refusals`));
    const runs = await Promise.all(cases.map(([args]) => lifeboat([...args, '-c', refusals])));
    runs.forEach((run, i) => {
      expect(run.code, cases[i]![0].join(' ')).toBe(2);
      expect(run.stderr, cases[i]![0].join(' ')).toMatch(cases[i]![1]);
    });
    const redis = new Redis(REDIS_URL);
    try {
      expect(await redis.keys(`${prefix}-refusals:*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
  });

  it('restore checks --to before reading anything, and never echoes a password', async () => {
    // far's target is unreachable: had restore read first, it would fail on that (exit 3) instead.
    for (const to of ['notaurl', 'mysql://root:hunter2-pw@db/x', 'postgres://u:hunter2-pw@[::1/x']) {
      const started = Date.now();
      const run = await extra(['restore', 'far', '--to', to]);
      expect(run.code, to).toBe(2);
      expect(run.stderr, to).toMatch(/lifeboat: --to: /);
      expect(run.stderr + run.stdout).not.toContain('hunter2-pw');
      expect(Date.now() - started).toBeLessThan(30_000);
    }
  });

  it('a password in restore --to reaches psql in PGPASSWORD, never on its command line or in the output', async () => {
    const locked = await startThrowawayCluster({ password: PASSWORD });
    const path = { PATH: `${bin}:${process.env.PATH}` };
    try {
      const run = await extra(['restore', 'notes', '--backup', '20261105T020000Z', '--to', `${locked.url}&password=${PASSWORD}`], path);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('sha256 matches the manifest');
      expect(await psql(`${locked.url}&password=${PASSWORD}`, 'select count(*) from notes')).toBe('1000');

      const refused = await extra(['restore', 'notes', '--to', `postgres://postgres:${PASSWORD}@127.0.0.1:1/postgres`, '--retries', '1'], path);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toContain('connecting to postgres://127.0.0.1:1');
      for (const out of [run.stdout, run.stderr, refused.stdout, refused.stderr]) expect(out).not.toContain(PASSWORD);

      const argv = await readFile(join(bin, 'argv.log'), 'utf8');
      expect(argv.split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(3);
      expect(argv).not.toContain(PASSWORD);
      const passwords = (await readFile(join(bin, 'pgpassword.log'), 'utf8')).split('\n').filter(Boolean);
      expect(new Set(passwords)).toEqual(new Set([PASSWORD]));
    } finally {
      await locked.stop();
    }
  });

  it('run --inline retries twice, 2 s apart, printing each failed attempt; --retries changes it', async () => {
    const started = Date.now();
    const run = await extra(['run', 'dumpPostgres', '--dataset', 'down', '--inline']);
    expect(run.code).toBe(1);
    const retries = run.stderr.split('\n').filter((l) => /^lifeboat: .* attempt /.test(l));
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatch(/^lifeboat: dumpPostgres attempt 1\/2 failed: .*Connection refused.*; retrying in 2 s$/);
    expect(JSON.parse(run.stdout)).toMatchObject({ fn: 'dumpPostgres', ok: false, attempts: 2 });
    expect(Date.now() - started).toBeLessThan(30_000);

    const three = await extra(['run', 'dumpPostgres', '--dataset', 'down', '--inline', '--retries', '3']);
    expect(three.stderr.split('\n').filter((l) => /^lifeboat: .* attempt /.test(l)).map((l) => l.replace(/ failed: .*/, ''))).toEqual(['lifeboat: dumpPostgres attempt 1/3', 'lifeboat: dumpPostgres attempt 2/3']);
    expect(JSON.parse(three.stdout)).toMatchObject({ ok: false, attempts: 3 });

    const once = await extra(['run', 'dumpPostgres', '--dataset', 'down', '--inline', '--retries', '1']);
    expect(once.stderr).not.toMatch(/^lifeboat: .* attempt /m);
    expect(JSON.parse(once.stdout)).toMatchObject({ ok: false, attempts: 1 });

    // verify and drill take --retries too, and print the same way.
    const verify = await extra(['verify', 'far', '--retries', '2']);
    expect(verify.stderr).toMatch(/^lifeboat: verifyObject attempt 1\/2 failed: .*; retrying in 2 s$/m);
    const drill = await extra(['drill', 'far', '--retries', '2']);
    expect(drill.stderr).toMatch(/^lifeboat: drillRestore attempt 1\/2 failed: TargetUnreachableError: .*; retrying in 2 s$/m);
  });

  it('exit codes follow the README table, command by command: 0 ok, 1 failed, 2 usage, 3 unavailable', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const table: Array<[string, string[], number]> = [
        ['config check: ok', ['config', 'check'], 0],
        ['config check: usage', ['config', 'check', '-c', join(dir, 'bad-target.yaml')], 2],
        ['run: ok', ['run', 'verifyObject', '--dataset', 'notes', '--inline'], 0],
        ['run: failed', ['run', 'dumpPostgres', '--dataset', 'down', '--inline', '--retries', '1'], 1],
        ['run: usage', ['run', 'nope'], 2],
        ['run: unavailable (Redis on a closed port)', ['run', 'dumpPostgres', '--dataset', 'notes', '-c', redisDownConfig], 3],
        ['verify: ok', ['verify', 'notes'], 0],
        ['verify: failed (no such backup)', ['verify', 'notes', '--backup', '20200101T000000Z'], 1],
        ['verify: usage', ['verify', 'nope'], 2],
        ['verify: unavailable (target)', ['verify', 'far', '--retries', '1'], 3],
        ['restore: ok', ['restore', 'notes', '--to', fresh.url], 0],
        ['restore: failed (no such backup)', ['restore', 'notes', '--backup', '20200101T000000Z', '--to', fresh.url], 1],
        ['restore: usage', ['restore', 'notes', '--to', 'notaurl'], 2],
        ['restore: unavailable (destination)', ['restore', 'notes', '--to', 'postgres://postgres@127.0.0.1:1/postgres', '--retries', '1'], 3],
        ['restore: unavailable (target)', ['restore', 'far', '--to', fresh.url, '--retries', '1'], 3],
        ['drill: ok', ['drill', 'notes'], 0],
        ['drill: failed (no such backup)', ['drill', 'notes', '--backup', '20200101T000000Z'], 1],
        ['drill: usage', ['drill', 'nope'], 2],
        ['drill: unavailable (target)', ['drill', 'far', '--retries', '1'], 3],
        ['backups ls: ok', ['backups', 'ls', '--dataset', 'notes'], 0],
        ['backups ls: usage', ['backups', 'ls', '--dataset', 'nope'], 2],
      ];
      // Six at a time; a wrong code shows its stderr.
      const codes: Array<[string, number | null, string]> = [];
      for (let i = 0; i < table.length; i += 6) {
        codes.push(...(await Promise.all(table.slice(i, i + 6).map(async ([name, args, expected]): Promise<[string, number | null, string]> => {
          const run = await extra(args);
          return [name, run.code, run.code === expected ? '' : run.stderr.slice(-400)];
        }))));
      }
      expect(codes).toEqual(table.map(([name, , code]) => [name, code, '']));
    } finally {
      await fresh.stop();
    }
  });
});
