import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetBucketLifecycleConfigurationCommand,
  GetBucketVersioningCommand,
  HeadBucketCommand,
  PutBucketLifecycleConfigurationCommand,
  type LifecycleRule,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BucketReport } from '../lib/cli/hubInit.js';
import { PG_URL, removeBucket, runCli, s3Client, s3Env } from './helpers.js';

// `lifeboat hub init` (the built CLI) against the real RGW: buckets, versioning and lifecycle, idempotently.

let client: S3Client;
let dir: string;
let existing: string; // made beforehand, with a rule of someone else's
let fresh: string; // made by hub init
const FOREIGN: LifecycleRule = { ID: 'tmp-cleanup', Status: 'Enabled', Filter: { Prefix: 'tmp/' }, Expiration: { Days: 3 } };

async function writeConfig(days?: number): Promise<string> {
  const file = join(dir, `${randomUUID()}.yaml`);
  const lines = [
    'redis: { url: "redis://127.0.0.1:1" }',
    'targets:',
    `  hub: { kind: s3, endpoint: "${s3Env().endpoint}", accessKeyId: "\${env:TEST_S3_ACCESS_KEY}", secretAccessKey: "\${env:TEST_S3_SECRET_KEY}"${days ? `, noncurrentVersionExpiryDays: ${days}` : ''} }`,
    `  local: { kind: dir, path: "${join(dir, 'data')}" }`,
    'datasets:',
    ...[['main', 'hub', existing, 'pg/'], ['other', 'hub', fresh, ''], ['nearby', 'local', 'postgres', '']].flatMap(([id, target, bucket, prefix]) => [
      `  - id: ${id}`,
      '    kind: postgres',
      `    source: { mode: direct, url: "${PG_URL}" }`,
      `    target: { name: ${target}, bucket: ${bucket}, prefix: "${prefix}" }`,
    ]),
    // A second dataset in the same bucket: still one bucket to set up.
    '  - id: snaps',
    '    kind: etcd',
    `    target: { name: hub, bucket: ${existing}, prefix: etcd/ }`,
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

function lifeboat(args: string[]) {
  const s3 = s3Env();
  return runCli(args, { env: { TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'error' } });
}

async function hubInitJson(file: string, ...flags: string[]): Promise<{ code: number | null; reports: BucketReport[] }> {
  const run = await lifeboat(['hub', 'init', '--json', ...flags, '-c', file]);
  return { code: run.code, reports: JSON.parse(run.stdout) as BucketReport[] };
}

async function bucketExists(bucket: string): Promise<boolean> {
  return client.send(new HeadBucketCommand({ Bucket: bucket })).then(() => true, (err: { $metadata?: { httpStatusCode?: number } }) => {
    if (err.$metadata?.httpStatusCode === 404) return false;
    throw err;
  });
}

const versioning = async (bucket: string) => (await client.send(new GetBucketVersioningCommand({ Bucket: bucket }))).Status;
const rules = async (bucket: string) => (await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket }))).Rules ?? [];

beforeAll(async () => {
  client = s3Client();
  dir = await mkdtemp(join(tmpdir(), 'lb-hubinit-'));
  existing = `lb-hubinit-a-${randomUUID().slice(0, 8)}`;
  fresh = `lb-hubinit-b-${randomUUID().slice(0, 8)}`;
  await client.send(new CreateBucketCommand({ Bucket: existing }));
  await client.send(new PutBucketLifecycleConfigurationCommand({ Bucket: existing, LifecycleConfiguration: { Rules: [FOREIGN] } }));
});

afterAll(async () => {
  for (const b of [existing, fresh]) await removeBucket(client, b).catch(() => {});
  client?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe('lifeboat hub init', () => {
  it('--dry-run says what it would do and changes nothing', async () => {
    const file = await writeConfig(9);
    const run = await lifeboat(['hub', 'init', '--dry-run', '-c', file]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^hub/${fresh}\\s+would change\\s+would create bucket \\(for other\\); would enable versioning; would set lifecycle rules \\(noncurrent versions expire after 9 days`, 'm'));
    expect(run.stdout).toMatch(new RegExp(`^hub/${existing}\\s+would change\\s+bucket exists; would enable versioning; would set lifecycle rules .*; kept 1 other lifecycle rule \\(tmp-cleanup\\)`, 'm'));
    expect(run.stdout).toMatch(/^local\/postgres\s+would change\s+would create directory .*\/data\/postgres \(for nearby\)$/m);
    expect(run.stdout.trim().split('\n').at(-1)).toBe('dry run: nothing was changed');
    expect(await bucketExists(fresh)).toBe(false);
    expect(await versioning(existing)).toBeUndefined();
    expect(await rules(existing)).toEqual([expect.objectContaining({ ID: 'tmp-cleanup' })]);
    await expect(stat(join(dir, 'data'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('creates buckets, turns versioning on and sets the lifecycle, keeping foreign rules; a second run changes nothing', async () => {
    const file = await writeConfig(9);
    const first = await hubInitJson(file);
    expect(first.code).toBe(0);
    expect(first.reports.map((r) => [`${r.target}/${r.bucket}`, r.result])).toEqual([
      [`hub/${existing}`, 'changed'],
      [`hub/${fresh}`, 'changed'],
      ['local/postgres', 'changed'],
    ]);
    expect(first.reports[0]!.datasets).toEqual(['main', 'snaps']);

    for (const bucket of [existing, fresh]) {
      expect(await bucketExists(bucket)).toBe(true);
      expect(await versioning(bucket)).toBe('Enabled');
      const got = await rules(bucket);
      expect(got.find((r) => r.ID === 'lifeboat-noncurrent-expiry')).toMatchObject({ Status: 'Enabled', NoncurrentVersionExpiration: { NoncurrentDays: 9 }, Expiration: { ExpiredObjectDeleteMarker: true } });
      // prune.abortUploadsAfterHours is 24 by default: the hub aborts a day later.
      expect(got.find((r) => r.ID === 'lifeboat-abort-incomplete-uploads')).toMatchObject({ Status: 'Enabled', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 2 } });
    }
    expect((await rules(existing)).find((r) => r.ID === 'tmp-cleanup')).toMatchObject({ Status: 'Enabled', Filter: { Prefix: 'tmp/' }, Expiration: { Days: 3 } });
    expect(await rules(fresh)).toHaveLength(2);
    expect((await stat(join(dir, 'data', 'postgres'))).isDirectory()).toBe(true);

    const before = { existing: await rules(existing), fresh: await rules(fresh) };
    const second = await lifeboat(['hub', 'init', '-c', file]);
    expect(second.code, second.stderr).toBe(0);
    const rows = second.stdout.trim().split('\n').slice(1);
    expect(rows).toHaveLength(3);
    for (const row of rows) expect(row).toMatch(/^\S+\s+no changes\s+/);
    expect(second.stdout).toMatch(new RegExp(`^hub/${existing}\\s+no changes\\s+bucket exists; versioning already Enabled; lifecycle up to date \\(noncurrent versions expire after 9 days, incomplete uploads are aborted after 2 days\\); kept 1 other lifecycle rule \\(tmp-cleanup\\)$`, 'm'));
    expect({ existing: await rules(existing), fresh: await rules(fresh) }).toEqual(before);
  });

  it('a changed expiry updates only Lifeboat\'s rule; --dry-run first changes nothing', async () => {
    const file = await writeConfig(); // the default: 30 days
    const dry = await hubInitJson(file, '--dry-run');
    expect(dry.code).toBe(0);
    expect(dry.reports.find((r) => r.bucket === existing)).toMatchObject({ result: 'changed', actions: expect.arrayContaining([expect.stringMatching(/^would update lifecycle rules \(noncurrent versions expire after 30 days/)]) });
    expect((await rules(existing)).find((r) => r.ID === 'lifeboat-noncurrent-expiry')?.NoncurrentVersionExpiration?.NoncurrentDays).toBe(9);

    const run = await hubInitJson(file);
    expect(run.code).toBe(0);
    expect(run.reports.map((r) => r.result)).toEqual(['changed', 'changed', 'unchanged']);
    const got = await rules(existing);
    expect(got.map((r) => r.ID).sort()).toEqual(['lifeboat-abort-incomplete-uploads', 'lifeboat-noncurrent-expiry', 'tmp-cleanup']);
    expect(got.find((r) => r.ID === 'lifeboat-noncurrent-expiry')?.NoncurrentVersionExpiration?.NoncurrentDays).toBe(30);
    expect((await hubInitJson(file)).reports.map((r) => r.result)).toEqual(['unchanged', 'unchanged', 'unchanged']);
  });

  it('an unreachable hub fails naming the target, with exit 3', async () => {
    const file = join(dir, 'unreachable.yaml');
    await writeFile(
      file,
      [
        'targets:',
        '  hub: { kind: s3, endpoint: "http://127.0.0.1:1", accessKeyId: "${env:TEST_S3_ACCESS_KEY}", secretAccessKey: "${env:TEST_S3_SECRET_KEY}" }',
        'datasets:',
        `  - { id: main, kind: postgres, source: { mode: direct, url: "${PG_URL}" }, target: { name: hub, bucket: ${fresh} } }`,
      ].join('\n'),
    );
    const started = Date.now();
    const run = await lifeboat(['hub', 'init', '-c', file]);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(run.code).toBe(3);
    expect(run.stdout).toMatch(new RegExp(`^hub/${fresh}\\s+failed\\s+target hub \\(http://127\\.0\\.0\\.1:1\\), bucket ${fresh}: HeadBucket failed: ECONNREFUSED`, 'm'));
  });
});
