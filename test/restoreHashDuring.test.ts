import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { listBackups } from '../lib/catalog/catalog.js';
import type { Config } from '../lib/config/schema.js';
import { openLocal } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { BackupMismatchError, restoreOneDatabase, restoreWholeCluster, type PostgresRestore, type RestoreSteps, type VerifyWhen } from '../lib/postgres/restoreBackup.js';
import { LocalRunner } from '../lib/postgres/runner.js';
import { createBucket, hubCli, ITEMS_FINGERPRINT, logger, psql, removeBucket, runOnce, s3Client, s3Env, seedDatabases, testConfig, withDatabase } from './helpers.js';

// One read, hashed while it restores: real PostgreSQL (throwaway clusters) and real Ceph RGW. Backups are
// corrupted by overwriting the object on RGW, with bytes of the same size and with a different size.
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let scratch: string;
let configFile: string;
let config: Config;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const userDatabases = (url: string) => psql(url, 'select datname from pg_database where not datistemplate order by datname');
const userRoles = (url: string) => psql(url, "select rolname from pg_roles where rolname not like 'pg\\_%' order by rolname");
const lifeboat = (args: string[]) => hubCli(configFile, args);
const objectBytes = async (key: string) => Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
const putObject = (key: string, body: Buffer) => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));

/** A dumpPostgres backup of the source at `tick`, verified by verifyObject as after an upload. */
async function backup(dataset: string, tick: string): Promise<string> {
  const dump = await runOnce(config, dumpPostgres, { dataset, tick });
  await runOnce(config, verifyObject, { dataset, key: dump.key });
  return dump.key as string;
}

/** Runs `run` with the object replaced by `body`, then puts the original back and verifies it again (its ETag may differ). */
async function withObject<T>(key: string, body: Buffer, run: () => Promise<T>): Promise<T> {
  const original = await objectBytes(key);
  await putObject(key, body);
  try {
    return await run();
  } finally {
    await putObject(key, original);
    await runOnce(config, verifyObject, { dataset: key.split('/')[1], key });
  }
}

async function withFresh<T>(run: (fresh: ThrowawayCluster) => Promise<T>): Promise<T> {
  const fresh = await startThrowawayCluster();
  try {
    return await run(fresh);
  } finally {
    await fresh.stop();
  }
}

/** The library restore the CLI and the restoreBackup job share, with the lines it says collected. */
async function restoreInProcess(dataset: string, to: string, opts: { verify?: VerifyWhen; force?: boolean; database?: string; as?: string }) {
  const deps = openLocal(config, logger());
  const lines: string[] = [];
  try {
    const ds = config.datasets.find((d) => d.id === dataset)!;
    const store = deps.storeFor(ds);
    const [entry] = await listBackups(store, ds);
    const job: PostgresRestore = { store, entry: entry!, destination: new LocalRunner({ url: to }), force: opts.force ?? false, verify: opts.verify };
    const steps: RestoreSteps = { say: (l) => lines.push(l), read: (_w, step) => step() };
    const result = await (opts.database ? restoreOneDatabase(job, { database: opts.database, as: opts.as, roles: false }, steps) : restoreWholeCluster(job, steps)).then(
      (r) => ({ ok: true as const, value: r }),
      (error: Error) => ({ ok: false as const, error }),
    );
    return { ...result, lines };
  } finally {
    await deps.close();
  }
}

beforeAll(async () => {
  source = await startThrowawayCluster();
  await seedDatabases(source.url, { alpha: 300, beta: 200 });
  // Some megabytes of gzip, so a stream that fails at its end has fed psql the databases first.
  await psql(source.url, 'create database bulk');
  await psql(withDatabase(source.url, 'bulk'), 'create table t as select g, md5(g::text) as h from generate_series(1, 100000) g');
  client = s3Client();
  bucket = await createBucket(client);
  scratch = await mkdtemp(join(tmpdir(), 'lb-hashduring-'));
  const datasets = [
    { id: 'gz', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket, prefix: 'g/' } },
    // Uncompressed: a changed byte inside COPY data restores "fine", and only the sha256 can tell.
    { id: 'plain', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket, prefix: 'p/' }, compression: 'none' },
  ];
  config = testConfig({ datasets });
  const s3 = s3Env();
  configFile = join(scratch, 'lifeboat.yaml');
  await writeFile(configFile, JSON.stringify({
    redis: { url: 'redis://127.0.0.1:1' },
    targets: { hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
    datasets,
  }));
  await backup('gz', '2026-11-21T02:00:00Z');
  await backup('plain', '2026-11-21T02:00:00Z');
}, 120_000);

afterAll(async () => {
  await source?.stop();
  if (client) {
    await removeBucket(client, bucket);
    client.destroy();
  }
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('lifeboat restore hashes while it restores (the built CLI)', () => {
  const gzKey = 'g/gz/20261121T020000Z/pg_dumpall.sql.gz';
  const plainKey = 'p/plain/20261121T020000Z/pg_dumpall.sql';

  it('a good backup restores every row in one read, and the output names the choice', async () => {
    await withFresh(async (fresh) => {
      const run = await lifeboat(['restore', 'gz', '--to', fresh.url]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('checking sha256 while restoring (fails and drops the databases it creates on mismatch)');
      expect(run.stderr).toContain('sha256 matches the manifest (checked while restoring)');
      expect(run.stderr).not.toContain('checking sha256 first');
      for (const db of ['alpha', 'beta']) expect(await psql(withDatabase(fresh.url, db), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, db), ITEMS_FINGERPRINT));
    });
  });

  it('--json carries the choice too', async () => {
    await withFresh(async (fresh) => {
      const run = await lifeboat(['restore', 'plain', '--database', 'beta', '--as', 'beta_json', '--to', fresh.url, '--json']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({
        ok: true, backup: '20261121T020000Z', sha256: sha256(await objectBytes(plainKey)),
        sha256Check: { mode: 'during', detail: 'checking sha256 while restoring (fails and drops database "beta_json" on mismatch)' },
        restored: { database: 'beta', as: 'beta_json' },
      });
      expect(await psql(withDatabase(fresh.url, 'beta_json'), 'select count(*) from items')).toBe('200');
    });
  });

  it('same size, one changed byte in the COPY data: exits 1 naming both sha256s, and drops the database it created', async () => {
    const good = await objectBytes(plainKey);
    const text = good.toString('latin1');
    const at = text.indexOf('item 150\t', text.indexOf('-- Database "beta" dump'));
    expect(at).toBeGreaterThan(0);
    const bad = Buffer.from(good);
    bad[at + 3] = 'x'.charCodeAt(0); // "itex 150": psql loads it without a word
    await withObject(plainKey, bad, () => withFresh(async (fresh) => {
      const one = await lifeboat(['restore', 'plain', '--database', 'beta', '--as', 'beta_bad', '--to', fresh.url]);
      expect(one.code).toBe(1);
      expect(one.stderr).toContain('checking sha256 while restoring (fails and drops database "beta_bad" on mismatch)');
      expect(one.stderr).toContain(`sha256 mismatch: ${plainKey} (backup 20261121T020000Z of plain) is corrupt: expected sha256 ${sha256(good)}, ${good.length} bytes (the manifest); read ${sha256(bad)}, ${bad.length} bytes`);
      expect(one.stderr).toContain('Dropped what the restore created: database "beta_bad"');
      expect(one.stderr).toContain(`${new LocalRunner({ url: fresh.url }).label} holds nothing from this backup`);
      expect(await userDatabases(fresh.url)).toBe('postgres');

      const whole = await lifeboat(['restore', 'plain', '--to', fresh.url, '--json']);
      expect(whole.code).toBe(1);
      expect(JSON.parse(whole.stdout)).toMatchObject({ ok: false, exitCode: 1, error: expect.stringContaining(`expected sha256 ${sha256(good)}`) });
      expect(JSON.parse(whole.stdout).error).toContain('Dropped what the restore created: database "alpha", database "beta", database "bulk"');
      expect(await userDatabases(fresh.url)).toBe('postgres');
      expect(await userRoles(fresh.url)).toBe('postgres');
    }));
  });

  it('same size, a gzip whose trailer was damaged: the stream fails at its end, the restore names both sha256s and drops what it created', async () => {
    const good = await objectBytes(gzKey);
    const bad = Buffer.from(good);
    for (let i = bad.length - 8; i < bad.length; i++) bad[i] = bad[i]! ^ 0xff; // CRC32 and ISIZE: every SQL byte is fed first
    await withObject(gzKey, bad, () => withFresh(async (fresh) => {
      const run = await lifeboat(['restore', 'gz', '--to', fresh.url]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`expected sha256 ${sha256(good)}, ${good.length} bytes (the manifest); read ${sha256(bad)}, ${bad.length} bytes (the restore stopped:`);
      expect(run.stderr).toContain('Dropped what the restore created: database "alpha", database "beta", database "bulk"');
      expect(await userDatabases(fresh.url)).toBe('postgres');
    }));
  });

  it('random bytes of the same size: nothing restores, exits 1 naming both sha256s', async () => {
    const good = await objectBytes(gzKey);
    const bad = Buffer.alloc(good.length, 0x41);
    await withObject(gzKey, bad, () => withFresh(async (fresh) => {
      const run = await lifeboat(['restore', 'gz', '--database', 'alpha', '--as', 'never_made', '--to', fresh.url]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`expected sha256 ${sha256(good)}`);
      expect(run.stderr).toContain(`read ${sha256(bad)}, ${bad.length} bytes`);
      expect(await userDatabases(fresh.url)).toBe('postgres');
    }));
  });

  it('a different size: seen in the listing, checked first, refused before the destination is touched', async () => {
    const good = await objectBytes(gzKey);
    for (const bad of [Buffer.concat([good, Buffer.from('tail')]), good.subarray(0, good.length - 100)]) {
      await withObject(gzKey, bad, () => withFresh(async (fresh) => {
        const run = await lifeboat(['restore', 'gz', '--database', 'beta', '--as', 'beta_bad', '--to', fresh.url]);
        expect(run.code).toBe(1);
        expect(run.stderr).toContain(`checking sha256 first, before touching`);
        expect(run.stderr).toContain(`(the object is ${bad.length} bytes on the target, the manifest says ${good.length})`);
        expect(run.stderr).toContain(`refusing to restore: sha256 mismatch: ${gzKey} does not match its manifest (expected sha256 ${sha256(good)}, ${good.length} bytes; read ${sha256(bad)}, ${bad.length} bytes); nothing was written`);
        expect(await userDatabases(fresh.url)).toBe('postgres');
      }));
    }
  });

  it('into a database that exists (--force): relies on the fresh verification, or checks first when the bytes changed since', async () => {
    await withFresh(async (fresh) => {
      await psql(fresh.url, 'create database beta');
      const run = await lifeboat(['restore', 'gz', '--database', 'beta', '--force', '--to', fresh.url]);
      expect(run.stderr).toMatch(/verified \d+ (s|min) ago by verifyObject after the upload; not re-hashed first \(database "beta" exists already: a mismatch there could not be undone\); the sha256 is still checked while restoring/);
      expect(run.stderr).toContain('sha256 matches the manifest (checked while restoring)');
      // --force into a database that exists: its CREATE DATABASE fails, as it always has; the rest loads.
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('restore finished with 1 errors: ERROR:  database "beta" already exists');
      expect(await psql(withDatabase(fresh.url, 'beta'), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, 'beta'), ITEMS_FINGERPRINT));

      // Overwritten since its verification (a new ETag): nothing vouches for it, so it is read first.
      const good = await objectBytes(gzKey);
      const bad = Buffer.alloc(good.length, 0x41);
      await withObject(gzKey, bad, async () => {
        const before = await psql(withDatabase(fresh.url, 'beta'), ITEMS_FINGERPRINT);
        const refused = await lifeboat(['restore', 'gz', '--database', 'beta', '--force', '--to', fresh.url]);
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain('checking sha256 first, before touching');
        expect(refused.stderr).toContain('no passed verification within 7 d vouches for these bytes: its verification no longer holds (the artifact was rewritten after it was verified');
        expect(refused.stderr).toContain('refusing to restore: sha256 mismatch');
        expect(await psql(withDatabase(fresh.url, 'beta'), ITEMS_FINGERPRINT)).toBe(before);
      });
    });
  });
});

describe('restoreWholeCluster / restoreOneDatabase with --verify (the library the CLI and the restoreBackup job share)', () => {
  const plainKey = 'p/plain/20261121T020000Z/pg_dumpall.sql';

  it('first: two reads, both named; recent: relies on the verification', async () => {
    await withFresh(async (fresh) => {
      const first = await restoreInProcess('plain', fresh.url, { verify: 'first', database: 'alpha', as: 'alpha_first' });
      expect(first.ok, first.ok ? '' : first.error.message).toBe(true);
      expect(first.lines.slice(0, 3)).toEqual([`checking sha256 first, before touching ${new LocalRunner({ url: fresh.url }).label} (--verify first)`, 'sha256 matches the manifest', 'sha256 matches the manifest again after the restore']);
      expect(first.ok && first.value.sha256Check.mode).toBe('first');

      const recent = await restoreInProcess('plain', fresh.url, { verify: 'recent', database: 'alpha', as: 'alpha_recent' });
      expect(recent.ok).toBe(true);
      expect(recent.ok && recent.value.sha256Check).toMatchObject({ mode: 'recent', verifiedAt: expect.any(String) });
      expect(recent.lines[0]).toMatch(/^verified \d+ (s|min) ago by verifyObject after the upload; not re-hashed first \(--verify recent\)/);
      expect(await userDatabases(fresh.url)).toBe('alpha_first\nalpha_recent\npostgres');
    });
  });

  it('--verify during into a database that exists: a mismatch says the data came from a corrupt backup and was not dropped, and what to do', async () => {
    const good = await objectBytes(plainKey);
    const text = good.toString('latin1');
    const at = text.indexOf('item 7\t', text.indexOf('-- Database "alpha" dump'));
    const bad = Buffer.from(good);
    bad[at] = 'I'.charCodeAt(0);
    await withFresh(async (fresh) => {
      await psql(fresh.url, 'create database alpha');
      await withObject(plainKey, bad, async () => {
        const run = await restoreInProcess('plain', fresh.url, { verify: 'during', force: true, database: 'alpha' });
        expect(run.lines[0]).toBe('checking sha256 while restoring (--verify during: on a mismatch, database "alpha" exists already and cannot be dropped)');
        expect(run.ok).toBe(false);
        const error = (run as { error: Error }).error;
        expect(error).toBeInstanceOf(BackupMismatchError);
        expect(error.message).toContain(`expected sha256 ${sha256(good)}`);
        expect(error.message).toContain('The restored data came from a corrupt backup and was NOT dropped from');
        expect(error.message).toContain('database "alpha" (it existed before: --force)');
        expect(error.message).toContain('Restore another backup (lifeboat backups ls --dataset plain; --backup <id>), and run lifeboat verify plain --backup 20261121T020000Z');
        // It was not dropped: the operator decides.
        expect(await userDatabases(fresh.url)).toBe('alpha\npostgres');
      });
    });
  });
});
