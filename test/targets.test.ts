import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashStream } from '../lib/targets/hash.js';
import { DirStore } from '../lib/targets/dir.js';
import { S3Store } from '../lib/targets/s3.js';
import { ObjectNotFoundError, type TargetStore } from '../lib/targets/store.js';
import { createBucket, listKeys, multipartUploads, removeBucket, s3Client } from './helpers.js';

/** A body that yields `bytes` of random data, then fails. */
function failingBody(bytes: number, message: string): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= bytes) {
        this.destroy(new Error(message));
        return;
      }
      const chunk = randomBytes(Math.min(1024 * 1024, bytes - sent));
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// The same contract, run against real Ceph RGW and against a local directory.
const kinds: Array<{ name: string; open: () => Promise<{ store: TargetStore; leftovers: () => Promise<string[]>; cleanup: () => Promise<void> }> }> = [
  {
    name: 's3 (Ceph RGW)',
    open: async () => {
      const client: S3Client = s3Client();
      const bucket = await createBucket(client);
      const store = new S3Store(client, 'hub', bucket, { partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
      return {
        store,
        leftovers: () => multipartUploads(client, bucket),
        cleanup: async () => {
          await removeBucket(client, bucket);
          client.destroy();
        },
      };
    },
  },
  {
    name: 'dir',
    open: async () => {
      const root = await mkdtemp(join(tmpdir(), 'lb-dir-'));
      const store = new DirStore(root, 'local', 'bucket');
      await store.ensureBucket();
      return { store, leftovers: async () => readdir(join(root, 'bucket', '.lifeboat-tmp')).catch(() => []), cleanup: async () => {} };
    },
  },
];

describe.each(kinds)('target store: $name', ({ open }) => {
  let store: TargetStore;
  let leftovers: () => Promise<string[]>;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ store, leftovers, cleanup } = await open());
  });
  afterAll(async () => cleanup());

  it('streams a put, hashing on the fly, and reads it back whole and by range', async () => {
    const data = randomBytes(12 * 1024 * 1024 + 17); // multipart on s3 (5 MiB parts)
    const put = await store.put('a/big.bin', Readable.from([data.subarray(0, 1000), data.subarray(1000)]), { contentType: 'application/octet-stream' });
    expect(put).toMatchObject({ key: 'a/big.bin', size: data.length, sha256: sha(data) });
    expect(put.etag).not.toBe('');
    expect(await hashStream(await store.get('a/big.bin'))).toEqual({ sha256: sha(data), size: data.length });
    const range = Buffer.concat(await (await store.get('a/big.bin', { range: { start: 10, end: 19 } })).toArray());
    expect(range.equals(data.subarray(10, 20))).toBe(true);
    expect(await store.head('a/big.bin')).toMatchObject({ size: data.length, etag: put.etag });
  });

  it('a body that fails mid-stream leaves no object and no unfinished upload', async () => {
    await expect(store.put('a/partial.bin', failingBody(11 * 1024 * 1024, 'source died'))).rejects.toThrow('source died');
    expect(await store.head('a/partial.bin')).toBeUndefined();
    expect(await leftovers()).toEqual([]);
  });

  it('an aborted put leaves no object and no unfinished upload', async () => {
    const controller = new AbortController();
    const endless = new Readable({ read() { this.push(randomBytes(256 * 1024)); } });
    setTimeout(() => controller.abort(new Error('shutting down')), 300);
    await expect(store.put('a/aborted.bin', endless, { signal: controller.signal })).rejects.toThrow();
    expect(await store.head('a/aborted.bin')).toBeUndefined();
    expect(await leftovers()).toEqual([]);
  });

  it('lists in S3 key order (UTF-8 bytes), with prefix and startAfter', async () => {
    const keys = ['l/a-c', 'l/a/b', 'l/a/c/d', 'l/a0', 'l/b', 'l/é', 'l/z/1', 'l/A'];
    for (const key of keys) await store.put(key, Readable.from([Buffer.from(key)]));
    const listed = [];
    for await (const o of store.list('l/')) listed.push(o.key);
    const expected = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(listed).toEqual(expected);
    const after = [];
    for await (const o of store.list('l/a', { startAfter: 'l/a/b' })) after.push(o.key);
    expect(after).toEqual(['l/a/c/d', 'l/a0']);
  });

  it('JSON round trip, missing objects, delete', async () => {
    await store.putJson('j/manifest.json', { hello: 'world' });
    expect(await store.getJson('j/manifest.json')).toEqual({ hello: 'world' });
    expect(await store.getJson('j/missing.json')).toBeUndefined();
    expect(await store.head('j/missing.json')).toBeUndefined();
    await expect(store.get('j/missing.json')).rejects.toBeInstanceOf(ObjectNotFoundError);
    await store.delete(['j/manifest.json']);
    expect(await store.head('j/manifest.json')).toBeUndefined();
  });
});

describe('s3 store on RGW specifics', () => {
  it('small objects go up in one PUT and still report sha256 and a real ETag', async () => {
    const client = s3Client();
    const bucket = await createBucket(client);
    try {
      const store = new S3Store(client, 'hub', bucket);
      const put = await store.put('x', Readable.from([Buffer.from('hello')]));
      expect(put).toEqual({ key: 'x', size: 5, sha256: sha(Buffer.from('hello')), etag: '"5d41402abc4b2a76b9719d911017c592"' });
      expect(await listKeys(client, bucket)).toEqual(['x']);
    } finally {
      await removeBucket(client, bucket);
      client.destroy();
    }
  });
});
