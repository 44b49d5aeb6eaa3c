import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadBucketCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { drillRecordSchema } from '../lib/catalog/manifest.js';
import { restoreBucketCommand } from '../lib/cli/restoreBucket.js';
import type { BucketDataset, Config } from '../lib/config/schema.js';
import { restoreMirrorBackup } from '../lib/mirror/restoreBackup.js';
import type { S3Store } from '../lib/targets/s3.js';
import { recipientFingerprint } from '../lib/crypto/recipients.js';
import { mirrorEncryption } from '../lib/mirror/encrypted.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { createBucket, listKeys, logger, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, testConfig } from './helpers.js';

// Real Ceph RGW on both sides (the source bucket is another user's, as in production) and real age.
const MiB = 1024 * 1024;
const TICK = '2026-12-01T03:00:00Z';
/** A value only the source holds: it must never appear in a hub object. */
const CANARY = 'lifeboat-mirror-canary-7c3d';
let source: S3Client;
let hub: S3Client;
let sourceKeys: { accessKeyId: string; secretAccessKey: string };
let recipient: string;
let identityFile: string;
const buckets: Array<[S3Client, string]> = [];

beforeAll(async () => {
  sourceKeys = rgwUser('lifeboat-mirror-enc-source');
  source = s3ClientFor(sourceKeys);
  hub = s3Client();
  const identity = await generateX25519Identity();
  recipient = await identityToRecipient(identity);
  identityFile = join(await mkdtemp(join(tmpdir(), 'lb-mirror-age-')), 'identity.txt');
  await writeFile(identityFile, `# public key: ${recipient}\n${identity}\n`, { mode: 0o600 });
});

afterAll(async () => {
  for (const [client, bucket] of buckets) await removeBucket(client, bucket);
  source?.destroy();
  hub?.destroy();
});

type Encryption = 'none' | 'blind' | 'identity';

function config(src: string, dst: string, encryption: Encryption): Config {
  process.env.TEST_ENC_SOURCE_KEY = sourceKeys.accessKeyId;
  process.env.TEST_ENC_SOURCE_SECRET = sourceKeys.secretAccessKey;
  return testConfig({
    datasets: [
      {
        id: 'photos',
        kind: 'bucket',
        source: { endpoint: s3Env().endpoint, bucket: src, accessKeyId: '${env:TEST_ENC_SOURCE_KEY}', secretAccessKey: '${env:TEST_ENC_SOURCE_SECRET}' },
        target: { name: 'hub', bucket: dst, prefix: 'rgw/' },
        mirror: { multipartThresholdMiB: 5, partSizeMiB: 5, sample: 1000 },
        drill: { sample: 100 },
        ...(encryption !== 'none' && { encryption: { recipients: [recipient], ...(encryption === 'identity' && { identityFile }) } }),
      },
    ],
  });
}

async function run(cfg: Config, fn: AnyFunction, data: Record<string, unknown> = {}): Promise<{ value?: any; error?: Error }> {
  const deps = openLocal(cfg, logger());
  try {
    return { value: await runFunction(fn, { dataset: 'photos', ...data }, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} }) };
  } catch (error) {
    return { error: error as Error };
  } finally {
    await deps.close();
  }
}

const put = (client: S3Client, bucket: string, key: string, body: Buffer | string, extra: Record<string, unknown> = {}) =>
  client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof body === 'string' ? Buffer.from(body) : body, ...extra }));
const bytes = async (client: S3Client, bucket: string, key: string) => Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const head = (client: S3Client, bucket: string, key: string) => client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));

const SMALL = ['a.txt', 'b.txt', 'dir/c.txt', 'ünïcødé 😀.txt'];
const KEYS = [...SMALL, 'big.bin', 'empty', 'typed.json'].sort();
const BIG_SIZE = 6 * MiB + 17;

/** Source objects: small ones holding the canary, an empty one, one with headers and metadata, one above the multipart threshold. */
async function seeded(): Promise<{ src: string; dst: string; big: Buffer }> {
  const src = await createBucket(source);
  const dst = await createBucket(hub);
  buckets.push([source, src], [hub, dst]);
  for (const key of SMALL) await put(source, src, key, `${CANARY} in ${key}`);
  await put(source, src, 'empty', '');
  await put(source, src, 'typed.json', `{"note":"${CANARY}"}`, { ContentType: 'application/json', CacheControl: 'max-age=60', ContentDisposition: 'inline; filename="t.json"', Metadata: { owner: 'alice' } });
  const big = Buffer.concat([Buffer.from(CANARY), randomBytes(BIG_SIZE - CANARY.length)]);
  await put(source, src, 'big.bin', big);
  return { src, dst, big };
}

const mirroredKeys = async (dst: string) => (await listKeys(hub, dst, 'rgw/')).map((k) => k.slice('rgw/'.length)).sort();

/** Every hub copy is age ciphertext of its source object, marked, and holds no plaintext. */
async function expectEncrypted(src: string, dst: string): Promise<void> {
  const enc = await mirrorEncryption([recipient], 'test');
  for (const key of KEYS) {
    const stored = await bytes(hub, dst, `rgw/${key}`);
    const original = await bytes(source, src, key);
    expect(stored.subarray(0, 22).toString(), key).toBe('age-encryption.org/v1\n');
    expect(stored.includes(Buffer.from(CANARY)), key).toBe(false);
    expect(stored.length, key).toBe(enc.ciphertextSize(original.length));
    const h = await head(hub, dst, `rgw/${key}`);
    expect(h.ContentType, key).toBe('application/octet-stream');
    expect(h.Metadata, key).toMatchObject({
      'lifeboat-encryption': 'age',
      'lifeboat-recipients': recipientFingerprint(recipient),
      'lifeboat-source-size': String(original.length),
      'lifeboat-plaintext-sha256': sha256(original),
      'lifeboat-source-etag': (await head(source, src, key)).ETag,
    });
  }
}

describe('mirrorBucket with per-object age encryption, on real RGW', () => {
  it('stores ciphertext at the same keys, marked; a second run copies nothing with no HEADs; a changed object is the only one re-copied', async () => {
    const { src, dst } = await seeded();
    const cfg = config(src, dst, 'blind');
    const first = await run(cfg, mirrorBucket, { tick: TICK });
    expect(first.error).toBeUndefined();
    expect(first.value).toMatchObject({ copied: { count: KEYS.length }, skipped: { count: 0 } });
    expect(await mirroredKeys(dst)).toEqual(KEYS);
    await expectEncrypted(src, dst);
    const report = JSON.parse((await bytes(hub, dst, first.value.key)).toString());
    expect(report).toMatchObject({ ok: true, encryption: { scheme: 'age', recipients: [recipientFingerprint(recipient)], sample: 'recorded sha256' } });
    expect(report.verification.listing).toMatchObject({ ok: true, sizeMismatch: 0, missing: 0 });
    expect(report.verification.sample).toMatchObject({ checked: KEYS.length, mismatches: [] });

    const second = await run(cfg, mirrorBucket, { tick: '2026-12-01T04:00:00Z' });
    expect(second.value).toMatchObject({ copied: { count: 0 }, skipped: { count: KEYS.length }, heads: 0 });

    // Same size, other bytes: only the recorded source ETag can tell, after one HEAD.
    await put(source, src, 'b.txt', `${CANARY} in b.tx!`);
    const third = await run(cfg, mirrorBucket, { tick: '2026-12-01T05:00:00Z' });
    expect(third.error).toBeUndefined();
    expect(third.value).toMatchObject({ copied: { count: 1 }, skipped: { count: KEYS.length - 1 } });
    await expectEncrypted(src, dst);
    expect((await run(cfg, mirrorBucket, { tick: '2026-12-01T06:00:00Z' })).value).toMatchObject({ copied: { count: 0 }, heads: 0 });
  });

  it('enabling encryption over a plaintext mirror re-copies every object encrypted; disabling it copies them back in plaintext', async () => {
    const { src, dst, big } = await seeded();
    expect((await run(config(src, dst, 'none'), mirrorBucket, { tick: TICK })).value).toMatchObject({ copied: { count: KEYS.length } });
    expect((await bytes(hub, dst, 'rgw/big.bin')).equals(big)).toBe(true);

    const plan = await run(config(src, dst, 'blind'), mirrorBucket, { tick: '2026-12-01T04:00:00Z', dryRun: true });
    expect(plan.value.plan.map((a: { key: string; reason: string }) => [a.key, a.reason])).toEqual(KEYS.map((k) => [k, 'unencrypted']));
    const enabled = await run(config(src, dst, 'blind'), mirrorBucket, { tick: '2026-12-01T04:00:00Z' });
    expect(enabled.error).toBeUndefined();
    expect(enabled.value).toMatchObject({ copied: { count: KEYS.length }, skipped: { count: 0 } });
    await expectEncrypted(src, dst);

    const disabled = await run(config(src, dst, 'none'), mirrorBucket, { tick: '2026-12-01T05:00:00Z' });
    expect(disabled.value).toMatchObject({ copied: { count: KEYS.length } });
    for (const key of KEYS) expect((await bytes(hub, dst, `rgw/${key}`)).equals(await bytes(source, src, key)), key).toBe(true);
  });

  it('hub copies without the marker while encryption is on: a plaintext one is re-copied encrypted, one of the ciphertext\'s length fails the sample, named', async () => {
    const { src, dst } = await seeded();
    const cfg = config(src, dst, 'blind');
    expect((await run(cfg, mirrorBucket, { tick: TICK })).error).toBeUndefined();
    // What an older, unencrypted mirror left: the plaintext itself.
    await put(hub, dst, 'rgw/a.txt', await bytes(source, src, 'a.txt'));
    // Filler of exactly the ciphertext's length, newer than the source: only its missing marker gives it away.
    const enc = await mirrorEncryption([recipient], 'test');
    await put(hub, dst, 'rgw/b.txt', Buffer.alloc(enc.ciphertextSize((await bytes(source, src, 'b.txt')).length), 0x41));
    const again = await run(cfg, mirrorBucket, { tick: '2026-12-01T04:00:00Z' });
    expect(again.error?.message).toMatch(/1 sampled objects differ .*sample mismatch: b\.txt\)/);
    const report = JSON.parse((await bytes(hub, dst, '_lifeboat/mirrors/photos/20261201T040000Z/report.json')).toString());
    expect(report).toMatchObject({ ok: false, copied: { count: 1 } });
    expect(report.verification.sample.mismatches).toEqual([{ key: 'b.txt', source: expect.any(String), destination: 'a plaintext copy (no lifeboat-encryption marker)' }]);
    expect((await head(hub, dst, 'rgw/a.txt')).Metadata).toMatchObject({ 'lifeboat-encryption': 'age' });
    expect((await bytes(hub, dst, 'rgw/a.txt')).includes(Buffer.from(CANARY))).toBe(false);
  });

  it('restores with the identity: every key, byte, Content-Type and metadata; without it a clear error and nothing written', async () => {
    const { src, dst } = await seeded();
    expect((await run(config(src, dst, 'blind'), mirrorBucket, { tick: TICK })).error).toBeUndefined();

    const target = `lb-enc-restore-${randomBytes(4).toString('hex')}`;
    buckets.push([hub, target]);
    const blind = restoreBucketCommand(config(src, dst, 'blind'), logger(), { dataset: 'photos', backup: 'latest', toTarget: 'hub', toBucket: target, json: true, retries: 1 });
    await expect(blind).rejects.toThrow(/age-encrypted and dataset photos has no encryption.identityFile here/);
    await expect(hub.send(new HeadBucketCommand({ Bucket: target }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });

    const code = await restoreBucketCommand(config(src, dst, 'identity'), logger(), { dataset: 'photos', backup: 'latest', toTarget: 'hub', toBucket: target, json: true, retries: 1 });
    expect(code).toBe(0);
    expect((await listKeys(hub, target)).sort()).toEqual(KEYS);
    for (const key of KEYS) {
      expect((await bytes(hub, target, key)).equals(await bytes(source, src, key)), key).toBe(true);
      const [a, b] = [await head(source, src, key), await head(hub, target, key)];
      expect([b.ContentType, b.CacheControl, b.ContentDisposition, b.Metadata], key).toEqual([a.ContentType, a.CacheControl, a.ContentDisposition, a.Metadata]);
    }
    expect((await head(hub, target, 'typed.json')).Metadata).toEqual({ owner: 'alice' });
    // Again: every object is recognised as already there by the recorded size and source ETag.
    const cfg = config(src, dst, 'identity');
    const deps = openLocal(cfg, logger());
    try {
      const again = await restoreMirrorBackup(deps, cfg.datasets[0] as BucketDataset, { backup: 'latest', destination: deps.store('hub', target) as S3Store, destinationName: 'hub', toPrefix: '', overwrite: false, dryRun: false }, { say: () => {}, read: (_w, step) => step(), log: logger() });
      expect(again).toMatchObject({ ok: true, copied: { count: 0 }, unchanged: { count: KEYS.length } });
    } finally {
      await deps.close();
    }
  });

  it('drills with the identity; without it the drill is a recorded failure naming encryption.identityFile', async () => {
    const { src, dst } = await seeded();
    expect((await run(config(src, dst, 'blind'), mirrorBucket, { tick: TICK })).error).toBeUndefined();
    const good = await run(config(src, dst, 'identity'), drillRestore, { tick: '2026-12-02T05:00:00Z' });
    expect(good.error).toBeUndefined();
    const record = drillRecordSchema.parse(good.value);
    expect(record.checks.map((c) => [c.name, c.ok])).toEqual([['report', true], ['sample restore', true], ['decrypt', true], ['sha256', true], ['scratch cleanup', true]]);
    expect(record.details).toMatchObject({ sampled: KEYS.length, compared: KEYS.length, decrypted: KEYS.length, mismatches: 0 });

    const blind = await run(config(src, dst, 'blind'), drillRestore, { tick: '2026-12-02T06:00:00Z' });
    expect(blind.error).toMatchObject({ name: 'DrillFailedError' });
    const failed = drillRecordSchema.parse(JSON.parse((await bytes(hub, dst, '_lifeboat/mirrors/photos/20261201T030000Z/drill.json')).toString()));
    expect(failed.ok).toBe(false);
    expect(failed.checks).toEqual([{ name: 'decrypt', ok: false, detail: expect.stringContaining('encryption.identityFile') }]);
  });

  it('a hub object whose ciphertext was swapped for another object\'s (its metadata kept) is caught and named by the sample and the drill', async () => {
    const { src, dst } = await seeded();
    expect((await run(config(src, dst, 'identity'), mirrorBucket, { tick: TICK })).error).toBeUndefined();
    // a.txt and b.txt have plaintexts of the same length, so the swap keeps the size: only decrypting tells.
    const victim = 'rgw/a.txt';
    const h = await head(hub, dst, victim);
    await put(hub, dst, victim, await bytes(hub, dst, 'rgw/b.txt'), { Metadata: h.Metadata, ContentType: h.ContentType });
    // And one flipped byte deep inside the large object's ciphertext: its chunk's tag fails.
    const bigHead = await head(hub, dst, 'rgw/big.bin');
    const rotted = await bytes(hub, dst, 'rgw/big.bin');
    rotted[3 * MiB] = rotted[3 * MiB]! ^ 0x01;
    await put(hub, dst, 'rgw/big.bin', rotted, { Metadata: bigHead.Metadata, ContentType: bigHead.ContentType });

    const mirror = await run(config(src, dst, 'identity'), mirrorBucket, { tick: '2026-12-01T04:00:00Z' });
    expect(mirror.error?.message).toMatch(/2 sampled objects differ .*sample mismatch: a\.txt, big\.bin\)/);

    const drill = await run(config(src, dst, 'identity'), drillRestore, { tick: '2026-12-02T05:00:00Z', backup: '20261201T030000Z' });
    expect(drill.error).toMatchObject({ name: 'DrillFailedError', message: expect.stringContaining(victim) });
    const record = drillRecordSchema.parse(JSON.parse((await bytes(hub, dst, '_lifeboat/mirrors/photos/20261201T030000Z/drill.json')).toString()));
    const decrypt = record.checks.find((c) => c.name === 'decrypt')!;
    expect(decrypt).toMatchObject({ ok: false, detail: expect.stringMatching(/^2 of 7 sampled hub objects did not decrypt/) });
    expect(decrypt.detail).toContain(`${victim}: decrypted to `);
    expect(decrypt.detail).toContain('rgw/big.bin: dataset photos: the ciphertext is damaged');
    expect(await listKeys(hub, dst, 'rgw/')).toHaveLength(KEYS.length);
    expect(await listKeys(hub, dst, '_lifeboat/drill-scratch/')).toEqual([]);
  });
});
