import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { listBackups } from '../lib/catalog/catalog.js';
import { drillRecordSchema, manifestSchema, verifyRecordSchema, type Manifest } from '../lib/catalog/manifest.js';
import { restoreCommand } from '../lib/cli/restore.js';
import type { Config } from '../lib/config/schema.js';
import { recipientFingerprint } from '../lib/crypto/recipients.js';
import { openLocal } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { configProblems, createBucket, listKeys, logger, multipartUploads, psql, removeBucket, runOnce, s3Client, s3Env, testConfig, withDatabase } from './helpers.js';

// Real PostgreSQL 15 (a throwaway cluster for this file), real Ceph RGW, real age (the age-encryption package).
let source: ThrowawayCluster;
let client: S3Client;
let bucket: string;
let keys: string;
let identity: string;
let recipient: string;
let identityFile: string;

/** A value only the database holds: it must never appear in a stored object. */
const SECRET_ROW = 'lifeboat-plaintext-canary-5b1e';

beforeAll(async () => {
  source = await startThrowawayCluster();
  await psql(source.url, 'create database vault');
  await psql(withDatabase(source.url, 'vault'), `create table notes (id int primary key, body text); insert into notes select g, '${SECRET_ROW} ' || g from generate_series(1, 2000) g`);
  client = s3Client();
  bucket = await createBucket(client);
  keys = await mkdtemp(join(tmpdir(), 'lb-age-'));
  identity = await generateX25519Identity();
  recipient = await identityToRecipient(identity);
  identityFile = join(keys, 'identity.txt');
  // As age-keygen writes it: comments, then the key.
  await writeFile(identityFile, `# created: 2026-12-02T00:00:00Z\n# public key: ${recipient}\n${identity}\n`, { mode: 0o600 });
});

afterAll(async () => {
  await source?.stop();
  await removeBucket(client, bucket);
  client.destroy();
});

function config(encryption: Record<string, unknown> | undefined, prefix = 'enc/'): Config {
  return testConfig({
    datasets: [
      {
        id: 'vault',
        kind: 'postgres',
        source: { mode: 'direct', url: source.url },
        target: { name: 'hub', bucket, prefix },
        ...(encryption && { encryption }),
        drill: { assertions: [{ name: 'notes rows', database: 'vault', sql: 'select count(*) from notes', expect: '2000' }] },
      },
    ],
  });
}

async function objectBytes(key: string): Promise<Buffer> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function readJson<T>(key: string, schema: { parse(v: unknown): T }): Promise<T> {
  return schema.parse(JSON.parse((await objectBytes(key)).toString()));
}

const outcome = (p: Promise<unknown>) => p.then((value) => ({ ok: true as const, value, error: undefined }), (error: Error) => ({ ok: false as const, value: undefined, error }));

describe('age encryption at rest, on real Postgres and RGW', () => {
  const tick = '2026-12-01T02:00:00.000Z';
  const dir = 'enc/vault/20261201T020000Z/';
  const key = `${dir}pg_dumpall.sql.gz.age`;
  let manifest: Manifest;

  it('an encrypted dump holds no plaintext byte of the database, and its manifest records both hashes and the recipient fingerprint, never a key', async () => {
    const result = await runOnce(config({ recipients: [recipient] }), dumpPostgres, { dataset: 'vault', tick });
    expect(result.key).toBe(key);
    const stored = await objectBytes(key);
    expect(stored.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
    // Neither the row, nor the dump's own text, nor a gzip header: ciphertext throughout.
    expect(stored.includes(Buffer.from(SECRET_ROW))).toBe(false);
    expect(stored.includes(Buffer.from('PostgreSQL database cluster dump'))).toBe(false);
    expect(stored.includes(Buffer.from([0x1f, 0x8b, 0x08]))).toBe(false);

    manifest = await readJson(`${dir}manifest.json`, manifestSchema);
    expect(manifest.artifact).toMatchObject({ key, size: stored.length, compression: 'gzip', contentType: 'application/octet-stream' });
    expect(manifest.artifact.encryption).toMatchObject({ scheme: 'age', recipients: [recipientFingerprint(recipient)] });
    expect(manifest.artifact.encryption!.plaintext.size).toBeGreaterThan(stored.length);
    expect(manifest.artifact.encryption!.plaintext.sha256).not.toBe(manifest.artifact.sha256);
    const text = JSON.stringify(manifest);
    expect(text).not.toContain('AGE-SECRET-KEY');
    expect(text).not.toContain(identity.slice(16, 40));
  });

  it('verifyObject without an identity checks the ciphertext sha256 and the age header; with one it decrypts and checks the plaintext, gzip and trailer', async () => {
    await runOnce(config({ recipients: [recipient] }), verifyObject, { dataset: 'vault', key });
    const blind = await readJson(`${dir}verify.json`, verifyRecordSchema);
    expect(blind.ok).toBe(true);
    expect(blind.checks.map((c) => [c.name, c.ok])).toEqual([['manifest', true], ['size', true], ['sha256', true], ['age header', true], ['decrypt', true]]);
    expect(blind.checks.find((c) => c.name === 'decrypt')!.detail).toMatch(/^not decrypted: dataset vault has no encryption.identityFile here/);

    await runOnce(config({ recipients: [recipient], identityFile }), verifyObject, { dataset: 'vault', key });
    const deep = await readJson(`${dir}verify.json`, verifyRecordSchema);
    expect(deep.ok).toBe(true);
    expect(deep.checks.map((c) => [c.name, c.ok])).toEqual([
      ['manifest', true], ['size', true], ['sha256', true], ['age header', true], ['decrypt', true], ['gzip', true], ['pg_dumpall trailer', true], ['plaintext sha256', true],
    ]);
    expect(deep.history!.map((h) => h.ok)).toEqual([true, true]);
  });

  it('the identity as an ${file:} reference or an ${env:} one works; one that cannot be read is named, and the verification still checks the ciphertext', async () => {
    const viaRef = await runOnce(config({ recipients: [recipient], identityFile: `\${file:${identityFile}}` }), verifyObject, { dataset: 'vault', key });
    expect(viaRef.checks.map((c: { name: string }) => c.name)).toContain('plaintext sha256');
    const missing = join(keys, 'no-such-identity');
    const record = await runOnce(config({ recipients: [recipient], identityFile: missing }), verifyObject, { dataset: 'vault', key });
    expect(record.ok).toBe(true);
    expect(record.checks.find((c: { name: string }) => c.name === 'decrypt').detail).toContain(`dataset vault: encryption.identityFile: secret file ${missing} cannot be read (ENOENT)`);
  });

  it('restores with the identity: every row comes back, and the decrypted dump matches the manifest', async () => {
    const destination = await startThrowawayCluster();
    try {
      await restoreCommand(config({ recipients: [recipient], identityFile }), logger(), { dataset: 'vault', backup: 'latest', to: destination.url, json: false });
      expect(await psql(withDatabase(destination.url, 'vault'), `select count(*), count(*) filter (where body like '${SECRET_ROW}%') from notes`)).toBe('2000|2000');
    } finally {
      await destination.stop();
    }
  });

  it('a restore without an identity fails before the destination is touched, saying what to set; a wrong identity is named too', async () => {
    const destination = await startThrowawayCluster();
    try {
      const none = await outcome(restoreCommand(config({ recipients: [recipient] }), logger(), { dataset: 'vault', backup: 'latest', to: destination.url }));
      expect(none.error?.message).toMatch(/cannot restore backup 20261201T020000Z: the backup is age-encrypted and dataset vault has no encryption.identityFile here; set encryption.identityFile \(or --identity\)/);
      const otherFile = join(keys, 'other.txt');
      await writeFile(otherFile, `${await generateX25519Identity()}\n`);
      const wrong = await outcome(restoreCommand(config({ recipients: [recipient] }), logger(), { dataset: 'vault', backup: 'latest', to: destination.url, identity: otherFile }));
      expect(wrong.error?.message).toMatch(/no identity matched any of the file's recipients/);
      expect(await psql(destination.url, "select count(*) from pg_database where datname = 'vault'")).toBe('0');
    } finally {
      await destination.stop();
    }
  });

  it('the drill decrypts with the identity and passes; without one it is a recorded, final failure that names the missing identity', async () => {
    const good = await runOnce(config({ recipients: [recipient], identityFile }), drillRestore, { dataset: 'vault' });
    expect(good.ok).toBe(true);
    const record = await readJson(`${dir}drill.json`, drillRecordSchema);
    expect(record.checks.find((c) => c.name === 'decrypt')).toMatchObject({ ok: true });
    expect(record.checks.find((c) => c.name === 'assertion notes rows')).toMatchObject({ ok: true });

    const blind = await outcome(runOnce(config({ recipients: [recipient] }), drillRestore, { dataset: 'vault' }));
    expect(blind.ok).toBe(false);
    expect(blind.error!.name).toBe('DrillFailedError');
    const failed = await readJson(`${dir}drill.json`, drillRecordSchema);
    expect(failed.ok).toBe(false);
    expect(failed.checks).toEqual([{ name: 'decrypt', ok: false, detail: expect.stringMatching(/the backup is age-encrypted and dataset vault has no encryption.identityFile here/) }]);
  });

  it('a corrupted ciphertext is caught without the identity, and with it the decryption fails too', async () => {
    const stored = await objectBytes(key);
    const damaged = Buffer.from(stored);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x40;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: damaged }));

    const blind = await outcome(runOnce(config({ recipients: [recipient] }), verifyObject, { dataset: 'vault', key }));
    expect(blind.error?.name).toBe('CorruptBackupError');
    const record = await readJson(`${dir}verify.json`, verifyRecordSchema);
    expect(record.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['sha256']);

    await outcome(runOnce(config({ recipients: [recipient], identityFile }), verifyObject, { dataset: 'vault', key }));
    const deep = await readJson(`${dir}verify.json`, verifyRecordSchema);
    expect(deep.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['sha256', 'decrypt']);
    expect(deep.checks.find((c) => c.name === 'decrypt')!.detail).toMatch(/the ciphertext is damaged/);
    const [entry] = await listBackups(openLocal(config(undefined), logger()).storeFor(config(undefined).datasets[0]!), config(undefined).datasets[0]!);
    expect(entry!.status).toBe('corrupt');
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: stored }));
  });

  it('a recipient that does not parse fails the job before pg_dumpall runs and leaves no object and no unfinished upload', async () => {
    const cfg = config({ recipients: [recipient] }, 'bad/');
    // Past the config check (which refuses it, below): the job's own check is the last line.
    (cfg.datasets[0] as { encryption: { recipients: string[] } }).encryption.recipients = [recipient, `${recipient.slice(0, -4)}qqqq`];
    const result = await outcome(runOnce(cfg, dumpPostgres, { dataset: 'vault', tick }));
    expect(result.error?.name).toBe('EncryptionSetupError');
    expect(result.error?.message).toMatch(/^dataset vault: encryption\.recipients\[1\] is not a valid age recipient \(Invalid checksum.*\); nothing was uploaded$/);
    expect(await listKeys(client, bucket, 'bad/')).toEqual([]);
    expect(await multipartUploads(client, bucket)).toEqual([]);
  });
});

describe('encryption config', () => {
  const dataset = (encryption: unknown) => ({
    targets: { hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:K}', secretAccessKey: '${env:S}' } },
    datasets: [{ id: 'vault', kind: 'postgres', source: { mode: 'direct', url: 'postgres://db/postgres' }, target: { name: 'hub', bucket: 'backups' }, encryption }],
  });

  const problems = (raw: unknown) => configProblems(raw, { K: 'k', S: 's' });

  it('names the field of a bad recipient, refuses a private key without echoing it, and requires at least one recipient', async () => {
    const secret = await generateX25519Identity();
    expect(problems(dataset({ recipients: ['age1notakey'] }))).toEqual([expect.stringMatching(/^datasets\[0\]\.encryption\.recipients\[0\]: is not a valid age recipient/)]);
    const pasted = problems(dataset({ recipients: [secret] }));
    expect(pasted).toEqual([expect.stringMatching(/^datasets\[0\]\.encryption\.recipients\[0\]: is an age identity \(a private key\)/)]);
    expect(pasted.join('\n')).not.toContain(secret.slice(15));
    expect(problems(dataset({ recipients: ['ssh-ed25519 AAAA'] }))).toEqual([expect.stringMatching(/recipients\[0\]: must be an age recipient \(a public key starting with age1…\)/)]);
    expect(problems(dataset({ recipients: [] }))).toEqual([expect.stringMatching(/^datasets\[0\]\.encryption\.recipients: list at least one age recipient/)]);
    expect(problems(dataset({ recipients: [recipient], identityFile: 'keys/id.txt' }))).toEqual([expect.stringMatching(/^datasets\[0\]\.encryption\.identityFile: must be an absolute path/)]);
    expect(problems(dataset({ recipients: [recipient], identityFile: '/missing/is/fine/at/load' }))).toEqual([]);
  });
});
