import { access, chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { Config } from '../lib/config/schema.js';
import { drillRecordSchema } from '../lib/catalog/manifest.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { createBucket, hubCli, ITEMS_FINGERPRINT, logger, psql, removeBucket, s3Client, seedDatabases, testConfig, withDatabase, writeHubConfig } from './helpers.js';

// Real PostgreSQL (throwaway clusters), real Ceph RGW; drills restore into throwaway clusters of their own.
const ROWS = { alpha: 3000, beta: 2000, gamma: 1500 };
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let scripts: string;

beforeAll(async () => {
  source = await startThrowawayCluster();
  await seedDatabases(source.url, ROWS);
  client = s3Client();
  bucket = await createBucket(client);
  scripts = await mkdtemp(join(tmpdir(), 'lb-drill-'));
});

afterAll(async () => {
  await source?.stop();
  await removeBucket(client, bucket);
  client.destroy();
});

function config(id: string, extra: { pgDumpall?: string; assertions?: unknown[] } = {}): Config {
  return testConfig({
    datasets: [
      {
        id,
        kind: 'postgres',
        source: { mode: 'direct', url: source.url, ...(extra.pgDumpall ? { pgDumpall: extra.pgDumpall } : {}) },
        target: { name: 'hub', bucket },
        drill: { assertions: extra.assertions ?? [{ name: 'alpha rows', database: 'alpha', sql: 'select count(*) from items', expect: '3000' }] },
      },
    ],
  });
}

/** One attempt of a function with metrics recorded in memory; returns the outcome and the deps' metrics. */
async function run(cfg: Config, fn: AnyFunction, data: unknown) {
  const deps = openLocal(cfg, logger());
  const emitted: string[] = [];
  try {
    const result = await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, {
      deps,
      emit: async (event, payload) => {
        emitted.push(event);
        await deps.metrics.onEvent(event, payload);
      },
    }).then((value) => ({ ok: true as const, value }), (error: Error) => ({ ok: false as const, error }));
    return { ...result, emitted, samples: await deps.metrics.samples() };
  } finally {
    await deps.close();
  }
}

/** Dumps and verifies, as the nightly job and its fan-out would. */
async function verifiedBackup(cfg: Config, tick: string): Promise<string> {
  const dump = await run(cfg, dumpPostgres, { dataset: cfg.datasets[0]!.id, tick });
  if (!dump.ok) throw dump.error;
  const key = (dump.value as { key: string }).key;
  const verify = await run(cfg, verifyObject, { dataset: cfg.datasets[0]!.id, key });
  if (!verify.ok) throw verify.error;
  return key;
}

/** The drill's own cluster directory, from drill.json's "where" ("local cluster in /tmp/lifeboat-pg-…"). Other test files make clusters at the same time, so only this one is looked for. */
const scratchDirOf = (where: string) => /^local cluster in (\/.+)$/.exec(where)?.[1];
const exists = (path: string) => access(path).then(() => true, () => false);

describe('drillRestore, local mode, on real Postgres and RGW', () => {
  it('passes on a good dump, writes drill.json, records the metric and leaves no cluster behind', async () => {
    const cfg = config('good');
    const key = await verifiedBackup(cfg, '2026-11-20T02:00:00Z');
    const drill = await run(cfg, drillRestore, { dataset: 'good' });
    expect(drill.ok ? 'passed' : drill.error.message).toBe('passed');
    const record = drillRecordSchema.parse(drill.ok ? drill.value : undefined);
    expect(record.checks.map((c) => [c.name, c.ok])).toEqual([
      ['sha256', true], ['restore', true],
      ['database alpha', true], ['database beta', true], ['database gamma', true], ['database postgres', true], ['database template1', true],
      ['tables alpha', true], ['tables beta', true], ['tables gamma', true], ['tables postgres', true], ['tables template1', true],
      ['assertion alpha rows', true],
    ]);
    expect(record.key).toBe(key);
    const stored = await openLocal(cfg, logger()).storeFor(cfg.datasets[0]!).getJson(key.replace(/[^/]+$/, 'drill.json'));
    expect(drillRecordSchema.parse(stored).ok).toBe(true);
    expect(drill.emitted).toEqual(['drill.completed']);
    expect(drill.samples.find((s) => s.name === 'lifeboat_drill_last_success_timestamp_seconds')?.value).toBeGreaterThan(0);
    expect(scratchDirOf(record.where)).toMatch(/lifeboat-pg-/);
    expect(await exists(scratchDirOf(record.where)!)).toBe(false);
  });

  it('fails and names the check when a database is missing from the dump', async () => {
    const wrapper = join(scripts, 'without-gamma');
    await writeFile(wrapper, '#!/bin/bash\n[ "$1" = --version ] && exec pg_dumpall --version\nexec pg_dumpall "$@" --exclude-database=gamma\n');
    await chmod(wrapper, 0o755);
    const cfg = config('nogamma', { pgDumpall: wrapper });
    await verifiedBackup(cfg, '2026-11-20T02:00:00Z');
    const drill = await run(cfg, drillRestore, { dataset: 'nogamma' });
    expect(drill.ok).toBe(false);
    expect(!drill.ok && drill.error).toMatchObject({ name: 'DrillFailedError', message: expect.stringContaining('database gamma (missing after restore)') });
    expect(drill.samples).toContainEqual({ name: 'lifeboat_drill_failures_total', labels: { dataset: 'nogamma', kind: 'postgres' }, value: 1 });
    const written = drillRecordSchema.parse(await openLocal(cfg, logger()).storeFor(cfg.datasets[0]!).getJson(`nogamma/20261120T020000Z/drill.json`));
    expect(written.ok).toBe(false);
    expect(await exists(scratchDirOf(written.where)!)).toBe(false);
  });

  it('fails and names a user assertion that does not hold', async () => {
    const cfg = config('assert', { assertions: [{ name: 'beta has 9999 rows', database: 'beta', sql: 'select count(*) from items', expect: '9999' }] });
    await verifiedBackup(cfg, '2026-11-20T02:00:00Z');
    const drill = await run(cfg, drillRestore, { dataset: 'assert' });
    expect(!drill.ok && drill.error.message).toContain('assertion beta has 9999 rows (beta: got "2000", expected "9999")');
  });

  it('refuses to drill a dataset without a verified backup', async () => {
    const cfg = config('empty');
    const drill = await run(cfg, drillRestore, { dataset: 'empty' });
    expect(!drill.ok && drill.error).toMatchObject({ name: 'PermanentError', message: 'dataset empty has no verified backup to drill' });
  });
});

describe('lifeboat restore and lifeboat drill (the built CLI)', () => {
  let configFile: string;

  const lifeboat = (args: string[]) => hubCli(configFile, args);

  beforeAll(async () => {
    await verifiedBackup(config('cli'), '2026-11-21T02:00:00Z');
    configFile = await writeHubConfig(join(scripts, 'lifeboat.yaml'), [{ id: 'cli', url: source.url, bucket }]);
  });

  it('restores the latest backup into a fresh server, with Redis unreachable, and the data matches', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const run = await lifeboat(['restore', 'cli', '--backup', 'latest', '--to', fresh.url]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('sha256 matches the manifest');
      expect(run.stderr).toContain('restored 3 databases (alpha, beta, gamma)');
      for (const db of Object.keys(ROWS)) {
        expect(await psql(withDatabase(fresh.url, db), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, db), ITEMS_FINGERPRINT));
      }
    } finally {
      await fresh.stop();
    }
  });

  it('refuses a destination that already holds the dump\'s databases', async () => {
    const run = await lifeboat(['restore', 'cli', '--to', source.url]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('already has databases alpha, beta, gamma from this dump');
  });

  it('drill prints the check table', async () => {
    const run = await lifeboat(['drill', 'cli']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^CHECK\s+RESULT\s+DETAIL/m);
    expect(run.stdout).toMatch(/^database gamma\s+ok\s+exists/m);
    expect(run.stdout).toMatch(/drill of cli backup 20261121T020000Z: passed/);
  });
});
