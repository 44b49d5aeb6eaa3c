import { execFileSync, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, DeleteObjectsCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import type { App } from '../lib/plumbing/app.js';
import { ConfigError, parseConfig } from '../lib/config/load.js';
import type { Config } from '../lib/config/schema.js';
import { decodeListedKey, notXmlSafe } from '../lib/targets/s3.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import { allFunctions } from '../functions/index.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { Deps } from '../lib/plumbing/deps.js';
import { createRedis } from '../lib/plumbing/redis.js';
import type { AnyFunction } from '../queue/define.js';
import { QueueSet } from '../queue/queues.js';
import { runFunction } from '../queue/runner.js';
import { libpqEnv } from '../lib/postgres/connection.js';
import { capture } from '../lib/postgres/process.js';
import { createS3Client } from '../lib/targets/s3.js';

export const PG_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = 'redis://127.0.0.1:6379';

export function s3Env() {
  return inject('s3');
}

export function s3Client(): S3Client {
  const s3 = s3Env();
  return createS3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey });
}

/** A new, empty bucket on the test RGW. */
export async function createBucket(client: S3Client, name = `lb-test-${randomUUID().slice(0, 13)}`): Promise<string> {
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

export async function removeBucket(client: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const keys = await listKeys(client, bucket);
    if (!keys.length) break;
    // Keys XML cannot carry (control characters, edge whitespace) are deleted one by one.
    for (const Key of keys.filter(notXmlSafe)) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key }));
    const rest = keys.filter((k) => !notXmlSafe(k));
    if (rest.length) await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: rest.map((Key) => ({ Key })) } }));
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => {});
}

/** Up to 1000 keys, listed url-encoded so that every key survives the XML. */
export async function listKeys(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix || undefined, EncodingType: 'url' }));
  return (page.Contents ?? []).map((o) => (page.EncodingType === 'url' ? decodeListedKey(o.Key!) : o.Key!));
}

export async function multipartUploads(client: S3Client, bucket: string): Promise<string[]> {
  const r = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  return (r.Uploads ?? []).map((u) => u.Key!);
}

/** Env holding the test S3 credentials, for ${env:...} references in test configs. */
export function testEnv(): NodeJS.ProcessEnv {
  const s3 = s3Env();
  return { ...process.env, TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey };
}

/** A validated config with one s3 target "hub" on the test RGW and the given datasets. */
export function testConfig(raw: { datasets?: unknown[]; targets?: Record<string, unknown>; redisPrefix?: string; server?: Record<string, unknown> } = {}): Config {
  return parseConfig(
    {
      redis: { url: REDIS_URL, prefix: raw.redisPrefix ?? `lbtest-${randomUUID().slice(0, 8)}` },
      targets: {
        hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', partSizeMiB: 5, queueSize: 2 },
        ...raw.targets,
      },
      datasets: raw.datasets ?? [],
      server: { port: 0, shutdownGraceMs: 2000, ...raw.server },
    },
    'test config',
    { env: testEnv() },
  );
}

export const logger = silentLogger;

export async function psql(url: string, sql: string): Promise<string> {
  return (await capture('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '--dbname', url, '-c', sql], { env: libpqEnv({ url }) })).trim();
}

/** A fresh database on the shared test server, named for the test file; drop() removes it. */
export async function freshDatabase(label: string): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `lb_${label}_${randomUUID().slice(0, 8)}`.replace(/[^a-z0-9_]/g, '_');
  await psql(PG_URL, `create database ${name}`);
  const url = `postgres://postgres@127.0.0.1:5432/${name}`;
  return { name, url, drop: () => psql(PG_URL, `drop database if exists ${name} with (force)`).then(() => {}) };
}

/** Closes apps opened by a test and deletes every Redis key under their prefixes. */
export async function closeApps(apps: App[]): Promise<void> {
  const closing = apps.splice(0);
  await Promise.all(closing.map((a) => a.close()));
  const redis = new Redis(REDIS_URL);
  try {
    for (const prefix of new Set(closing.map((a) => a.config.redis.prefix))) {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(...keys);
    }
  } finally {
    redis.disconnect();
  }
}

/** `url` with its database replaced (works for socket URLs with query parameters too). */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Creates databases, each with an `items` table of the given number of rows. */
export async function seedDatabases(url: string, rows: Record<string, number>): Promise<void> {
  for (const [db, count] of Object.entries(rows)) {
    await psql(url, `create database ${db}`);
    await psql(withDatabase(url, db), `create table items (id int primary key, label text, price numeric(8,2)); insert into items select g, 'item ' || g, g * 1.25 from generate_series(1, ${count}) g`);
  }
}

/** A query whose output changes if any row of `items` changes. */
export const ITEMS_FINGERPRINT = "select count(*), sum(price), md5(string_agg(label, ',' order by id)) from items";

/** A second RGW user (for per-writer credentials), created with radosgw-admin; idempotent. */
export function rgwUser(uid: string): { accessKeyId: string; secretAccessKey: string } {
  const cephConf = s3Env().cephConf;
  if (!cephConf) throw new Error('CEPH_CONF of the test RGW is unknown; start it with test/rgw/rgw.sh');
  const keys = { accessKeyId: `${uid}-access`, secretAccessKey: `${uid}-secret-key-0123456789` };
  const env = { ...process.env, CEPH_CONF: cephConf };
  try {
    execFileSync('radosgw-admin', ['user', 'info', `--uid=${uid}`], { env, stdio: 'ignore' });
  } catch {
    execFileSync('radosgw-admin', ['user', 'create', `--uid=${uid}`, `--display-name=${uid}`, `--access-key=${keys.accessKeyId}`, `--secret-key=${keys.secretAccessKey}`], { env, stdio: 'ignore' });
  }
  return keys;
}

export function s3ClientFor(keys: { accessKeyId: string; secretAccessKey: string }): S3Client {
  return createS3Client({ endpoint: s3Env().endpoint, region: 'us-east-1', forcePathStyle: true, ...keys });
}

/** The built CLI (npm test builds first). */
export const CLI = join(process.cwd(), 'dist/lib/cli/main.js');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI to its end, as an operator would, and collects what it printed. */
export function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The built CLI on a pseudo-terminal (script(1)), as from an operator's shell: stdout and stderr arrive mixed, as on a screen. */
export function runCliOnTerminal(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; screen: string }> {
  const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, CLI, ...args].map(quote).join(' ');
  return new Promise((resolve) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let screen = '';
    child.stdout.on('data', (c) => (screen += c));
    child.stderr.on('data', (c) => (screen += c));
    child.on('close', (code) => resolve({ code, screen }));
  });
}

/**
 * A config file for the built CLI with the test RGW as target "hub" and Redis on a closed port: restores
 * and drills must not need Redis. Each dataset is a direct-mode postgres dataset.
 */
export async function writeHubConfig(file: string, datasets: Array<{ id: string; url: string; bucket: string }>): Promise<string> {
  const lines = [
    'redis: { url: "redis://127.0.0.1:1" }',
    'targets:',
    `  hub: { kind: s3, endpoint: "${s3Env().endpoint}", accessKeyId: "\${env:TEST_S3_ACCESS_KEY}", secretAccessKey: "\${env:TEST_S3_SECRET_KEY}" }`,
    'datasets:',
    ...datasets.flatMap((d) => [`  - id: ${d.id}`, '    kind: postgres', `    source: { mode: direct, url: "${d.url}" }`, `    target: { name: hub, bucket: ${d.bucket} }`]),
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

/** The built CLI with a config from writeHubConfig and the test S3 keys in its environment. */
export function hubCli(configFile: string, args: string[]): Promise<CliRun> {
  const s3 = s3Env();
  return runCli([...args, '-c', configFile], { env: { TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'error' } });
}

/** What a raw config is refused for (ConfigError's problems), or [] when it loads. */
export function configProblems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(raw, 'test', { env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

/**
 * What `lifeboat serve` holds when Redis is down: the config pointed at a closed port, queues on a lazy
 * connection that never reaches it (its errors swallowed), and deps for the targets.
 */
export function openWithRedisDown(config: Config): { config: Config; queues: QueueSet; deps: Deps; close(): Promise<void> } {
  const down: Config = { ...config, redis: { ...config.redis, url: 'redis://127.0.0.1:1' } };
  const redis = createRedis(down, { lazyConnect: true });
  redis.on('error', () => {});
  const queues = new QueueSet(allFunctions, redis, down.redis.prefix);
  for (const q of queues.queues.values()) q.on('error', () => {});
  const deps = openLocal(down, silentLogger());
  return {
    config: down, queues, deps,
    async close() {
      await queues.close().catch(() => {});
      redis.disconnect();
      await deps.close();
    },
  };
}

/** One attempt of a function in this process, on targets opened for it and closed after; no fan-out. */
export async function runOnce(config: Config, fn: AnyFunction, data: unknown): Promise<any> {
  const deps = openLocal(config, logger());
  try {
    return await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} });
  } finally {
    await deps.close();
  }
}
