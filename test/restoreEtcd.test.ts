import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { CliError } from '../lib/cli/exit.js';
import { restoreByKind } from '../lib/cli/restore.js';
import { restoreEtcdCommand } from '../lib/cli/restoreEtcd.js';
import type { Config } from '../lib/config/schema.js';
import { openLocal } from '../lib/plumbing/app.js';
import { freePort } from '../lib/plumbing/net.js';
import { runFunction } from '../queue/runner.js';
import { startEtcd, etcdctl, zipSnapshot } from './etcd.js';
import { createBucket, logger, removeBucket, s3Client, testConfig } from './helpers.js';

// Real etcd (Debian's etcd-server) makes real snapshots with `etcdctl snapshot save`; real Ceph RGW holds them.
let etcd: ChildProcess | undefined;
let work: string;
let endpoint: string;
let client: S3Client;
let bucket: string;
const T1 = 1795651200; // 2026-11-26T00:00:00Z
const raw = `etcd-snapshot-node1-${T1}`;
const zip = `etcd-snapshot-node1-${T1 + 3600}.zip`;
const TOKEN = 'K10abc::server:secret-token-value\n';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-restore-etcd-'));
  ({ endpoint, process: etcd } = await startEtcd(join(work, 'data')));
  for (let i = 0; i < 200; i++) etcdctl('--endpoints', endpoint, 'put', `/registry/things/${i}`, `value-${i}-${'x'.repeat(200)}`);
  const source = join(work, 'source');
  await mkdir(source);
  etcdctl('--endpoints', endpoint, 'snapshot', 'save', join(source, raw));
  const inner = zip.replace(/\.zip$/, '');
  etcdctl('--endpoints', endpoint, 'snapshot', 'save', join(source, inner));
  // k3s compresses a snapshot into a zip holding one file of the same name.
  zipSnapshot(join(source, inner), inner);
  await rm(join(source, inner));
  // The snapshots are all we need from etcd.
  etcd.kill('SIGKILL');
  etcd = undefined;
  await writeFile(join(work, 'server-token'), TOKEN);
  client = s3Client();
  bucket = await createBucket(client);
}, 60_000);

afterAll(async () => {
  etcd?.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
  if (client) {
    await removeBucket(client, bucket);
    client.destroy();
  }
});

let stderr: string[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  stderr = [];
});
function captureStderr(): void {
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr.push(chunk.toString());
    return true;
  });
}

/** Etcd datasets on the hub (and one on a directory target) reading the snapshots in `dir`. */
function config(datasets: Array<{ id: string; dir: string; uploadToken?: boolean; target?: string }>): Config {
  return testConfig({
    targets: { disk: { kind: 'dir', path: join(work, 'disk') } },
    datasets: [
      ...datasets.map((d) => ({
        id: d.id, kind: 'etcd', target: { name: d.target ?? 'hub', bucket: d.target === 'disk' ? 'etcd' : bucket, prefix: `${d.id}/` },
        source: { snapshotDir: d.dir, settleSeconds: 0, uploadToken: d.uploadToken ?? false, tokenFile: join(work, 'server-token') },
      })),
      { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1:5432/postgres' }, target: { name: 'hub', bucket, prefix: 'pg/' } },
    ],
  });
}

async function upload(cfg: Config, dataset: string): Promise<void> {
  const deps = openLocal(cfg, logger());
  try {
    await runFunction(uploadEtcd, { dataset }, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} });
  } finally {
    await deps.close();
  }
}

async function failure(promise: Promise<unknown>): Promise<CliError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof CliError) return err;
    throw err;
  }
  throw new Error('expected the command to fail');
}

const original = (name: string) => readFile(join(work, 'source', name));
const scratch = (label: string) => mkdtemp(join(work, `${label}-`));

describe('restore of an etcd dataset to a directory, real snapshots on RGW', () => {
  const cfg = () => config([{ id: 'k3s', dir: join(work, 'source'), uploadToken: true }, { id: 'nas', dir: join(work, 'source'), target: 'disk' }]);
  beforeAll(async () => {
    await upload(cfg(), 'k3s');
    await upload(cfg(), 'nas');
  });

  it('writes the raw snapshot byte-identical and the token 0600, and etcdctl restores the snapshot', async () => {
    const dir = await scratch('raw');
    captureStderr();
    await restoreEtcdCommand(cfg(), logger(), { dataset: 'k3s', backup: raw, toDir: dir });
    expect((await readdir(dir)).sort()).toEqual([raw, 'token']);
    expect(sha256(await readFile(join(dir, raw)))).toBe(sha256(await original(raw)));
    expect(await readFile(join(dir, 'token'), 'utf8')).toBe(TOKEN);
    expect((await stat(join(dir, 'token'))).mode & 0o777).toBe(0o600);
    const printed = stderr.join('');
    expect(printed).toContain(`k3s server --cluster-reset --cluster-reset-restore-path=${join(dir, raw)} --token "$(cat ${join(dir, 'token')})"`);
    expect(printed).toContain('docs/runbooks/restore-etcd.md');

    // `snapshot restore` checks the sha256 trailer, unlike `snapshot status`.
    const dataDir = join(work, 'restored-data');
    etcdctl('snapshot', 'restore', join(dir, raw), '--data-dir', dataDir);
    expect((await stat(join(dataDir, 'member'))).isDirectory()).toBe(true);
  });

  it('restores `latest`, the zip, byte-identical, and prints its path for k3s', async () => {
    const dir = await scratch('zip');
    captureStderr();
    const result = await restoreEtcdCommand(cfg(), logger(), { dataset: 'k3s', backup: 'latest', toDir: dir });
    // What `restore --json` prints.
    expect(result).toEqual({
      ok: true, dataset: 'k3s', backup: zip, key: expect.stringMatching(new RegExp(`${zip}$`)), snapshot: join(dir, zip), bytes: (await original(zip)).length, sha256: sha256(await original(zip)),
      token: { state: 'written', path: join(dir, 'token') },
      commands: ['systemctl stop k3s', `k3s server --cluster-reset --cluster-reset-restore-path=${join(dir, zip)} --token "$(cat ${join(dir, 'token')})"`, 'systemctl start k3s'],
    });
    expect((await readdir(dir)).sort()).toEqual([zip, 'token']);
    expect(sha256(await readFile(join(dir, zip)))).toBe(sha256(await original(zip)));
    expect((await stat(join(dir, 'token'))).mode & 0o777).toBe(0o600);
    expect(stderr.join('')).toContain(`--cluster-reset-restore-path=${join(dir, zip)} `);
  });

  it('restores from a directory target, and says the token was not uploaded', async () => {
    const dir = await scratch('nas');
    captureStderr();
    await restoreEtcdCommand(cfg(), logger(), { dataset: 'nas', backup: raw, toDir: dir });
    expect(await readdir(dir)).toEqual([raw]);
    expect(sha256(await readFile(join(dir, raw)))).toBe(sha256(await original(raw)));
    expect(stderr.join('')).toContain('does not upload the server token');
  });

  it('refuses an existing file without --force, naming it, and overwrites it with --force', async () => {
    const dir = await scratch('exists');
    await writeFile(join(dir, raw), 'old snapshot');
    await writeFile(join(dir, 'token'), 'old token', { mode: 0o644 });
    captureStderr();
    const refused = await failure(restoreEtcdCommand(cfg(), logger(), { dataset: 'k3s', backup: raw, toDir: dir }));
    expect(refused.exitCode).toBe(1);
    expect(refused.message).toContain(`${join(dir, raw)} already exists`);
    expect(await readFile(join(dir, raw), 'utf8')).toBe('old snapshot');

    await restoreEtcdCommand(cfg(), logger(), { dataset: 'k3s', backup: raw, toDir: dir, force: true });
    expect((await readdir(dir)).sort()).toEqual([raw, 'token']);
    expect(sha256(await readFile(join(dir, raw)))).toBe(sha256(await original(raw)));
    expect(await readFile(join(dir, 'token'), 'utf8')).toBe(TOKEN);
    expect((await stat(join(dir, 'token'))).mode & 0o777).toBe(0o600);
  });

  it('refuses a snapshot with a byte flipped on the hub, naming the checks, and leaves no file', async () => {
    const flipCfg = config([{ id: 'flip', dir: join(work, 'source') }]);
    await upload(flipCfg, 'flip');
    const bytes = await original(raw);
    bytes[Math.floor(bytes.length / 2)] = bytes[Math.floor(bytes.length / 2)]! ^ 0xff;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `flip/flip/${raw}/${raw}`, Body: bytes }));
    const dir = await scratch('flip');
    captureStderr();
    const refused = await failure(restoreEtcdCommand(flipCfg, logger(), { dataset: 'flip', backup: raw, toDir: dir }));
    expect(refused.exitCode).toBe(1);
    expect(refused.message).toContain('sha256 (manifest)');
    expect(refused.message).toContain('snapshot sha256 trailer: the last 32 bytes do not match');
    expect(await readdir(dir)).toEqual([]);
  });

  it('exits 2 for a postgres dataset, a missing --to-dir, or --to on an etcd dataset', async () => {
    const dir = await scratch('usage');
    expect((await failure(restoreEtcdCommand(cfg(), logger(), { dataset: 'pg', backup: 'latest', toDir: dir }))).exitCode).toBe(2);
    expect((await failure(restoreEtcdCommand(cfg(), logger(), { dataset: 'k3s', backup: 'latest', toDir: '' }))).exitCode).toBe(2);
    expect((await failure(restoreByKind(cfg(), logger(), { dataset: 'k3s', backup: 'latest', to: 'postgres://x@h/db' }))).exitCode).toBe(2);
    expect((await failure(restoreByKind(cfg(), logger(), { dataset: 'pg', backup: 'latest', toDir: dir }))).exitCode).toBe(2);
    expect(await readdir(dir)).toEqual([]);
  });

  it('exits 3 when the target does not answer', async () => {
    const closed = await freePort();
    const dead = testConfig({
      targets: { dead: { kind: 's3', endpoint: `http://127.0.0.1:${closed}`, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
      datasets: [{ id: 'gone', kind: 'etcd', target: { name: 'dead', bucket: 'etcd' }, source: { snapshotDir: join(work, 'source') } }],
    });
    captureStderr();
    const refused = await failure(restoreEtcdCommand(dead, logger(), { dataset: 'gone', backup: 'latest', toDir: await scratch('dead'), retries: 1 }));
    expect(refused.exitCode).toBe(3);
  });
});
