/**
 * Runs the restore runbooks as written: every ```sh runbook block of docs/runbooks/*.md, with bash, with
 * the placeholders of its "Set these first" section set to real services: PostgreSQL 15 (throwaway
 * clusters), Ceph RGW, and snapshots of a real etcd. `lifeboat` is the built CLI, through a wrapper on
 * PATH. Each case then checks what arrived, not what was printed.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectsCommand, GetObjectCommand, HeadBucketCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { loadConfig } from '../lib/config/load.js';
import type { Config } from '../lib/config/schema.js';
import { openLocal } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { etcdctl, startEtcd } from './etcd.js';
import { CLI, createBucket, ITEMS_FINGERPRINT, logger, psql, removeBucket, s3Client, s3Env, seedDatabases, testEnv, withDatabase } from './helpers.js';

const RUNBOOKS = join(process.cwd(), 'docs/runbooks');
const RUNBOOK_FILES = ['restore-postgres.md', 'restore-bucket.md', 'restore-etcd.md', 'restore-velero.md', 'full-cluster-loss.md'];
/** Variables every shell has; a runbook need not document them. */
const AMBIENT = new Set(['PATH', 'HOME', 'PWD']);

interface Block {
  file: string;
  /** The `## ` heading the block is under. */
  section: string;
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
}

/** The ```sh runbook blocks of a runbook, in order, each with its section. */
function runbookBlocks(file: string, text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.split('\n');
  let section = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('## ')) section = line.slice(3).trim();
    const fence = /^(`{3,})(.*)$/.exec(line);
    if (!fence) continue;
    const end = lines.findIndex((l, j) => j > i && l.startsWith(fence[1]!));
    if (end < 0) throw new Error(`${file}:${i + 1}: unclosed code block`);
    if (fence[2]!.trim().split(/\s+/).join(' ') === 'sh runbook') blocks.push({ file, section, line: i + 1, code: lines.slice(i + 1, end).join('\n') });
    i = end;
  }
  return blocks;
}

/** The text of one `## ` section. */
function sectionText(text: string, heading: string): string {
  const start = text.indexOf(`\n## ${heading}\n`);
  if (start < 0) return '';
  const next = text.indexOf('\n## ', start + 1);
  return text.slice(start, next < 0 ? undefined : next);
}

/** Variables a block reads but does not set itself. */
function placeholders(code: string): string[] {
  const assigned = new Set([...code.matchAll(/(?:^|[\s;(])([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
  const used = [...code.matchAll(/\$\{?([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!);
  return [...new Set(used)].filter((v) => !assigned.has(v) && !AMBIENT.has(v));
}

async function readRunbook(name: string) {
  const text = await readFile(join(RUNBOOKS, name), 'utf8');
  return { text, blocks: runbookBlocks(name, text) };
}

let work: string;
let bin: string;

/** Runs one block with bash (-e, -u, pipefail, -x for a trace); resolves to its output, rejects naming the block. */
function runBlock(block: Block, vars: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const s3 = s3Env();
    const env = { ...process.env, ...vars, PATH: `${bin}:${process.env.PATH}`, TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, LOG_LEVEL: 'error' };
    const child = spawn('bash', ['-euxo', 'pipefail', '-c', block.code], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(output);
      else reject(new Error(`${block.file}:${block.line} (section "${block.section}") exited ${code}\n--- block\n${block.code}\n--- output (with bash -x trace)\n${output}`));
    });
  });
}

/**
 * Runs the runbook blocks of `file` whose section matches `sections`, in order, with `vars`. Every
 * placeholder those blocks read must be set by the test, so a new one in the runbook fails here first.
 */
async function runRunbook(file: string, sections: RegExp, vars: Record<string, string>): Promise<string> {
  const { blocks } = await readRunbook(file);
  const chosen = blocks.filter((b) => sections.test(b.section));
  expect(chosen.length, `${file}: runbook blocks in sections matching ${sections}`).toBeGreaterThan(0);
  const missing = [...new Set(chosen.flatMap((b) => placeholders(b.code)))].filter((v) => vars[v] === undefined);
  expect(missing, `${file} uses placeholders the test does not set`).toEqual([]);
  let output = '';
  for (const block of chosen) output += await runBlock(block, vars);
  return output;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

async function getObject(client: S3Client, bucket: string, key: string): Promise<{ body: Buffer; contentType?: string }> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return { body: Buffer.from(await r.Body!.transformToByteArray()), contentType: r.ContentType };
}

async function allKeys(client: S3Client, bucket: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    keys.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.NextContinuationToken;
  } while (token);
  return keys.sort();
}

const bucketExists = (client: S3Client, bucket: string) => client.send(new HeadBucketCommand({ Bucket: bucket })).then(() => true, () => false);

/** What the source buckets hold: nested keys, a space, several content types, one object of 1 MiB of random bytes. */
const OBJECTS: Record<string, { body: Buffer; contentType: string }> = {
  'index.html': { body: Buffer.from('<h1>photos</h1>\n'), contentType: 'text/html' },
  'albums/2026/a.txt': { body: Buffer.from('first\n'), contentType: 'text/plain' },
  'albums/2026/b c.txt': { body: Buffer.from('second, with a space in the key\n'), contentType: 'text/plain' },
  'albums/2025/big.bin': { body: randomBytes(1 << 20), contentType: 'application/octet-stream' },
  'meta/config.json': { body: Buffer.from('{"ok":true}\n'), contentType: 'application/json' },
};

async function fillBucket(client: S3Client, bucket: string): Promise<void> {
  for (const [key, o] of Object.entries(OBJECTS)) await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: o.body, ContentType: o.contentType }));
}

/** The destination holds exactly OBJECTS (under `prefix`), byte for byte, with their content types. */
async function expectObjects(client: S3Client, bucket: string, prefix = ''): Promise<void> {
  expect(await allKeys(client, bucket)).toEqual(Object.keys(OBJECTS).map((k) => prefix + k).sort());
  for (const [key, o] of Object.entries(OBJECTS)) {
    const got = await getObject(client, bucket, prefix + key);
    expect(sha256(got.body), key).toBe(sha256(o.body));
    expect(got.contentType, key).toBe(o.contentType);
  }
}

// The shared setup: one config for every runbook, as an operator's restore machine would have.
let client: S3Client;
let hubBucket: string;
let photosBucket: string;
let lostBucket: string;
let source: ThrowawayCluster;
let configFile: string;
let config: Config;
const extraBuckets: string[] = [];
const clusters: ThrowawayCluster[] = [];
const PG_BACKUP = '20261121T020000Z';
const SNAPSHOT = 'etcd-snapshot-node1-1795651200';
const TOKEN = 'K10runbook::server:secret-token-value\n';

async function once(fn: AnyFunction, data: Record<string, unknown>): Promise<unknown> {
  const deps = openLocal(config, logger());
  try {
    return await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} });
  } finally {
    await deps.close();
  }
}

async function freshCluster(): Promise<ThrowawayCluster> {
  const cluster = await startThrowawayCluster();
  clusters.push(cluster);
  return cluster;
}

const userDatabases = (url: string) => psql(url, 'select datname from pg_database where not datistemplate order by datname');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-runbooks-'));
  bin = join(work, 'bin');
  await mkdir(bin);
  await writeFile(join(bin, 'lifeboat'), `#!/bin/sh\nexec '${process.execPath}' --max-semi-space-size=2 '${CLI}' "$@"\n`);
  await chmod(join(bin, 'lifeboat'), 0o755);

  client = s3Client();
  [hubBucket, photosBucket, lostBucket] = [await createBucket(client), await createBucket(client), await createBucket(client)];
  await fillBucket(client, photosBucket);
  await fillBucket(client, lostBucket);

  source = await startThrowawayCluster();
  await seedDatabases(source.url, { alpha: 300, beta: 200 });

  // Real etcd, real snapshot; k3s names it etcd-snapshot-<node>-<unix time>.
  const snapshots = join(work, 'snapshots');
  await mkdir(snapshots);
  const etcd = await startEtcd(join(work, 'etcd-data'));
  try {
    for (let i = 0; i < 100; i++) etcdctl('--endpoints', etcd.endpoint, 'put', `/registry/things/${i}`, `value-${i}`);
    etcdctl('--endpoints', etcd.endpoint, 'snapshot', 'save', join(snapshots, SNAPSHOT));
  } finally {
    etcd.process.kill('SIGKILL');
  }
  await writeFile(join(work, 'server-token'), TOKEN);

  const s3 = s3Env();
  const s3Target = (name: string) => `  ${name}: { kind: s3, endpoint: "${s3.endpoint}", accessKeyId: "\${env:TEST_S3_ACCESS_KEY}", secretAccessKey: "\${env:TEST_S3_SECRET_KEY}" }`;
  const bucketDataset = (id: string, bucket: string) => [
    `  - id: ${id}`,
    '    kind: bucket',
    `    source: { endpoint: "${s3.endpoint}", bucket: ${bucket}, accessKeyId: "\${env:TEST_S3_ACCESS_KEY}", secretAccessKey: "\${env:TEST_S3_SECRET_KEY}" }`,
    `    target: { name: hub, bucket: ${hubBucket}, prefix: ${id}/ }`,
  ];
  configFile = join(work, 'lifeboat.yaml');
  await writeFile(configFile, [
    'redis: { url: "redis://127.0.0.1:1" }   # restores need no Redis',
    'targets:',
    s3Target('hub'),
    s3Target('rgw'),
    'datasets:',
    '  - id: cluster-postgres',
    '    kind: postgres',
    `    source: { mode: direct, url: "${source.url}" }`,
    `    target: { name: hub, bucket: ${hubBucket}, prefix: pg/ }`,
    ...bucketDataset('rgw-photos', photosBucket),
    ...bucketDataset('rgw-lost', lostBucket),
    '  - id: k3s-etcd',
    '    kind: etcd',
    `    source: { snapshotDir: "${snapshots}", settleSeconds: 0, uploadToken: true, tokenFile: "${join(work, 'server-token')}" }`,
    `    target: { name: hub, bucket: ${hubBucket}, prefix: etcd/ }`,
    '',
  ].join('\n'));
  ({ config } = await loadConfig({ file: configFile, env: testEnv() }));

  await once(dumpPostgres, { dataset: 'cluster-postgres', tick: '2026-11-21T02:00:00Z' });
  await once(mirrorBucket, { dataset: 'rgw-photos', tick: '2026-11-21T04:00:00Z' });
  await once(mirrorBucket, { dataset: 'rgw-lost', tick: '2026-11-21T04:00:00Z' });
  await once(uploadEtcd, { dataset: 'k3s-etcd' });
}, 120_000);

afterAll(async () => {
  await Promise.all(clusters.splice(0).map((c) => c.stop().catch(() => {})));
  await source?.stop().catch(() => {});
  if (client) {
    for (const b of [hubBucket, photosBucket, lostBucket, ...extraBuckets]) if (b) await removeBucket(client, b).catch(() => {});
    client.destroy();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the runbooks are runnable as written', () => {
  it.each(RUNBOOK_FILES)('%s documents every placeholder its runbook blocks use under "Set these first"', async (name) => {
    const { text, blocks } = await readRunbook(name);
    const setFirst = sectionText(text, 'Set these first');
    expect(setFirst, `${name} has a "## Set these first" section`).not.toBe('');
    for (const v of new Set(blocks.flatMap((b) => placeholders(b.code)))) expect(setFirst, `${name}: $${v} is used by a runbook block`).toContain(`\`${v}\``);
    // Only Velero's runbook has nothing a test can run (no cluster, no Velero here).
    if (name === 'restore-velero.md') expect(blocks).toEqual([]);
    else expect(blocks.length).toBeGreaterThan(0);
  });
});

describe('restore-postgres.md, on a pg_dumpall backup on RGW', () => {
  const vars = (to: ThrowawayCluster, extra: Record<string, string> = {}) => ({
    LIFEBOAT_CONFIG: configFile, DATASET: 'cluster-postgres', BACKUP: PG_BACKUP, PGURL: to.url, PGPASSWORD: 'unused-with-trust-auth', ...extra,
  });

  it('the whole server: pick, verify, drill, restore; every database arrives with the same rows', async () => {
    const fresh = await freshCluster();
    const out = await runRunbook('restore-postgres.md', /^(1\. Pick|2\. Drill|3\. Restore the whole)/, vars(fresh));
    expect(out).toMatch(new RegExp(`${PG_BACKUP}\\s+\\S+.*verified`));
    expect(out).toContain(`drill of cluster-postgres backup ${PG_BACKUP}: passed`);
    expect(out).toContain('sha256 matches the manifest');
    expect(await userDatabases(fresh.url)).toBe('alpha\nbeta\npostgres');
    for (const db of ['alpha', 'beta']) expect(await psql(withDatabase(fresh.url, db), ITEMS_FINGERPRINT), db).toBe(await psql(withDatabase(source.url, db), ITEMS_FINGERPRINT));
  });

  it('one database under a new name: --list, --dry-run, then --database --as; only that one arrives', async () => {
    const fresh = await freshCluster();
    const out = await runRunbook('restore-postgres.md', /^(1\. Pick|4\. Restore one database)/, vars(fresh, { DATABASE: 'beta', NEWNAME: 'beta_restored' }));
    expect(out).toMatch(/^beta\s+1\s+\d+$/m);
    expect(out).toContain('dry run: nothing was changed');
    expect(out).toContain('restored database "beta" as "beta_restored"');
    expect(await userDatabases(fresh.url)).toBe('beta_restored\npostgres');
    expect(await psql(withDatabase(fresh.url, 'beta_restored'), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, 'beta'), ITEMS_FINGERPRINT));
  });
});

describe('restore-bucket.md, on a mirror on RGW', () => {
  it('into a new bucket on a configured target: every object arrives with the same bytes and content type', async () => {
    const bucket = `lb-restored-${randomUUID().slice(0, 13)}`;
    extraBuckets.push(bucket);
    const out = await runRunbook('restore-bucket.md', /^(2\. Check what the hub holds|3\. Restore into a new bucket)/, { LIFEBOAT_CONFIG: configFile, DATASET: 'rgw-photos', BACKUP: 'latest', TARGET: 'rgw', BUCKET: bucket });
    expect(out).toContain('rgw-photos');
    expect(await bucketExists(client, bucket)).toBe(true);
    await expectObjects(client, bucket);
  });

  it('the weekly drill: a sample restored into a scratch prefix, compared with the source, and removed', async () => {
    const out = await runRunbook('restore-bucket.md', /weekly drill/, { LIFEBOAT_CONFIG: configFile, DATASET: 'rgw-photos' });
    expect(out).toMatch(/drill of rgw-photos backup \S+: passed/);
    expect(out).toMatch(/^sha256\s+ok\s+\d+ restored objects match the source/m);
    const left = (await allKeys(client, hubBucket)).filter((k) => k.startsWith('_lifeboat/drill-scratch/'));
    expect(left).toEqual([]);
  });
});

describe('restore-etcd.md, on a real etcd snapshot on RGW', () => {
  it('to a directory: the snapshot byte-identical, the token 0600, and etcd itself reads it', async () => {
    const dir = join(work, 'k3s-restore');
    const out = await runRunbook('restore-etcd.md', /^(1\. Pick|2\. Let etcd read)/, { LIFEBOAT_CONFIG: configFile, DATASET: 'k3s-etcd', BACKUP: 'latest', DIR: dir });
    expect((await readdir(dir)).sort()).toEqual([SNAPSHOT, 'token']);
    expect(sha256(await readFile(join(dir, SNAPSHOT)))).toBe(sha256(await readFile(join(work, 'snapshots', SNAPSHOT))));
    expect(await readFile(join(dir, 'token'), 'utf8')).toBe(TOKEN);
    expect((await stat(join(dir, 'token'))).mode & 0o777).toBe(0o600);
    expect(out).toContain(`k3s server --cluster-reset --cluster-reset-restore-path=${join(dir, SNAPSHOT)} --token "$(cat ${join(dir, 'token')})"`);
    expect(out).toContain(`etcd restored ${join(dir, SNAPSHOT)}`);
    const status = JSON.parse(etcdctl('snapshot', 'status', join(dir, SNAPSHOT), '-w', 'json')) as { totalKey: number };
    expect(status.totalKey).toBeGreaterThanOrEqual(100);
  });

  it('the weekly drill: etcd restores the newest snapshot into a temp dir', async () => {
    const out = await runRunbook('restore-etcd.md', /weekly drill/, { LIFEBOAT_CONFIG: configFile, DATASET: 'k3s-etcd' });
    expect(out).toContain(`drill of k3s-etcd backup ${SNAPSHOT}: passed`);
    expect(out).toMatch(/^snapshot restore\s+ok\s+etcd(ctl|utl) snapshot restore exited 0/m);
  });
});

describe('full-cluster-loss.md', () => {
  it('checks the hub, drills and restores Postgres into the new server', async () => {
    const fresh = await freshCluster();
    const out = await runRunbook('full-cluster-loss.md', /^(0\. Check the hub|2\. Postgres)/, {
      LIFEBOAT_CONFIG: configFile, PG_DATASET: 'cluster-postgres', BUCKET_DATASET: 'rgw-photos', PGURL: fresh.url, PGPASSWORD: 'unused-with-trust-auth',
    });
    expect(out).toContain('drill of cluster-postgres');
    expect(await userDatabases(fresh.url)).toBe('alpha\nbeta\npostgres');
    for (const db of ['alpha', 'beta']) expect(await psql(withDatabase(fresh.url, db), ITEMS_FINGERPRINT), db).toBe(await psql(withDatabase(source.url, db), ITEMS_FINGERPRINT));
  });

  it('brings an emptied source bucket back from the hub (--to-source)', async () => {
    const keys = await allKeys(client, lostBucket);
    await client.send(new DeleteObjectsCommand({ Bucket: lostBucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
    expect(await allKeys(client, lostBucket)).toEqual([]);
    await runRunbook('full-cluster-loss.md', /^3\. RGW buckets/, { LIFEBOAT_CONFIG: configFile, BUCKET_DATASET: 'rgw-lost' });
    await expectObjects(client, lostBucket);
  });
});

// The extractor itself, on a made-up runbook: a failing block names itself and shows its output.
describe('the runbook runner', () => {
  it('fails with the block, its place and its output', async () => {
    const text = ['# x', '## Set these first', '`X`', '## 1. Step', '```sh runbook', 'echo "hello $X"', 'false', '```', '```sh', 'not run', '```'].join('\n');
    const blocks = runbookBlocks('x.md', text);
    expect(blocks).toEqual([{ file: 'x.md', section: '1. Step', line: 5, code: 'echo "hello $X"\nfalse' }]);
    expect(placeholders(blocks[0]!.code)).toEqual(['X']);
    await expect(runBlock(blocks[0]!, { X: 'world' })).rejects.toThrow(/x\.md:5 \(section "1\. Step"\) exited 1[\s\S]*echo "hello \$X"[\s\S]*hello world/);
  });
});
