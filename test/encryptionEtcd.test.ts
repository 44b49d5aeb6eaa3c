import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { verifyObject } from '../functions/verifyObject.js';
import { drillRecordSchema, manifestSchema } from '../lib/catalog/manifest.js';
import { restoreEtcdCommand } from '../lib/cli/restoreEtcd.js';
import type { Config } from '../lib/config/schema.js';
import { recipientFingerprint } from '../lib/crypto/recipients.js';
import { cleanUpEtcdTest, etcdctl, RAW_SNAPSHOT, startEtcd, ZIP_SNAPSHOT, zipSnapshot } from './etcd.js';
import { createBucket, listKeys, logger, runOnce, s3Client, testConfig } from './helpers.js';

// Real etcd snapshots (Debian's etcd-server), real Ceph RGW, real age; the drill restores with the real etcdctl.
let etcd: ChildProcess | undefined;
let work: string;
let client: S3Client;
let bucket: string;
let identityFile: string;
let recipient: string;
const RAW = RAW_SNAPSHOT;
const ZIP = ZIP_SNAPSHOT;
const MARKER = '/registry/secrets/plaintext-canary';

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-age-etcd-'));
  const started = await startEtcd(join(work, 'data'));
  etcd = started.process;
  for (let i = 0; i < 50; i++) etcdctl('--endpoints', started.endpoint, 'put', `${MARKER}/${i}`, `value-${i}`);
  const source = join(work, 'source');
  await mkdir(source);
  etcdctl('--endpoints', started.endpoint, 'snapshot', 'save', join(source, RAW));
  const inner = ZIP.replace(/\.zip$/, '');
  etcdctl('--endpoints', started.endpoint, 'snapshot', 'save', join(work, inner));
  zipSnapshot(join(work, inner), inner);
  await rename(join(work, ZIP), join(source, ZIP));
  etcd.kill('SIGKILL');
  etcd = undefined;
  client = s3Client();
  bucket = await createBucket(client);
  const identity = await generateX25519Identity();
  recipient = await identityToRecipient(identity);
  identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
}, 60_000);

afterAll(() => cleanUpEtcdTest({ etcd, work, client, bucket }));

function config(withIdentity: boolean): Config {
  return testConfig({
    datasets: [
      {
        id: 'k3s', kind: 'etcd', target: { name: 'hub', bucket, prefix: 'etcd/' }, source: { snapshotDir: join(work, 'source'), settleSeconds: 0 },
        encryption: { recipients: [recipient], ...(withIdentity && { identityFile }) },
      },
    ],
  });
}

const objectBytes = async (key: string) => Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const outcome = (p: Promise<unknown>) => p.then((value) => ({ ok: true as const, value, error: undefined }), (error: Error) => ({ ok: false as const, value: undefined, error }));

describe('age encryption of etcd snapshots, real etcd and RGW', () => {
  it('uploads both snapshots as age ciphertext with no etcd key in the clear, and a second run uploads nothing', async () => {
    const first = await runOnce(config(false), uploadEtcd, { dataset: 'k3s' });
    expect(first.uploaded).toEqual([RAW, ZIP]);
    for (const name of [RAW, ZIP]) {
      const key = `etcd/k3s/${name}/${name}.age`;
      const stored = await objectBytes(key);
      const original = await readFile(join(work, 'source', name));
      expect(stored.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
      expect(stored.includes(Buffer.from(MARKER))).toBe(false);
      const manifest = manifestSchema.parse(JSON.parse((await objectBytes(`etcd/k3s/${name}/manifest.json`)).toString()));
      expect(manifest.artifact).toMatchObject({ key, size: stored.length, sha256: sha256(stored) });
      expect(manifest.artifact.encryption).toEqual({ scheme: 'age', recipients: [recipientFingerprint(recipient)], plaintext: { size: original.length, sha256: sha256(original) } });
    }
    const again = await runOnce(config(false), uploadEtcd, { dataset: 'k3s' });
    expect(again).toMatchObject({ uploaded: [], skipped: [RAW, ZIP] });
  });

  it('verifies without the identity (ciphertext and header) and with it (the raw snapshot trailer, the plaintext sha256)', async () => {
    const blind = await runOnce(config(false), verifyObject, { dataset: 'k3s', key: `etcd/k3s/${RAW}/${RAW}.age` });
    expect(blind.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([['manifest', true], ['size', true], ['sha256', true], ['age header', true], ['decrypt', true]]);
    const deep = await runOnce(config(true), verifyObject, { dataset: 'k3s', key: `etcd/k3s/${RAW}/${RAW}.age` });
    expect(deep.ok).toBe(true);
    expect(deep.checks.map((c: { name: string }) => c.name)).toEqual(['manifest', 'size', 'sha256', 'age header', 'decrypt', 'snapshot sha256 trailer', 'plaintext sha256']);
    const zip = await runOnce(config(true), verifyObject, { dataset: 'k3s', key: `etcd/k3s/${ZIP}/${ZIP}.age` });
    expect(zip.ok).toBe(true);
    expect(zip.checks.find((c: { name: string }) => c.name === 'plaintext sha256')).toMatchObject({ ok: true });
  });

  it('the drill decrypts the newest snapshot (the zip) and restores it with etcdctl; without an identity it is a recorded failure', async () => {
    const good = drillRecordSchema.parse(await runOnce(config(true), drillRestore, { dataset: 'k3s', tick: '2026-11-29T05:00:00Z' }));
    expect(good.ok).toBe(true);
    expect(good.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['download', 'decrypt', 'unzip', 'snapshot restore', 'member dir']));
    const blind = await outcome(runOnce(config(false), drillRestore, { dataset: 'k3s', tick: '2026-11-29T05:00:00Z' }));
    expect(blind.error?.name).toBe('DrillFailedError');
    const record = drillRecordSchema.parse(JSON.parse((await objectBytes(`etcd/k3s/${ZIP}/drill.json`)).toString()));
    expect(record.checks).toEqual([{ name: 'decrypt', ok: false, detail: expect.stringMatching(/age-encrypted and dataset k3s has no encryption.identityFile here/) }]);
  });

  it('`restore --to-dir` writes the decrypted snapshot, byte for byte the original, under its own name; without an identity it refuses and writes nothing', async () => {
    const dir = join(work, 'restored');
    const refused = await outcome(restoreEtcdCommand(config(false), logger(), { dataset: 'k3s', backup: RAW, toDir: dir }));
    expect(refused.error?.message).toMatch(/cannot restore snapshot .*: the backup is age-encrypted/);
    await restoreEtcdCommand(config(false), logger(), { dataset: 'k3s', backup: RAW, toDir: dir, identity: identityFile });
    expect(sha256(await readFile(join(dir, RAW)))).toBe(sha256(await readFile(join(work, 'source', RAW))));
    expect(await listKeys(client, bucket, `etcd/k3s/${RAW}/`)).toContain(`etcd/k3s/${RAW}/${RAW}.age`);
  });
});
