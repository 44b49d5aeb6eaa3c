import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { verifyObject } from '../functions/verifyObject.js';
import { openLocal } from '../lib/plumbing/app.js';
import { ConfigError } from '../lib/config/load.js';
import type { Config, EtcdDataset } from '../lib/config/schema.js';
import { freePort } from '../lib/plumbing/net.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { startFakeKubeApi } from './fakes/kubeApi.js';
import { createBucket, listKeys, logger, removeBucket, s3Client, testConfig } from './helpers.js';

// Real etcd (Debian's etcd-server) makes real snapshots with `etcdctl snapshot save`; real Ceph RGW holds them.
let etcd: ChildProcess;
let work: string;
let endpoint: string;
let client: S3Client;
let bucket: string;
const T1 = 1795651200; // 2026-11-26T00:00:00Z
const names = { raw: `etcd-snapshot-node1-${T1}`, onDemand: `on-demand-node1-${T1 + 3600}`, zip: `etcd-snapshot-node1-${T1 + 7200}` };

const etcdctl = (...args: string[]) => execFileSync('etcdctl', ['--endpoints', endpoint, ...args], { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] }).toString();

async function snapshotDir(label: string): Promise<string> {
  const dir = join(work, label);
  await mkdir(dir, { recursive: true });
  return dir;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-etcd-'));
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  endpoint = `http://127.0.0.1:${clientPort}`;
  etcd = spawn('etcd', ['--data-dir', join(work, 'data'), '--name', 'node1', '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-cluster', `node1=http://127.0.0.1:${peerPort}`], { stdio: 'ignore' });
  for (let i = 0; ; i++) {
    try {
      etcdctl('endpoint', 'health');
      break;
    } catch {
      if (i > 100) throw new Error('etcd did not start');
      await sleep(100);
    }
  }
  for (let i = 0; i < 200; i++) etcdctl('put', `/registry/things/${i}`, `value-${i}-${'x'.repeat(200)}`);
  const source = await snapshotDir('source');
  etcdctl('snapshot', 'save', join(source, names.raw));
  etcdctl('put', '/registry/things/extra', 'more');
  etcdctl('snapshot', 'save', join(source, names.onDemand));
  etcdctl('snapshot', 'save', join(source, names.zip));
  // k3s compresses a snapshot into a zip holding one file of the same name.
  execFileSync('python3', ['-c', `import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]+'.zip','w',zipfile.ZIP_DEFLATED); z.write(sys.argv[1], arcname=sys.argv[2]); z.close()`, join(source, names.zip), names.zip]);
  await rm(join(source, names.zip));
  client = s3Client();
  bucket = await createBucket(client);
});

afterAll(async () => {
  etcd?.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
  await removeBucket(client, bucket);
  client.destroy();
});

function etcdConfig(id: string, source: Record<string, unknown>): Config {
  return testConfig({ datasets: [{ id, kind: 'etcd', source, target: { name: 'hub', bucket } }] });
}

/** Tests write their snapshots just before running, so they do not wait out the settle time unless a test is about it. */
function config(id: string, dir: string, source: Record<string, unknown> = {}): Config {
  return etcdConfig(id, { snapshotDir: dir, settleSeconds: 0, ...source });
}

/** The first half of the real compressed snapshot: what k3s leaves at the final .zip path mid-compression. */
async function truncatedZip(): Promise<{ full: Buffer; half: Buffer }> {
  const full = await readFile(join(work, 'source', `${names.zip}.zip`));
  return { full, half: full.subarray(0, Math.floor(full.length / 2)) };
}

async function run(cfg: Config, fn: AnyFunction, data: Record<string, unknown>, clock?: () => Date) {
  const deps = openLocal(cfg, logger(), { clock });
  const events: Array<{ event: string; payload: any }> = [];
  try {
    const value = await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async (event, payload) => { events.push({ event, payload }); } });
    return { ok: true as const, value: value as any, events };
  } catch (error) {
    return { ok: false as const, error: error as Error, events };
  } finally {
    await deps.close();
  }
}

describe('uploadEtcd with real etcd snapshots and RGW', () => {
  it('uploads every snapshot with a manifest, verifyObject re-checks the hub copies, and a re-run uploads nothing', async () => {
    const cfg = config('k3s', join(work, 'source'));
    const first = await run(cfg, uploadEtcd, { dataset: 'k3s' });
    expect(first.ok ? first.value : first.error).toMatchObject({ uploaded: [names.raw, names.onDemand, `${names.zip}.zip`], skipped: [], corrupt: [] });
    expect((await listKeys(client, bucket, 'k3s/')).sort()).toEqual([
      `k3s/${names.raw}/${names.raw}`, `k3s/${names.raw}/manifest.json`,
      `k3s/${names.zip}.zip/${names.zip}.zip`, `k3s/${names.zip}.zip/manifest.json`,
      `k3s/${names.onDemand}/manifest.json`, `k3s/${names.onDemand}/${names.onDemand}`,
    ].sort());
    const uploaded = first.events.filter((e) => e.event === 'backup.uploaded');
    expect(uploaded[0]!.payload).toMatchObject({ dataset: 'k3s', kind: 'etcd', takenAt: '2026-11-26T00:00:00.000Z' });
    for (const { payload } of uploaded) {
      const verified = await run(cfg, verifyObject, { dataset: 'k3s', key: payload.key });
      expect(verified.ok, verified.ok ? '' : verified.error.message).toBe(true);
      const names_ = verified.value.checks.map((c: { name: string }) => c.name);
      expect(names_.some((n: string) => n.startsWith('snapshot sha256 trailer'))).toBe(true);
      if (payload.key.endsWith('.zip')) expect(names_).toContain(`zip crc32 ${names.zip}`);
    }
    const again = await run(cfg, uploadEtcd, { dataset: 'k3s' });
    expect(again.value).toMatchObject({ uploaded: [], skipped: [names.raw, names.onDemand, `${names.zip}.zip`] });
  });

  it('refuses a byte-flipped snapshot, names it, counts it, and still uploads the good ones', async () => {
    const dir = await snapshotDir('flipped');
    const bad = `etcd-snapshot-node1-${T1 + 10}`;
    await copyFile(join(work, 'source', names.raw), join(dir, names.raw));
    const bytes = await readFile(join(work, 'source', names.raw));
    bytes[Math.floor(bytes.length / 2)] = bytes[Math.floor(bytes.length / 2)]! ^ 0xff;
    await writeFile(join(dir, bad), bytes);
    const outcome = await run(config('flipped', dir), uploadEtcd, { dataset: 'flipped' });
    expect(outcome.ok).toBe(false);
    expect(!outcome.ok && outcome.error).toMatchObject({ name: 'PermanentError', message: expect.stringContaining(`${join(dir, bad)} (snapshot sha256 trailer: the last 32 bytes do not match the sha256 of the rest)`) });
    expect(outcome.events.map((e) => e.event)).toEqual(['backup.uploaded', 'backup.corrupt']);
    expect(await listKeys(client, bucket, `flipped/${bad}/`)).toEqual([]);
    expect(await listKeys(client, bucket, `flipped/${names.raw}/`)).toHaveLength(2);
  });

  it('refuses a zip whose content does not match its CRC', async () => {
    const dir = await snapshotDir('badzip');
    const zip = await readFile(join(work, 'source', `${names.zip}.zip`));
    zip[200] = zip[200]! ^ 0x01; // inside the deflated data
    await writeFile(join(dir, `${names.zip}.zip`), zip);
    const outcome = await run(config('badzip', dir), uploadEtcd, { dataset: 'badzip' });
    expect(!outcome.ok && outcome.error.message).toMatch(/corrupt snapshot\(s\) not uploaded: .*\.zip \((zip|zip crc32|zip entry)/);
    expect(await listKeys(client, bucket, 'badzip/')).toEqual([]);
  });

  it('uploads the server token to its own prefix, once', async () => {
    const dir = await snapshotDir('token');
    const tokenFile = join(work, 'server-token');
    await writeFile(tokenFile, 'K10abc::server:secret-token-value\n');
    const cfg = config('tok', dir, { uploadToken: true, tokenFile });
    expect((await run(cfg, uploadEtcd, { dataset: 'tok' })).value).toMatchObject({ token: 'uploaded' });
    expect(await listKeys(client, bucket, 'token/')).toEqual(['token/tok/server-token']);
    expect((await run(cfg, uploadEtcd, { dataset: 'tok' })).value).toMatchObject({ token: 'unchanged' });
  });

  it('reports snapshots k3s lists (ETCDSnapshotFile, fake API server) that are on neither the node nor the hub', async () => {
    const kube = await startFakeKubeApi();
    try {
      const file = (name: string, location: string) => ({ metadata: { name: `local-${name}` }, spec: { snapshotName: name, nodeName: 'node1', location } });
      kube.addClusterCustomObjects('k3s.cattle.io', 'v1', 'etcdsnapshotfiles', 'ETCDSnapshotFile', [
        file(names.raw, `file:///var/lib/rancher/k3s/server/db/snapshots/${names.raw}`),
        file('etcd-snapshot-node1-1700000000', 'file:///var/lib/rancher/k3s/server/db/snapshots/etcd-snapshot-node1-1700000000'),
        file('etcd-snapshot-node1-1700003600', 's3://k3s-bucket/etcd-snapshot-node1-1700003600'),
      ]);
      const outcome = await run(config('listed', join(work, 'source'), { listSnapshotFiles: true, kubeconfig: kube.kubeconfigPath }), uploadEtcd, { dataset: 'listed' });
      expect(outcome.ok ? outcome.value.missing : outcome.error).toEqual(['etcd-snapshot-node1-1700000000']);
    } finally {
      await kube.close();
    }
  });
});

describe('uploadEtcd settle time (k3s compresses straight into the final .zip path)', () => {
  const file = `${names.zip}.zip`;

  it('a zip still being written is pending, not corrupt', async () => {
    const dir = await snapshotDir('writing');
    const { full, half } = await truncatedZip();
    await writeFile(join(dir, file), half);
    const cfg = etcdConfig('writing', { snapshotDir: dir });
    const first = await run(cfg, uploadEtcd, { dataset: 'writing' });
    expect(first.ok, first.ok ? '' : first.error.message).toBe(true);
    expect(first.value).toMatchObject({ uploaded: [], skipped: [], pending: [file], corrupt: [] });
    expect(first.events).toEqual([]);
    expect(await listKeys(client, bucket, 'writing/')).toEqual([]);

    await writeFile(join(dir, file), full); // k3s finishes compressing
    const afterSettle = () => new Date(Date.now() + 121_000);
    const second = await run(cfg, uploadEtcd, { dataset: 'writing' }, afterSettle);
    expect(second.ok ? second.value : second.error).toMatchObject({ uploaded: [file], pending: [], corrupt: [] });
    expect((await listKeys(client, bucket, 'writing/')).sort()).toEqual([`writing/${file}/${file}`, `writing/${file}/manifest.json`]);
    const verified = await run(cfg, verifyObject, { dataset: 'writing', key: `writing/${file}/${file}` });
    expect(verified.ok, verified.ok ? '' : verified.error.message).toBe(true);
    expect(verified.value.checks.map((c: { name: string }) => c.name)).toContain(`zip crc32 ${names.zip}`);
  });

  it('a stable truncated zip is still corrupt', async () => {
    const dir = await snapshotDir('stable');
    await writeFile(join(dir, file), (await truncatedZip()).half);
    const anHourAgo = new Date(Date.now() - 3600_000);
    await utimes(join(dir, file), anHourAgo, anHourAgo);
    const outcome = await run(etcdConfig('stable', { snapshotDir: dir }), uploadEtcd, { dataset: 'stable' });
    expect(!outcome.ok && outcome.error).toMatchObject({ name: 'PermanentError', message: expect.stringContaining(`${join(dir, file)} (zip: not a readable zip`) });
    expect(outcome.events.map((e) => e.event)).toEqual(['backup.corrupt']);
    expect(outcome.events[0]!.payload).toMatchObject({ dataset: 'stable', key: join(dir, file) });
    expect(await listKeys(client, bucket, 'stable/')).toEqual([]);
  });

  it('a zip that grows between listing and inspection is pending, not corrupt', async () => {
    const dir = await snapshotDir('growing');
    const { half } = await truncatedZip();
    await writeFile(join(dir, file), half.subarray(0, Math.floor(half.length / 2)));
    const anHourAgo = new Date(Date.now() - 3600_000);
    await utimes(join(dir, file), anHourAgo, anHourAgo);
    // uploadEtcd first reads the clock after listing, before inspecting: k3s writes more right then.
    let resumed = false;
    const clock = () => {
      if (!resumed) writeFileSync(join(dir, file), half);
      resumed = true;
      return new Date();
    };
    const outcome = await run(etcdConfig('growing', { snapshotDir: dir }), uploadEtcd, { dataset: 'growing' }, clock);
    expect(outcome.ok ? outcome.value : outcome.error).toMatchObject({ uploaded: [], pending: [file], corrupt: [] });
    expect(outcome.events).toEqual([]);
    expect(await listKeys(client, bucket, 'growing/')).toEqual([]);
  });

  it('source.settleSeconds defaults to 120 and rejects -1', () => {
    const dataset = etcdConfig('defaults', { snapshotDir: '/snapshots' }).datasets[0] as EtcdDataset;
    expect(dataset.source.settleSeconds).toBe(120);
    let problems: string[] = [];
    try {
      etcdConfig('negative', { snapshotDir: '/snapshots', settleSeconds: -1 });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems = err.problems;
    }
    expect(problems).toEqual([expect.stringMatching(/^datasets\[0\]\.source\.settleSeconds: /)]);
  });
});
