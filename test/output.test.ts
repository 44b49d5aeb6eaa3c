import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { progressPrinter } from '../lib/cli/progress.js';
import { resultLine, summarizeResult } from '../lib/cli/results.js';
import { loadConfig } from '../lib/config/load.js';
import { openApp, type App } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { closeApps, logger, psql, runCli, runCliOnTerminal } from './helpers.js';

// What a person sees (a terminal) and what a machine reads (a pipe): logs, results and progress of
// `lifeboat run`, on a real throwaway PostgreSQL, real Redis and a dir target.

/** A stand-in for stderr that records what was written (the printer's only dependency besides the clock). */
function screen(isTTY: boolean) {
  const writes: string[] = [];
  return { writes, stream: { isTTY, write: (s: string) => writes.push(s) } as unknown as NodeJS.WriteStream };
}

describe('the progress printer', () => {
  it('off a terminal: one line at most every 10 s per phase, a new phase at once', () => {
    let now = 0;
    const { writes, stream } = screen(false);
    const printer = progressPrinter(stream, () => now);
    printer.report('dumpPostgres', { phase: 'dumping', bytes: 0, total: 100 * 1024 ** 2 });
    for (now = 1000; now < 10_000; now += 1000) printer.report('dumpPostgres', { phase: 'dumping', bytes: now * 1024, total: 100 * 1024 ** 2 });
    now = 10_000;
    printer.report('dumpPostgres', { phase: 'dumping', bytes: 50 * 1024 ** 2, total: 100 * 1024 ** 2 });
    now = 10_500;
    printer.report('verifyObject', { phase: 'verifying', bytes: 1024, total: 2048 });
    printer.end();
    expect(writes).toHaveLength(3);
    expect(writes[1]).toMatch(/^ {2}dumpPostgres dumping 50\.0 MiB of 100\.0 MiB \(50%\) {2}5\.0 MiB\/s {2}ETA 10 s\n$/);
    expect(writes[2]).toMatch(/^ {2}verifyObject verifying 1\.0 KiB of 2\.0 KiB \(50%\)/);
  });

  it('on a terminal: one line redrawn in place, ended by a newline', () => {
    let now = 0;
    const { writes, stream } = screen(true);
    const printer = progressPrinter(stream, () => now);
    for (; now <= 2000; now += 100) printer.report('mirrorBucket', { phase: 'mirroring', bytes: now, objects: now / 100 });
    printer.end();
    expect(writes.length).toBeGreaterThanOrEqual(4);
    expect(writes.length).toBeLessThanOrEqual(6);
    expect(writes.slice(0, -1).every((w) => w.startsWith('\r\x1b[2K  mirrorBucket mirroring'))).toBe(true);
    expect(writes.at(-2)).toContain('20 objects');
    expect(writes.at(-1)).toBe('\n');
  });
});

describe('results for a person', () => {
  it('sizes in units, sha256 shortened, tallies and lists counted', () => {
    expect(summarizeResult({ key: 'pg/x.sql.gz', size: 15_432_176, sha256: 'c1f8a3005cb95e076d512cdc6e0a19941ba878a68212c2f9ca424dc576744a2f', databases: ['a', 'b'], copied: { count: 3, bytes: 2048 }, durationMs: 1530 }))
      .toBe('key pg/x.sql.gz · size 14.7 MiB · sha256 c1f8a3005cb9… · databases a, b · copied 3 (2.0 KiB) · durationMs 1.5 s');
    expect(resultLine({ fn: 'verifyObject', ok: false, attempts: 2, error: 'CorruptBackupError: size differs' })).toBe('✗ verifyObject (2 attempts): CorruptBackupError: size differs');
  });
});

let pg: ThrowawayCluster;
let work: string;
let configFile: string;
const prefix = `lb-output-${process.pid}`;
const apps: App[] = [];

beforeAll(async () => {
  pg = await startThrowawayCluster();
  // About 25 MB of dump text: long enough for the progress to show while it runs.
  await psql(pg.url, 'create table noise as select g as id, md5(random()::text) || md5(random()::text) as hex from generate_series(1, 400000) g');
  work = await mkdtemp(join(tmpdir(), 'lb-output-'));
  configFile = join(work, 'lifeboat.yaml');
  await writeFile(configFile, [
    `redis: { url: "redis://127.0.0.1:6379", prefix: ${prefix} }`,
    `targets: { local: { kind: dir, path: "${join(work, 'data')}" } }`,
    'datasets:',
    `  - { id: pg, kind: postgres, source: { mode: direct, url: "${pg.url}" }, target: { name: local, bucket: backups } }`,
  ].join('\n'));
}, 120_000);

afterAll(async () => {
  await closeApps(apps);
  await pg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('lifeboat run on a terminal and on a pipe', () => {
  it('on a terminal: readable log lines, a live progress line, and a sentence per run', async () => {
    const run = await runCliOnTerminal(['run', 'dumpPostgres', '--dataset', 'pg', '--inline', '--tick', '2026-11-01T02:00:00Z', '-c', configFile]);
    expect(run.code, run.screen).toBe(0);
    expect(run.screen).not.toContain('{"level"');
    expect(run.screen).toMatch(/\d\d:\d\d:\d\d\] .*INFO.*dumpPostgres pg: dump stored/);
    expect(run.screen).toMatch(/dumpPostgres dumping [\d.]+ [KM]iB of [\d.]+ MiB \(\d+%\)/);
    expect(run.screen).toMatch(/✓ dumpPostgres: key pg\/20261101T020000Z\/pg_dumpall\.sql\.gz · size [\d.]+ MiB · sha256 [0-9a-f]{12}…/);
    expect(run.screen).toMatch(/✓ verifyObject: .*dataset pg · key pg\/20261101T020000Z\/pg_dumpall\.sql\.gz · ok true/);
  });

  it('--json, --log-format json and --log-level on a terminal', async () => {
    const run = await runCliOnTerminal(['--log-format', 'json', '--log-level', 'warn', 'run', 'verifyObject', '--dataset', 'pg', '--backup', 'latest', '--inline', '--json', '-c', configFile]);
    expect(run.code, run.screen).toBe(0);
    const lines = run.screen.split(/\r?\n/).filter((l) => l.startsWith('{'));
    expect(lines.map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ fn: 'verifyObject', ok: true })]);
    expect(run.screen).not.toMatch(/INFO|"level":30/);
    const bad = await runCli(['--log-format', 'xml', 'config', 'check', '-c', configFile]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/option '--log-format <format>' argument 'xml' is invalid\. Allowed choices are json, pretty/);
  });

  it('on a pipe: JSON lines for results and logs, and no progress redraws', async () => {
    const run = await runCli(['run', 'verifyObject', '--dataset', 'pg', '--backup', 'latest', '--inline', '-c', configFile]);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim())).toMatchObject({ fn: 'verifyObject', ok: true });
    const logs = run.stderr.split('\n').filter(Boolean);
    expect(logs.length).toBeGreaterThan(0);
    for (const line of logs.filter((l) => !l.startsWith('  verifyObject verifying'))) expect(() => JSON.parse(line), line).not.toThrow();
    expect(run.stderr).not.toContain('\r');
  });

  it('run --wait on a terminal follows the queued job\'s progress to its result', async () => {
    const { config } = await loadConfig({ file: configFile });
    const app = await openApp(config, logger(), { functions: [dumpPostgres] });
    apps.push(app);
    await app.startWorkers();
    const run = await runCliOnTerminal(['--log-level', 'warn', 'run', 'dumpPostgres', '--dataset', 'pg', '--wait', '--tick', '2026-11-02T02:00:00Z', '-c', configFile]);
    expect(run.code, run.screen).toBe(0);
    expect(run.screen).toMatch(/\r\x1b\[2K {2}dumpPostgres dumping [\d.]+ [KM]iB of [\d.]+ MiB \(\d+%\)/);
    expect(run.screen).toMatch(/✓ dumpPostgres: key pg\/20261102T020000Z\/pg_dumpall\.sql\.gz/);
  });
});
