import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { Config } from '../lib/config/schema.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { checkDatabaseName, DatabaseNotInDumpError, DatabaseSectionCutter, DumpTruncatedError, psqlConnectLine, rolesInGlobals, type SectionCutOptions } from '../lib/postgres/dumpallSections.js';
import { LocalRunner } from '../lib/postgres/runner.js';
import { runFunction } from '../queue/runner.js';
import { createBucket, hubCli, ITEMS_FINGERPRINT, logger, psql, removeBucket, runCliOnTerminal, s3Client, s3Env, seedDatabases, testConfig, withDatabase, writeHubConfig } from './helpers.js';

// Real PostgreSQL (throwaway clusters), real Ceph RGW. The source has alpha, beta (its items owned by
// app_owner) and "Mixed Case db", whose COPY data holds lines that look like a section header.
const MIXED = 'Mixed Case db';
let source: ThrowawayCluster;
let dumpText: Buffer;
let client: S3Client;
let bucket: string;
let scratch: string;

beforeAll(async () => {
  source = await startThrowawayCluster();
  await seedDatabases(source.url, { alpha: 300, beta: 200 });
  await psql(source.url, `create database "${MIXED}"`);
  await psql(withDatabase(source.url, MIXED), `create table items (id int primary key, label text, price numeric(8,2)); insert into items select g, 'mixed ' || g, g from generate_series(1, 50) g`);
  await psql(withDatabase(source.url, MIXED), `create table trap (id int, line text); insert into trap values (1, '--'), (2, '-- Database "beta" dump'), (3, '--'), (4, '-- PostgreSQL database cluster dump complete')`);
  await psql(source.url, 'create role app_owner');
  await psql(withDatabase(source.url, 'beta'), 'alter table items owner to app_owner');
  dumpText = Buffer.from(await new LocalRunner({ url: source.url }).run('pg_dumpall', []), 'utf8');
  client = s3Client();
  bucket = await createBucket(client);
  scratch = await mkdtemp(join(tmpdir(), 'lb-restoredb-'));
});

afterAll(async () => {
  await source?.stop();
  if (client) {
    await removeBucket(client, bucket);
    client.destroy();
  }
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Feeds `input` to a cutter in the given chunk sizes and collects what comes out. */
async function cut(input: Buffer, options: SectionCutOptions, chunkSizes: () => number = () => input.length): Promise<{ text: string; cutter: DatabaseSectionCutter }> {
  const chunks: Buffer[] = [];
  for (let at = 0; at < input.length; ) {
    const size = Math.max(1, chunkSizes());
    chunks.push(input.subarray(at, at + size));
    at += size;
  }
  const cutter = new DatabaseSectionCutter(options);
  const out: Buffer[] = [];
  Readable.from(chunks).pipe(cutter).on('data', (c: Buffer) => out.push(c));
  await new Promise<void>((resolve, reject) => {
    cutter.on('end', resolve);
    cutter.on('error', reject);
  });
  return { text: Buffer.concat(out).toString('utf8'), cutter };
}

/** A small seeded PRNG, so a failing chunking can be reproduced. */
function randomSizes(seed: number, max: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return 1 + (state % max);
  };
}

/** The section exactly as pg_dumpall wrote it, found by plain string search. */
function sectionOf(text: string, database: string): string {
  const start = text.indexOf(`--\n-- Database "${database}" dump\n`);
  expect(start).toBeGreaterThanOrEqual(0);
  const next = text.indexOf('\n--\n-- Database "', start + 1);
  const end = next === -1 ? text.lastIndexOf('\n--\n-- PostgreSQL database cluster dump complete') : next;
  return text.slice(start, end + 1);
}

const onlySetLines = (prefix: string) => prefix.split('\n').filter((l) => l !== '').every((l) => l.startsWith('SET '));

describe('the section cutter, on a real pg_dumpall of 3 databases', () => {
  it('cuts exactly one section, for a plain and a mixed-case name, past COPY data that looks like a header', async () => {
    const text = dumpText.toString('utf8');
    for (const database of ['beta', MIXED, 'alpha']) {
      const { text: out, cutter } = await cut(dumpText, { database });
      const section = sectionOf(text, database);
      expect(out.endsWith(section), database).toBe(true);
      expect(onlySetLines(out.slice(0, -section.length)), 'only the globals\' SET lines precede the section').toBe(true);
      expect(out.match(/^-- Database ".*" dump$/gm)).toEqual([`-- Database "${database}" dump`]);
      expect(cutter.summary).toMatchObject({ found: true, trailer: true, databases: ['template1', MIXED, 'alpha', 'beta', 'postgres'] });
    }
    // The trap's rows are in the mixed-case section and nowhere else.
    expect((await cut(dumpText, { database: MIXED })).text).toContain('2\t-- Database "beta" dump\n');
    expect((await cut(dumpText, { database: 'beta' })).text).not.toContain('trap');
  });

  it('gives the same bytes whatever the chunk boundaries: 1-byte and random-size chunks', async () => {
    for (const options of [{ database: 'beta', renameTo: 'beta_copy', existingRoles: new Set(['postgres']) }, { database: MIXED, renameTo: 'x' }] satisfies SectionCutOptions[]) {
      const whole = (await cut(dumpText, options)).text;
      expect((await cut(dumpText, options, () => 1)).text).toBe(whole);
      for (const seed of [1, 2, 3, 4, 5]) expect((await cut(dumpText, options, randomSizes(seed, seed * 97))).text, `seed ${seed}`).toBe(whole);
    }
  });

  it('--as rewrites CREATE DATABASE, ALTER DATABASE and every \\connect, quoting the new name', async () => {
    const { text } = await cut(dumpText, { database: 'beta', renameTo: 'beta_copy' });
    expect(text).toMatch(/^CREATE DATABASE "beta_copy" WITH TEMPLATE = template0 /m);
    expect(text).toMatch(/^ALTER DATABASE "beta_copy" OWNER TO postgres;$/m);
    expect(text.match(/^\\connect .*$/gm)).toEqual(['\\connect "beta_copy"']);
    expect(text).not.toMatch(/^(CREATE|ALTER) DATABASE beta\b/m);

    const odd = `it's "new"\\db`;
    const mixed = (await cut(dumpText, { database: MIXED, renameTo: odd })).text;
    expect(mixed).toContain(`CREATE DATABASE "it's ""new""\\db" WITH`);
    expect(mixed.match(/^\\connect .*$/gm)).toEqual([`\\connect -reuse-previous=on "dbname='it\\'s ""new""\\\\db'"`]);
    expect(psqlConnectLine('plain_name.1')).toBe('\\connect "plain_name.1"');
  });

  it('the rewritten section restores under the new name in a real server, odd characters and all', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const odd = `it's "new"\\db`;
      const { text } = await cut(dumpText, { database: MIXED, renameTo: odd, existingRoles: new Set(['postgres']) });
      const { stderr } = await new LocalRunner({ url: fresh.url }).feed('psql', ['-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], Readable.from([Buffer.from(text)]));
      expect(stderr).toBe('');
      expect(await psql(fresh.url, 'select datname from pg_database where not datistemplate order by datname')).toBe([odd, 'postgres'].sort().join('\n'));
      expect(await psql(withDatabase(fresh.url, odd), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, MIXED), ITEMS_FINGERPRINT));
    } finally {
      await fresh.stop();
    }
  });

  it('stops at the trailer for the last database, and errors without a trailer or for an unknown database', async () => {
    const last = await cut(dumpText, { database: 'postgres' });
    expect(last.text).not.toContain('cluster dump complete');
    expect(last.text).toContain('\\connect postgres');

    // lastIndexOf: the trap's COPY data holds the same words.
    const truncated = dumpText.subarray(0, dumpText.lastIndexOf('-- PostgreSQL database cluster dump complete'));
    await expect(cut(truncated, { database: 'beta' })).rejects.toBeInstanceOf(DumpTruncatedError);
    const unknown = cut(dumpText, { database: 'nope' });
    await expect(unknown).rejects.toBeInstanceOf(DatabaseNotInDumpError);
    await expect(unknown).rejects.toMatchObject({ databases: ['template1', MIXED, 'alpha', 'beta', 'postgres'] });
  });

  it('drops statements naming roles the destination lacks, or creates those roles first when asked', async () => {
    const without = await cut(dumpText, { database: 'beta', existingRoles: new Set(['postgres']) });
    expect(without.text).not.toContain('OWNER TO app_owner');
    expect(without.text).not.toContain('CREATE ROLE');
    expect(without.cutter.summary.droppedForMissingRole).toEqual({ app_owner: 1 });

    const withRoles = await cut(dumpText, { database: 'beta', existingRoles: new Set(['postgres']), createMissingRoles: true });
    expect(withRoles.text).toMatch(/^CREATE ROLE app_owner;\nALTER ROLE app_owner WITH NOSUPERUSER .*;$/m);
    expect(withRoles.text).not.toContain('CREATE ROLE postgres');
    expect(withRoles.text).not.toContain('ALTER ROLE postgres');
    expect(withRoles.text).toContain('ALTER TABLE public.items OWNER TO app_owner;');
    expect(withRoles.text.indexOf('CREATE ROLE app_owner')).toBeLessThan(withRoles.text.indexOf('-- Database "beta" dump'));
    expect(withRoles.cutter.summary).toMatchObject({ rolesCreated: ['app_owner'], droppedForMissingRole: {} });
    expect(await rolesInGlobals(Readable.from([dumpText]))).toEqual(['app_owner', 'postgres']);
  });

  it('passes a COPY line on before its end arrives: memory does not grow with a row', async () => {
    const header = Buffer.from('--\n-- Database "big" dump\n--\nCOPY public.t (v) FROM stdin;\n');
    const cutter = new DatabaseSectionCutter({ database: 'big' });
    let outBytes = 0;
    cutter.on('data', (c: Buffer) => (outBytes += c.length));
    cutter.write(header);
    const piece = Buffer.alloc(1 << 20, 'x');
    for (let i = 0; i < 8; i++) cutter.write(piece);
    await new Promise((resolve) => setImmediate(resolve));
    expect(outBytes).toBeGreaterThanOrEqual(8 << 20);
    cutter.end(Buffer.from('\n\\.\n--\n-- PostgreSQL database cluster dump complete\n--\n'));
    await new Promise((resolve, reject) => cutter.on('end', resolve).on('error', reject));
  });

  it('accepts names that quote safely and refuses the others', () => {
    expect(checkDatabaseName('Copy of "x"')).toBe('Copy of "x"');
    expect(() => checkDatabaseName('')).toThrow('cannot be empty');
    expect(() => checkDatabaseName('a\nb')).toThrow('control characters');
    expect(() => checkDatabaseName('é'.repeat(32))).toThrow('64 bytes');
  });
});

describe('lifeboat restore --database (the built CLI, a dumpPostgres backup on RGW)', () => {
  let configFile: string;

  const lifeboat = (args: string[]) => hubCli(configFile, args);

  const userDatabases = (url: string) => psql(url, 'select datname from pg_database where not datistemplate order by datname');
  const roleNames = (url: string) => psql(url, "select rolname from pg_roles where rolname not like 'pg\\_%' order by rolname");

  beforeAll(async () => {
    const cfg: Config = testConfig({ datasets: [{ id: 'one', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket } }] });
    const deps = openLocal(cfg, logger());
    try {
      await runFunction(dumpPostgres, { dataset: 'one', tick: '2026-11-21T02:00:00Z' }, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} });
    } finally {
      await deps.close();
    }
    configFile = await writeHubConfig(join(scratch, 'lifeboat.yaml'), [{ id: 'one', url: source.url, bucket }]);
  });

  it('--list prints the databases with their table counts, without --to', async () => {
    const run = await lifeboat(['restore', 'one', '--list']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^DATABASE\s+TABLES\s+ROWS \(EST\.\)$/m);
    expect(run.stdout).toMatch(/^alpha\s+1\s+\d+$/m);
    expect(run.stdout).toMatch(/^beta\s+1\s+\d+$/m);
    expect(run.stdout).toMatch(/^Mixed Case db\s+2\s+\d+$/m);
  });

  it('restores beta as beta_copy into a fresh server: only beta_copy arrives, its rows match, ownership falls to the restoring user', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const run = await lifeboat(['restore', 'one', '--database', 'beta', '--as', 'beta_copy', '--to', fresh.url]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('checking sha256 while restoring (fails and drops database "beta_copy" on mismatch)');
      expect(run.stderr).toContain('sha256 matches the manifest (checked while restoring)');
      expect(run.stderr).toContain('roles missing at the destination: "app_owner" (1 statement); ownership was left to the restoring user');
      expect(run.stderr).toContain('restored database "beta" as "beta_copy"');
      expect(await userDatabases(fresh.url)).toBe('beta_copy\npostgres');
      expect(await psql(withDatabase(fresh.url, 'beta_copy'), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, 'beta'), ITEMS_FINGERPRINT));
      expect(await psql(withDatabase(fresh.url, 'beta_copy'), "select tableowner from pg_tables where tablename = 'items'")).toBe('postgres');
      expect(await roleNames(fresh.url)).toBe('postgres');
    } finally {
      await fresh.stop();
    }
  });

  it('--json prints one result object on stdout, for a restore and for a refusal alike', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const run = await lifeboat(['restore', 'one', '--database', 'beta', '--as', 'beta_json', '--to', fresh.url, '--json']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({
        ok: true, dataset: 'one', backup: '20261121T020000Z', key: expect.stringMatching(/^one\/20261121T020000Z\//), sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
        restored: { database: 'beta', as: 'beta_json', rolesCreated: [], rolesMissing: { app_owner: 1 } },
      });
      expect(await psql(withDatabase(fresh.url, 'beta_json'), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, 'beta'), ITEMS_FINGERPRINT));

      const refused = await lifeboat(['restore', 'one', '--database', 'beta', '--as', 'beta_json', '--to', fresh.url, '--json']);
      expect(refused.code).toBe(1);
      expect(JSON.parse(refused.stdout)).toEqual({ ok: false, dataset: 'one', error: expect.stringContaining('already has database "beta_json"'), exitCode: 1 });
    } finally {
      await fresh.stop();
    }
  });

  it('on a terminal, the restore (hashing as it goes) shows bytes, the total, percent and ETA; no separate sha256 pass', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const s3 = s3Env();
      const run = await runCliOnTerminal(['restore', 'one', '--database', 'beta', '--as', 'beta_tty', '--to', fresh.url, '-c', configFile], { env: { TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'error' } });
      expect(run.code, run.screen).toBe(0);
      expect(run.screen).toContain('checking sha256 while restoring (fails and drops database "beta_tty" on mismatch)');
      expect(run.screen).not.toMatch(/verifying [\d.]+/);
      expect(run.screen).toMatch(/restoring [\d.]+ (B|KiB|MiB) of [\d.]+ (B|KiB|MiB) \(\d+%\) {2}[\d.]+ (B|KiB|MiB)\/s {2}ETA \d+ s/);
    } finally {
      await fresh.stop();
    }
  });

  it('--roles creates the missing role that owns the tables, and nothing else', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const run = await lifeboat(['restore', 'one', '--database', 'beta', '--roles', '--to', fresh.url]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('created roles missing at the destination: "app_owner"');
      expect(await roleNames(fresh.url)).toBe('app_owner\npostgres');
      expect(await psql(withDatabase(fresh.url, 'beta'), "select tableowner from pg_tables where tablename = 'items'")).toBe('app_owner');
      expect(await psql(withDatabase(fresh.url, 'beta'), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, 'beta'), ITEMS_FINGERPRINT));
      expect(await userDatabases(fresh.url)).toBe('beta\npostgres');
    } finally {
      await fresh.stop();
    }
  });

  it('--dry-run prints the plan and changes nothing', async () => {
    const fresh = await startThrowawayCluster();
    try {
      const before = [await userDatabases(fresh.url), await roleNames(fresh.url)];
      const run = await lifeboat(['restore', 'one', '--database', MIXED, '--as', 'mixed copy', '--roles', '--dry-run', '--to', fresh.url]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain('dry run: nothing was changed');
      expect(run.stdout).toContain(`restore database "${MIXED}" as "mixed copy" from backup 20261121T020000Z`);
      expect(run.stdout).toContain('roles to create: "app_owner"');
      expect([await userDatabases(fresh.url), await roleNames(fresh.url)]).toEqual(before);
    } finally {
      await fresh.stop();
    }
  });

  it('refuses an unknown database naming the known ones, a target that exists, and an unquotable --as', async () => {
    const unknown = await lifeboat(['restore', 'one', '--database', 'gamma', '--to', source.url]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain(`backup 20261121T020000Z has no database "gamma" (it has: "${MIXED}", "alpha", "beta", "postgres", "template1")`);

    const exists = await lifeboat(['restore', 'one', '--database', 'alpha', '--to', source.url]);
    expect(exists.code).toBe(1);
    expect(exists.stderr).toContain('already has database "alpha"');
    expect(exists.stderr).toContain('--force');
    expect(await userDatabases(source.url)).toBe([MIXED, 'alpha', 'beta', 'postgres'].join('\n'));

    const bad = await lifeboat(['restore', 'one', '--database', 'alpha', '--as', 'two\nlines', '--to', source.url]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('control characters');

    const bucketFlag = await lifeboat(['restore', 'one', '--to-bucket', 'elsewhere', '--to', source.url]);
    expect(bucketFlag.code).toBe(2);
    expect(bucketFlag.stderr).toContain('--to-bucket is for bucket datasets; dataset one is a postgres dataset');
  });
});
