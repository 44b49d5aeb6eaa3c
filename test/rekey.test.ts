import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Decrypter, generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { manifestSchema, verifyRecordSchema, type Manifest } from '../lib/catalog/manifest.js';
import { restoreCommand } from '../lib/cli/restore.js';
import type { Config } from '../lib/config/schema.js';
import { rekeyDataset, rekeyedKey, RekeyIdentityError, type RekeyOptions, type RekeyResult } from '../lib/crypto/rekey.js';
import { recipientFingerprint } from '../lib/crypto/recipients.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { Deps } from '../lib/plumbing/deps.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import type { TargetStore } from '../lib/targets/store.js';
import { createBucket, logger, psql, removeBucket, runCli, runOnce, s3Client, s3Env, testConfig, withDatabase } from './helpers.js';

// Real PostgreSQL 15 (a throwaway cluster), real Ceph RGW, real age keys (the age-encryption package).
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let keys: string;
const id: Record<'A' | 'B' | 'C', { identity: string; recipient: string; file: string }> = {} as never;
const ROWS = 500;

beforeAll(async () => {
  source = await startThrowawayCluster();
  await psql(source.url, 'create database vault');
  await psql(withDatabase(source.url, 'vault'), `create table notes (id int primary key, body text); insert into notes select g, 'note ' || g from generate_series(1, ${ROWS}) g`);
  client = s3Client();
  bucket = await createBucket(client);
  keys = await mkdtemp(join(tmpdir(), 'lb-rekey-'));
  for (const name of ['A', 'B', 'C'] as const) {
    const identity = await generateX25519Identity();
    const recipient = await identityToRecipient(identity);
    const file = join(keys, `${name}.txt`);
    await writeFile(file, `# public key: ${recipient}\n${identity}\n`, { mode: 0o600 });
    id[name] = { identity, recipient, file };
  }
});

afterAll(async () => {
  await source?.stop();
  if (client) {
    await removeBucket(client, bucket);
    client.destroy();
  }
  if (keys) await rm(keys, { recursive: true, force: true });
});

function rawDataset(prefix: string, encryption?: { recipients: string[]; identityFile?: string }, datasetId = 'vault') {
  return { id: datasetId, kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket, prefix }, ...(encryption && { encryption }) };
}

function config(prefix: string, encryption?: { recipients: string[]; identityFile?: string }): Config {
  return testConfig({ datasets: [rawDataset(prefix, encryption)] });
}

const fp = (name: 'A' | 'B' | 'C') => recipientFingerprint(id[name].recipient);

async function dump(prefix: string, tick: string, encryption?: { recipients: string[] }): Promise<{ key: string }> {
  return runOnce(config(prefix, encryption), dumpPostgres, { dataset: 'vault', tick });
}

/** Runs rekey on a config, with its own deps (or the ones given) closed after. */
async function rekey(cfg: Config, options: RekeyOptions = {}, wrap?: (deps: Deps) => Deps): Promise<RekeyResult> {
  const deps = openLocal(cfg, logger());
  try {
    return await rekeyDataset(wrap ? wrap(deps) : deps, cfg.datasets[0]!, options);
  } finally {
    await deps.close();
  }
}

/** Every object under a prefix with its ETag and time: a second run that writes anything changes this. */
async function listing(prefix: string): Promise<Array<{ key: string; etag: string; modified: string }>> {
  const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (page.Contents ?? []).map((o) => ({ key: o.Key!, etag: o.ETag!, modified: o.LastModified!.toISOString() }));
}
const keysUnder = async (prefix: string) => (await listing(prefix)).map((o) => o.key);

async function objectBytes(key: string): Promise<Buffer> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}
const readManifest = async (dir: string): Promise<Manifest> => manifestSchema.parse(JSON.parse((await objectBytes(`${dir}manifest.json`)).toString()));
const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');

async function decryptWith(name: 'A' | 'B' | 'C', bytes: Buffer): Promise<Uint8Array> {
  const d = new Decrypter();
  d.addIdentity(id[name].identity);
  return d.decrypt(bytes);
}

/** A store that fails as a killed process would stop: the call named, after everything before it happened. */
function failingStore(store: TargetStore, fail: { putJson?: (key: string) => boolean; delete?: (keys: string[]) => boolean }): TargetStore {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'putJson' && fail.putJson) {
        return (key: string, ...rest: [unknown, { signal?: AbortSignal }?]) => (fail.putJson!(key) ? Promise.reject(new Error(`killed before writing ${key}`)) : target.putJson(key, ...rest));
      }
      if (prop === 'delete' && fail.delete) {
        return (keys: string[], options?: { signal?: AbortSignal }) => (fail.delete!(keys) ? Promise.reject(new Error(`killed before deleting ${keys.join(', ')}`)) : target.delete(keys, options));
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
const withStore = (fail: Parameters<typeof failingStore>[1]) => (deps: Deps): Deps => ({ ...deps, storeFor: (dataset) => failingStore(deps.storeFor(dataset), fail) });

async function restoredRows(cfg: Config, identity: string): Promise<string> {
  const destination = await startThrowawayCluster();
  try {
    await restoreCommand(cfg, logger(), { dataset: 'vault', backup: 'latest', to: destination.url, identity });
    return await psql(withDatabase(destination.url, 'vault'), 'select count(*) from notes');
  } finally {
    await destination.stop();
  }
}

describe('lifeboat rekey: key rotation on real Postgres, RGW and age', () => {
  const prefix = 'rot/';
  const plainDir = 'rot/vault/20261128T020000Z/';
  const dirs = ['rot/vault/20261129T020000Z/', 'rot/vault/20261130T020000Z/'];
  const before: Manifest[] = [];
  let plainBefore: Awaited<ReturnType<typeof listing>>;

  it('old identity in, new recipient out, and verified: every backup on A is re-encrypted to B, opens with B and no longer with A, the old objects are gone, and a restore with B brings every row back', async () => {
    await dump(prefix, '2026-11-28T02:00:00Z');
    for (const tick of ['2026-11-29T02:00:00Z', '2026-11-30T02:00:00Z']) await dump(prefix, tick, { recipients: [id.A.recipient] });
    for (const dir of dirs) before.push(await readManifest(dir));
    plainBefore = await listing(plainDir);

    // The operator's rotation: the config now names B (and B's identity); the old identity A comes by --identity.
    const rotated = config(prefix, { recipients: [id.B.recipient], identityFile: id.B.file });
    const result = await rekey(rotated, { identity: id.A.file });
    expect(result.counts).toEqual({ reencrypted: 2, current: 0, plaintext: 1, failed: 0, removed: 2 });
    expect(result.ok).toBe(true);
    expect(result.recipients).toEqual([fp('B')]);
    expect(result.backups.map((b) => [b.id, b.outcome])).toEqual([['20261130T020000Z', 're-encrypted'], ['20261129T020000Z', 're-encrypted'], ['20261128T020000Z', 'plaintext']]);
    expect(result.warnings).toEqual([]);
    // The plaintext backup is left exactly as it was; rekey never encrypts it.
    expect(await listing(plainDir)).toEqual(plainBefore);

    for (const [i, dir] of dirs.entries()) {
      const old = before[i]!;
      const newKey = rekeyedKey(old.artifact.key, [fp('B')]);
      expect(newKey).toMatch(/^rot\/vault\/\d{8}T020000Z\/pg_dumpall\.sql\.gz\.[0-9a-f]{8}\.age$/);
      expect((await keysUnder(dir)).sort()).toEqual([`${dir}manifest.json`, newKey, `${dir}verify.json`].sort());
      const manifest = await readManifest(dir);
      const stored = await objectBytes(newKey);
      expect(manifest.artifact).toMatchObject({ key: newKey, size: stored.length, sha256: sha256(stored), compression: 'gzip', format: 'pg_dumpall' });
      expect(manifest.artifact.encryption).toMatchObject({ scheme: 'age', recipients: [fp('B')], plaintext: old.artifact.encryption!.plaintext, rekeyedAt: expect.any(String) });
      expect(manifest.source).toEqual(old.source);
      // B opens it and the plaintext is the very dump A held; A no longer opens it.
      expect(sha256(gunzipSync(await decryptWith('B', stored)))).toBe(old.artifact.encryption!.plaintext.sha256);
      await expect(decryptWith('A', stored)).rejects.toThrow(/no identity matched/);
      const record = verifyRecordSchema.parse(JSON.parse((await objectBytes(`${dir}verify.json`)).toString()));
      expect(record).toMatchObject({ ok: true, key: newKey, trigger: 'rekey', expected: { sha256: sha256(stored) } });
      expect(record.checks.find((c) => c.name === 'plaintext sha256')).toMatchObject({ ok: true });
    }
    expect(result.backups[0]!.verified).toEqual({ ok: true, decrypted: true, detail: 'decrypted, plaintext sha256 matches' });

    // verifyObject as the scrub would run it, with B's identity: the deep check passes.
    const verified = await runOnce(rotated, verifyObject, { dataset: 'vault', backup: 'all' });
    const findings = verified.findings as Array<{ backup: string; ok: boolean }>;
    expect(findings.filter((f) => f.backup !== '20261128T020000Z').map((f) => f.ok)).toEqual([true, true]);
    const deep = verifyRecordSchema.parse(JSON.parse((await objectBytes(`${dirs[1]}verify.json`)).toString()));
    expect(deep.checks.map((c) => [c.name, c.ok])).toContainEqual(['plaintext sha256', true]);

    expect(await restoredRows(rotated, id.B.file)).toBe(String(ROWS));
  });

  it('a second run changes nothing: every backup is already current, no object is written or deleted, and no identity is needed', async () => {
    const snapshot = await listing(prefix);
    const result = await rekey(config(prefix, { recipients: [id.B.recipient] }));
    expect(result.counts).toEqual({ reencrypted: 0, current: 2, plaintext: 1, failed: 0, removed: 0 });
    expect(result.ok).toBe(true);
    expect(await listing(prefix)).toEqual(snapshot);
    // Without an identityFile the operator is told what the scrub and drills will lack.
    expect(result.warnings).toEqual([expect.stringMatching(/^dataset vault has no encryption.identityFile: set it to the identity of the current recipients/)]);
  });
});

describe('lifeboat rekey killed midway', () => {
  it('killed after the new object is written but before the manifest: the old backup still restores with A; the re-run writes the same key, commits and removes the old object', async () => {
    const prefix = 'kill/';
    const dir = 'kill/vault/20261201T020000Z/';
    const { key: oldKey } = await dump(prefix, '2026-12-01T02:00:00Z', { recipients: [id.A.recipient] });
    const manifestBefore = (await objectBytes(`${dir}manifest.json`)).toString();
    const oldObject = (await listing(oldKey))[0]!;
    const rotated = config(prefix, { recipients: [id.B.recipient], identityFile: id.B.file });
    const newKey = rekeyedKey(oldKey, [fp('B')]);

    const killed = await rekey(rotated, { identity: id.A.file }, withStore({ putJson: (key) => key.endsWith('/manifest.json') }));
    expect(killed.ok).toBe(false);
    expect(killed.backups).toEqual([expect.objectContaining({ outcome: 'failed', error: `killed before writing ${dir}manifest.json` })]);
    // What a kill there leaves: the new object, unnamed; the manifest and the old object untouched.
    expect((await keysUnder(dir)).sort()).toEqual([`${dir}manifest.json`, newKey, oldKey].sort());
    expect((await objectBytes(`${dir}manifest.json`)).toString()).toBe(manifestBefore);
    expect((await listing(oldKey))[0]).toEqual(oldObject);
    expect(await restoredRows(config(prefix, { recipients: [id.B.recipient] }), id.A.file)).toBe(String(ROWS));

    const rerun = await rekey(rotated, { identity: id.A.file });
    expect(rerun.backups).toEqual([expect.objectContaining({ outcome: 're-encrypted', newKey, removed: [oldKey] })]);
    expect((await keysUnder(dir)).sort()).toEqual([`${dir}manifest.json`, newKey, `${dir}verify.json`].sort());
    expect((await readManifest(dir)).artifact.encryption!.recipients).toEqual([fp('B')]);
  });

  it('killed after the manifest but before the old object is deleted: the backup is already B\'s; the re-run only removes the leftover, and never a record', async () => {
    const prefix = 'kill2/';
    const dir = 'kill2/vault/20261202T020000Z/';
    const { key: oldKey } = await dump(prefix, '2026-12-02T02:00:00Z', { recipients: [id.A.recipient] });
    const rotated = config(prefix, { recipients: [id.B.recipient], identityFile: id.B.file });
    const newKey = rekeyedKey(oldKey, [fp('B')]);
    // A drill record and a file of someone else's in the folder must survive any cleanup.
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${dir}drill.json`, Body: '{}' }));
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${dir}notes.txt.age`, Body: 'not ours' }));

    const killed = await rekey(rotated, { identity: id.A.file }, withStore({ delete: (keys) => keys.includes(oldKey) }));
    expect(killed.backups).toEqual([expect.objectContaining({ outcome: 'failed', error: expect.stringMatching(/^killed before deleting/) })]);
    expect((await readManifest(dir)).artifact.key).toBe(newKey);
    expect((await keysUnder(dir)).sort()).toEqual([`${dir}drill.json`, `${dir}manifest.json`, `${dir}notes.txt.age`, oldKey, newKey, `${dir}verify.json`].sort());

    const verifyBefore = (await listing(`${dir}verify.json`))[0];
    const rerun = await rekey(rotated);
    expect(rerun.counts).toEqual({ reencrypted: 0, current: 1, plaintext: 0, failed: 0, removed: 1 });
    expect(rerun.backups).toEqual([expect.objectContaining({ outcome: 'current', removed: [oldKey] })]);
    // verify.json already vouched for the new artifact: not rewritten.
    expect((await listing(`${dir}verify.json`))[0]).toEqual(verifyBefore);
    expect((await keysUnder(dir)).sort()).toEqual([`${dir}drill.json`, `${dir}manifest.json`, `${dir}notes.txt.age`, newKey, `${dir}verify.json`].sort());
    expect(await restoredRows(rotated, id.B.file)).toBe(String(ROWS));
  });

  it('decrypted bytes that are not the manifest\'s plaintext abort that backup: no new object (an earlier attempt\'s is deleted), the old manifest and object as they were', async () => {
    const prefix = 'tamper/';
    const dir = 'tamper/vault/20261205T020000Z/';
    const { key: oldKey } = await dump(prefix, '2026-12-05T02:00:00Z', { recipients: [id.A.recipient] });
    const rotated = config(prefix, { recipients: [id.B.recipient] });
    // An earlier attempt killed before its commit left the new object behind.
    await rekey(rotated, { identity: id.A.file }, withStore({ putJson: (key) => key.endsWith('/manifest.json') }));
    expect(await keysUnder(dir)).toContain(rekeyedKey(oldKey, [fp('B')]));
    const manifest = await readManifest(dir);
    const wrong = { ...manifest, artifact: { ...manifest.artifact, encryption: { ...manifest.artifact.encryption!, plaintext: { ...manifest.artifact.encryption!.plaintext, sha256: '0'.repeat(64) } } } };
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${dir}manifest.json`, Body: JSON.stringify(wrong) }));
    const snapshot = (await listing(dir)).filter((o) => o.key !== rekeyedKey(oldKey, [fp('B')]));

    const result = await rekey(rotated, { identity: id.A.file });
    expect(result.backups).toEqual([expect.objectContaining({ outcome: 'failed', error: expect.stringMatching(new RegExp(`^backup 20261205T020000Z: the decrypted content is \\d+ bytes with sha256 ${manifest.artifact.encryption!.plaintext.sha256}, the manifest says \\d+ bytes, 0{64}; nothing was changed, ${oldKey.replace(/\./g, '\\.')} is still the backup$`)) })]);
    expect(await listing(dir)).toEqual(snapshot);
  });

  it('an abort signal mid-stream leaves the backup as it was and no new object', async () => {
    const prefix = 'abort/';
    const dir = 'abort/vault/20261203T020000Z/';
    const { key: oldKey } = await dump(prefix, '2026-12-03T02:00:00Z', { recipients: [id.A.recipient] });
    const snapshot = await listing(dir);
    const controller = new AbortController();
    const outcome = await rekey(config(prefix, { recipients: [id.B.recipient] }), { identity: id.A.file, signal: controller.signal, onProgress: () => controller.abort(new Error('operator pressed Ctrl-C')) }).then(
      () => undefined,
      (err: Error) => err,
    );
    expect(outcome?.message).toMatch(/operator pressed Ctrl-C|aborted/);
    expect(await listing(dir)).toEqual(snapshot);
    expect((await readManifest(dir)).artifact.key).toBe(oldKey);
  });
});

describe('lifeboat rekey refusals', () => {
  const prefix = 'wrong/';
  const dir = 'wrong/vault/20261204T020000Z/';
  let snapshot: Awaited<ReturnType<typeof listing>>;

  beforeAll(async () => {
    await dump(prefix, '2026-12-04T02:00:00Z', { recipients: [id.A.recipient] });
    snapshot = await listing(prefix);
  });

  it('a wrong identity, or none, is a clear error naming --identity and encryption.identityFile, and nothing is written', async () => {
    const wrong = await rekey(config(prefix, { recipients: [id.B.recipient] }), { identity: id.C.file }).catch((err: Error) => err);
    expect(wrong).toBeInstanceOf(RekeyIdentityError);
    expect((wrong as Error).message).toBe(
      `cannot rekey dataset vault: the identity in --identity opens none of the 1 backup(s) to re-encrypt (they are encrypted to ${fp('A')}; it is for ${fp('C')}); pass --identity <file> with the old identity; nothing was changed`,
    );
    const none = await rekey(config(prefix, { recipients: [id.B.recipient] })).catch((err: Error) => err);
    expect((none as Error).message).toMatch(/^cannot rekey dataset vault: 1 backup\(s\) need the old age identity to decrypt, and none is given: pass --identity <file> \(the old identity\), or set encryption.identityFile; nothing was changed$/);
    const missing = await rekey(config(prefix, { recipients: [id.B.recipient], identityFile: join(keys, 'gone.txt') })).catch((err: Error) => err);
    expect((missing as Error).message).toContain(`dataset vault: encryption.identityFile: secret file ${join(keys, 'gone.txt')} cannot be read (ENOENT)`);
    expect(await listing(prefix)).toEqual(snapshot);
  });

  it('--dry-run says what would be re-encrypted and deleted, and writes nothing', async () => {
    const result = await rekey(config(prefix, { recipients: [id.B.recipient] }), { identity: id.A.file, dryRun: true });
    expect(result).toMatchObject({ ok: true, dryRun: true, counts: { reencrypted: 1, current: 0, plaintext: 0, failed: 0, removed: 1 } });
    expect(result.backups).toEqual([
      { id: '20261204T020000Z', outcome: 'would re-encrypt', key: `${dir}pg_dumpall.sql.gz.age`, newKey: rekeyedKey(`${dir}pg_dumpall.sql.gz.age`, [fp('B')]), from: [fp('A')], to: [fp('B')], removed: [`${dir}pg_dumpall.sql.gz.age`] },
    ]);
    // Without the identity, a dry run still shows the plan, and fails.
    const blind = await rekey(config(prefix, { recipients: [id.B.recipient] }), { dryRun: true });
    expect(blind).toMatchObject({ ok: false, counts: { failed: 1 } });
    expect(blind.warnings[0]).toMatch(/need the old age identity/);
    expect(await listing(prefix)).toEqual(snapshot);
  });

  describe('the built CLI', () => {
    let configFile: string;
    const cli = (args: string[], cwd?: string) => {
      const s3 = s3Env();
      return runCli([...args, '-c', configFile], { cwd, env: { TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'error' } });
    };

    beforeAll(async () => {
      configFile = join(keys, 'lifeboat.yaml');
      // JSON is YAML: the test RGW as target hub, Redis on a closed port (rekey needs none).
      await writeFile(
        configFile,
        JSON.stringify({
          redis: { url: 'redis://127.0.0.1:1' },
          targets: { hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
          datasets: [rawDataset(prefix, { recipients: [id.B.recipient], identityFile: id.B.file }), rawDataset('plain/', undefined, 'plain')],
        }),
      );
    });

    it('--dry-run --json prints one object and writes nothing; a wrong identity exits 1; bad flags and a dataset without encryption exit 2', async () => {
      const dry = await cli(['rekey', 'vault', '--dry-run', '--json', '--identity', id.A.file]);
      expect(dry.code).toBe(0);
      const lines = dry.stdout.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({ ok: true, dryRun: true, dataset: 'vault', recipients: [fp('B')], backups: [{ outcome: 'would re-encrypt' }] });

      const wrong = await cli(['rekey', 'vault', '--identity', id.C.file]);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/lifeboat: cannot rekey dataset vault: the identity in --identity opens none of the 1 backup\(s\)/);
      const wrongJson = await cli(['rekey', 'vault', '--identity', id.C.file, '--json']);
      expect(wrongJson.code).toBe(1);
      expect(JSON.parse(wrongJson.stdout)).toMatchObject({ ok: false, dataset: 'vault', exitCode: 1, error: expect.stringMatching(/--identity/) });

      const plain = await cli(['rekey', 'plain']);
      expect(plain.code).toBe(2);
      expect(plain.stderr).toMatch(/dataset plain has no encryption configured: set encryption.recipients/);
      expect((await cli(['rekey', 'vault', '--retries', '0'])).code).toBe(2);
      expect((await cli(['rekey', 'nosuch'])).code).toBe(2);
      expect(await listing(prefix)).toEqual(snapshot);
    });

    it('rekeys with a relative --identity path, says so in lines and a summary, and a --json re-run reports it current', async () => {
      const run = await cli(['rekey', 'vault', '--identity', 'A.txt'], keys);
      expect(run.code).toBe(0);
      expect(run.stderr).toContain(`rekey vault: to the current recipients ${fp('B')}`);
      expect(run.stderr).toMatch(/ {2}20261204T020000Z {2}re-encrypted {2}pg_dumpall\.sql\.gz\.age → pg_dumpall\.sql\.gz\.[0-9a-f]{8}\.age \(.+; verified: decrypted, plaintext sha256 matches\); removed pg_dumpall\.sql\.gz\.age/);
      expect(run.stderr).toContain('vault: re-encrypted 1, already current 0, plaintext 0, failed 0, removed 1 old object');
      expect(run.stdout).toBe('');

      const again = await cli(['rekey', 'vault', '--json']);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, counts: { reencrypted: 0, current: 1, plaintext: 0, failed: 0, removed: 0 } });
    });
  });
});
