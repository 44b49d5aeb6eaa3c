import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../../functions/dumpPostgres.js';
import { listBackups } from '../../lib/catalog/catalog.js';
import { createDeps } from '../../lib/plumbing/deps.js';
import { MemoryMetricsRecorder } from '../../lib/metrics/recorder.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../../lib/postgres/cluster.js';
import { TargetError, TargetTimeoutError, TargetUnreachableError } from '../../lib/targets/errors.js';
import { hashStream } from '../../lib/targets/hash.js';
import { createS3Client, S3Store } from '../../lib/targets/s3.js';
import { ObjectNotFoundError } from '../../lib/targets/store.js';
import { isPermanent, PermanentError } from '../../queue/errors.js';
import { runFunction } from '../../queue/runner.js';
import { startRgw, type RgwInstance } from '../rgw/launch.js';
import { createBucket, multipartUploads, removeBucket, runCli, s3Client, s3Env, testConfig } from '../helpers.js';

// Real Ceph RGW only. The suite's shared RGW (s3Env) serves the tests that need no fault in the server
// itself; the ones that freeze (SIGSTOP) or kill the server use a private RGW started for this file,
// which nothing else talks to.
const MiB = 1024 * 1024;
let rgw: RgwInstance;
let rgwPid: number;
let shared: S3Client;
let privateAdmin: S3Client;
let privateBucket: string;
let work: string;

beforeAll(async () => {
  rgw = await startRgw();
  rgwPid = rgw.radosgwPid;
  shared = s3Client();
  privateAdmin = client(rgw);
  privateBucket = await createBucket(privateAdmin);
  work = await mkdtemp(join(tmpdir(), 'lb-faults-s3-'));
});

afterAll(async () => {
  shared?.destroy();
  privateAdmin?.destroy();
  rgw?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function client(server: { endpoint: string; accessKeyId: string; secretAccessKey: string }, timeouts: { idleTimeoutMs?: number; connectTimeoutMs?: number } = {}): S3Client {
  return createS3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey, ...timeouts });
}

/** How long `run` took to fail, and with what; a success fails the test. */
async function failure(test: string, run: () => Promise<unknown>): Promise<{ error: Error; elapsedMs: number }> {
  const started = Date.now();
  try {
    await run();
  } catch (error) {
    return { error: error as Error, elapsedMs: Date.now() - started };
  }
  throw new Error(`${test}: expected a failure, got success`);
}

async function drain(iterable: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of iterable);
}

/** Random bytes as a stream of 1 MiB chunks. */
const body = (bytes: number) => Readable.from(Array.from({ length: Math.ceil(bytes / MiB) }, (_, i) => randomBytes(Math.min(MiB, bytes - i * MiB))));

/** Runs `during` with the private RGW frozen; it always thaws, and answers again before this returns. */
async function withRgwPaused<T>(during: () => Promise<T>): Promise<T> {
  process.kill(rgwPid, 'SIGSTOP');
  try {
    return await during();
  } finally {
    process.kill(rgwPid, 'SIGCONT');
    await until('the private RGW answers again', () => multipartUploads(privateAdmin, privateBucket).then(() => true, () => undefined), 20_000);
  }
}

async function until<T>(what: string, read: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(50)) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
  }
}

describe('a missing bucket (shared RGW)', () => {
  const missing = `lb-missing-${randomUUID().slice(0, 12)}`;
  const store = () => new S3Store(shared, 'hub', missing, { partSizeBytes: 5 * MiB, queueSize: 2 });

  it.each([
    ['getJson', (s: S3Store) => s.getJson('nightly/main/20261126T020000Z/manifest.json')],
    ['head', (s: S3Store) => s.head('nightly/main/20261126T020000Z/manifest.json')],
    ['get', (s: S3Store) => s.get('nightly/main/20261126T020000Z/pg_dumpall.sql.gz')],
    ['list', (s: S3Store) => drain(s.list('nightly/'))],
    ['put (one PUT)', (s: S3Store) => s.put('small', body(1000))],
    ['put (multipart)', (s: S3Store) => s.put('big', body(12 * MiB))],
    ['delete', (s: S3Store) => s.delete(['a', 'b'])],
    ['incompleteUploads', (s: S3Store) => drain(s.incompleteUploads())],
  ])('%s throws a permanent TargetError naming target, endpoint, bucket and NoSuchBucket, in well under a second', async (name, call) => {
    const { error, elapsedMs } = await failure(`missing bucket: ${name}`, () => call(store()));
    expect(error).toBeInstanceOf(TargetError);
    expect(error).not.toBeInstanceOf(ObjectNotFoundError);
    expect(isPermanent(error)).toBe(true);
    expect(error).toMatchObject({ target: 'hub', endpoint: s3Env().endpoint, bucket: missing, code: 'NoSuchBucket', httpStatus: 404 });
    expect(error.message).toContain(`target hub (${s3Env().endpoint}), bucket ${missing}`);
    expect(error.message).toMatch(/NoSuchBucket \(HTTP 404\): the bucket does not exist/);
    expect(error.message).not.toMatch(/UnknownError/);
    expect(elapsedMs).toBeLessThan(3000);
  });

  it('in an existing bucket a missing key is still just missing', async () => {
    const bucket = await createBucket(shared);
    try {
      const s = new S3Store(shared, 'hub', bucket);
      expect(await s.getJson('nope.json')).toBeUndefined();
      expect(await s.head('nope.json')).toBeUndefined();
      await expect(s.get('nope.json')).rejects.toBeInstanceOf(ObjectNotFoundError);
    } finally {
      await removeBucket(shared, bucket);
    }
  });

  describe('dumpPostgres into it', () => {
    let cluster: ThrowawayCluster;
    beforeAll(async () => {
      cluster = await startThrowawayCluster();
    });
    afterAll(async () => cluster?.stop());

    it('fails on its first attempt of 4 with a PermanentError, final, so it is not retried', async () => {
      const records: Array<Record<string, unknown>> = [];
      const logger = pino({ level: 'info' }, { write: (line: string) => records.push(JSON.parse(line) as Record<string, unknown>) });
      const config = testConfig({
        datasets: [{ id: 'main', kind: 'postgres', source: { mode: 'direct', url: cluster.url }, target: { name: 'hub', bucket: missing, prefix: 'nightly/' }, schedule: '0 2 * * *' }],
      });
      const deps = createDeps({ config, logger, metrics: new MemoryMetricsRecorder() });
      try {
        const { error, elapsedMs } = await failure('missing bucket: dumpPostgres', () =>
          runFunction(dumpPostgres, { dataset: 'main', tick: '2026-11-26T02:00:00.000Z' }, { jobId: 'j1', attempt: 1, maxAttempts: 4, createdAt: Date.now() }, { deps, emit: async () => {} }),
        );
        expect(error).toBeInstanceOf(PermanentError);
        expect(error).toMatchObject({ name: 'TargetError', code: 'NoSuchBucket', bucket: missing, target: 'hub' });
        expect(error.message).not.toMatch(/UnknownError/);
        // The runtime's verdict: attempt 1 of 4 is final.
        expect(records.filter((r) => r.msg === 'job failed' || r.msg === 'job attempt failed; will retry')).toEqual([
          expect.objectContaining({ msg: 'job failed', final: true, attempt: 1, err: expect.stringContaining('NoSuchBucket') }),
        ]);
        expect(elapsedMs).toBeLessThan(5000);
      } finally {
        await deps.close();
      }
    });
  });
});

describe('wrong credentials (shared RGW)', () => {
  let bucket: string;
  beforeAll(async () => {
    bucket = await createBucket(shared);
  });
  afterAll(async () => removeBucket(shared, bucket));

  it.each([
    ['an unknown access key', { accessKeyId: 'lb-nobody', secretAccessKey: 'x'.repeat(40) }, 'InvalidAccessKeyId'],
    ['a wrong secret', { accessKeyId: s3Env().accessKeyId, secretAccessKey: 'wrong-secret-0123456789' }, 'SignatureDoesNotMatch'],
  ])('%s is a permanent error naming target, endpoint, bucket and %s', async (_, keys, code) => {
    const wrong = client({ endpoint: s3Env().endpoint, ...keys });
    const store = new S3Store(wrong, 'hub', bucket);
    try {
      for (const [name, call] of [
        ['getJson', () => store.getJson('manifest.json')],
        ['list', () => drain(store.list(''))],
        ['put', () => store.put('x', body(100))],
      ] as const) {
        const { error, elapsedMs } = await failure(`${code}: ${name}`, call);
        expect(error).toBeInstanceOf(TargetError);
        expect(isPermanent(error)).toBe(true);
        expect(error).toMatchObject({ code, httpStatus: 403, target: 'hub', bucket });
        expect(error.message).toContain(`target hub (${s3Env().endpoint}), bucket ${bucket}`);
        expect(error.message).toContain(`${code} (HTTP 403)`);
        expect(elapsedMs).toBeLessThan(3000);
      }
      // A HEAD response has no body to name the reason: the code comes from the status, still permanent.
      const { error } = await failure(`${code}: head`, () => store.head('manifest.json'));
      expect(error).toMatchObject({ name: 'TargetError', code: 'Forbidden', httpStatus: 403 });
      expect(error.message).toMatch(/Forbidden \(HTTP 403\): access denied/);
      expect(error.message).not.toMatch(/UnknownError/);
    } finally {
      wrong.destroy();
    }
  });
});

describe('a frozen RGW (SIGSTOP, private RGW)', () => {
  it('getJson fails within a few seconds with a retryable timeout naming the target', async () => {
    await privateAdmin.send(new PutObjectCommand({ Bucket: privateBucket, Key: 'manifest.json', Body: '{"ok":true}' }));
    const hung = client(rgw, { idleTimeoutMs: 1500 });
    const store = new S3Store(hung, 'hub', privateBucket);
    try {
      expect(await store.getJson('manifest.json')).toEqual({ ok: true }); // the connection is open and pooled
      const { error, elapsedMs } = await withRgwPaused(() => failure('frozen: getJson', () => store.getJson('manifest.json')));
      expect(error).toBeInstanceOf(TargetTimeoutError);
      expect(isPermanent(error)).toBe(false);
      expect(error.message).toContain(`timed out after 1.5 s without data from target hub (${rgw.endpoint}), bucket ${privateBucket}`);
      // One timeout, not three: the SDK does not retry a stalled request.
      expect(elapsedMs).toBeGreaterThanOrEqual(1400);
      expect(elapsedMs).toBeLessThan(4000);
    } finally {
      hung.destroy();
    }
  });

  it('a multipart put fails within a few seconds naming the target, and leaves no object once RGW runs again', async () => {
    const hung = client(rgw, { idleTimeoutMs: 1500 });
    const store = new S3Store(hung, 'hub', privateBucket, { partSizeBytes: 5 * MiB, queueSize: 2 });
    const key = 'frozen/pg_dumpall.sql';
    try {
      const { error, elapsedMs } = await withRgwPaused(() => failure('frozen: put', () => store.put(key, body(12 * MiB))));
      expect(error).toBeInstanceOf(TargetTimeoutError);
      expect(error.message).toContain(`without data from target hub (${rgw.endpoint})`);
      expect(elapsedMs).toBeLessThan(6000);
      // Running again, RGW may still serve the stalled request (an upload id nobody uses: pruneCheck's to
      // abort), but no CompleteMultipartUpload was ever sent, so no object can appear.
      const fresh = new S3Store(privateAdmin, 'hub', privateBucket);
      expect(await fresh.head(key)).toBeUndefined();
    } finally {
      hung.destroy();
    }
  });

  it('a GET body that stalls mid-stream errors with the timeout; a consumer that is merely slow does not', async () => {
    // Larger than what the socket buffers on both ends hold, so part of it is still unsent when RGW freezes.
    const data = randomBytes(32 * MiB);
    await new S3Store(privateAdmin, 'hub', privateBucket, { partSizeBytes: 8 * MiB, queueSize: 2 }).put('big.bin', Readable.from([data]));
    const hung = client(rgw, { idleTimeoutMs: 1500 });
    const store = new S3Store(hung, 'hub', privateBucket);
    try {
      // Slow consumer: holding the stream for twice the idle timeout is backpressure, not a stall.
      const slow = await store.get('big.bin');
      await new Promise((resolve) => slow.once('readable', resolve));
      await sleep(3000);
      expect(await hashStream(slow)).toEqual({ sha256: createHash('sha256').update(data).digest('hex'), size: data.length });

      const stalling = await store.get('big.bin');
      await new Promise((resolve) => stalling.once('readable', resolve));
      const { error, elapsedMs } = await withRgwPaused(() => failure('frozen: streamed GET body', () => hashStream(stalling)));
      expect(error).toBeInstanceOf(TargetTimeoutError);
      expect(error.message).toContain(`timed out after 1.5 s without data from target hub (${rgw.endpoint}), bucket ${privateBucket} (GetObject big.bin)`);
      expect(elapsedMs).toBeLessThan(5000);
    } finally {
      hung.destroy();
    }
  });

  it('a consumer that holds back from the first byte is no stall either, with a timeout the handler arms late (6 s and more)', async () => {
    const data = randomBytes(16 * MiB);
    await new S3Store(privateAdmin, 'hub', privateBucket, { partSizeBytes: 8 * MiB, queueSize: 2 }).put('held.bin', Readable.from([data]));
    const patient = client(rgw, { idleTimeoutMs: 6000 });
    try {
      const held = await new S3Store(patient, 'hub', privateBucket).get('held.bin');
      await new Promise((resolve) => held.once('readable', resolve));
      // Past the handler's deferred arming (3 s) plus one timeout.
      await sleep(9500);
      expect(await hashStream(held)).toEqual({ sha256: createHash('sha256').update(data).digest('hex'), size: data.length });
    } finally {
      patient.destroy();
    }
  });

  it('`lifeboat backups ls` exits non-zero within 10 s naming the target', async () => {
    const configFile = join(work, 'lifeboat.yaml');
    await writeFile(
      configFile,
      JSON.stringify({
        targets: { hub: { kind: 's3', endpoint: rgw.endpoint, accessKeyId: '${env:FAULT_S3_ACCESS_KEY}', secretAccessKey: '${env:FAULT_S3_SECRET_KEY}', idleTimeoutMs: 2000 } },
        datasets: [{ id: 'main', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1:5432/postgres' }, target: { name: 'hub', bucket: privateBucket, prefix: 'nightly/' }, schedule: '0 2 * * *' }],
      }),
    );
    const env = { FAULT_S3_ACCESS_KEY: rgw.accessKeyId, FAULT_S3_SECRET_KEY: rgw.secretAccessKey, LOG_LEVEL: 'error' };
    expect(await runCli(['backups', 'ls', '-c', configFile], { env })).toMatchObject({ code: 0, stdout: `no backups in target hub (s3 ${rgw.endpoint}), bucket ${privateBucket}, prefix "nightly/" — config: ${configFile}\n` });
    const started = Date.now();
    const run = await withRgwPaused(() => runCli(['backups', 'ls', '-c', configFile], { env }));
    const elapsedMs = Date.now() - started;
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(`timed out after 2 s without data from target hub (${rgw.endpoint}), bucket ${privateBucket}`);
    expect(elapsedMs).toBeLessThan(30_000); // a 2 s timeout plus Node starting, which load slows
  });
});

describe('a dead RGW (SIGKILL, private RGW; runs last)', () => {
  it('an upload fails naming the target, the endpoint and ECONNREFUSED, not "The operation was aborted"', async () => {
    const dead = client(rgw);
    const store = new S3Store(dead, 'hub', privateBucket, { partSizeBytes: 5 * MiB, queueSize: 2 });
    try {
      await store.head('anything'); // a pooled connection, as a long-running worker would have
      process.kill(rgwPid, 'SIGKILL');
      await until('radosgw gone', async () => (await fetch(rgw.endpoint).then(() => undefined, () => true)), 10_000);
      for (const [name, size] of [['multipart', 12 * MiB], ['one PUT', 1000]] as const) {
        const { error, elapsedMs } = await failure(`dead: put (${name})`, () => store.put(`dead/${name}`, body(size)));
        expect(error).toBeInstanceOf(TargetUnreachableError);
        expect(isPermanent(error)).toBe(false);
        expect(error).toMatchObject({ causeCode: 'ECONNREFUSED', target: 'hub', endpoint: rgw.endpoint });
        expect(error.message).toContain(`cannot reach target hub (${rgw.endpoint}), bucket ${privateBucket}: ECONNREFUSED`);
        expect(error.message).not.toMatch(/operation was aborted/i);
        expect(elapsedMs).toBeLessThan(5000);
      }
      // The catalog too: no listing of a dead hub reads as "no backups".
      const dataset = { id: 'main', kind: 'postgres' as const, target: { name: 'hub', bucket: privateBucket, prefix: 'nightly/' } };
      const { error } = await failure('dead: listBackups', () => listBackups(store, dataset));
      expect(error).toMatchObject({ name: 'TargetUnreachableError', causeCode: 'ECONNREFUSED' });
    } finally {
      dead.destroy();
    }
  });
});
