import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { replicateBackup } from '../functions/replicateBackup.js';
import { verifyObject } from '../functions/verifyObject.js';
import { listBackups } from '../lib/catalog/catalog.js';
import { verifyRecordSchema } from '../lib/catalog/manifest.js';
import { restoreByKind } from '../lib/cli/restore.js';
import { backupsLsCommand } from '../lib/cli/backupsLs.js';
import { backupDetailPage } from '../lib/ui/backup.js';
import type { LoadedConfig } from '../lib/config/load.js';
import type { Config } from '../lib/config/schema.js';
import { targetEvents } from '../lib/metrics/rebuild.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { verifyArtifact } from '../lib/catalog/verify.js';
import { datasetPage } from '../lib/ui/dataset.js';
import { backupListQuery } from '../lib/api/schemas.js';
import { runFunction } from '../queue/runner.js';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { etcdctl, startEtcd } from './etcd.js';
import { createHash } from 'node:crypto';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { replicaDataset, replicasOf } from '../lib/replica/view.js';
import { closeApps, configProblems, createBucket, listKeys, logger, psql, removeBucket, runOnce, s3Client, s3Env, testConfig, withDatabase } from './helpers.js';

// Real PostgreSQL 15, real Ceph RGW (the primary bucket and a second one as the "cloud" replica), and a
// real directory as the "usb" replica.
let source: ThrowawayCluster;
let client: S3Client;
let primary: string;
let cloud: string;
let usb: string;
const DAY = 86400_000;
// Old enough to be outside retention's two-day grace.
const TICKS = [10, 9, 8].map((d) => new Date(Math.floor((Date.now() - d * DAY) / 60_000) * 60_000).toISOString());

beforeAll(async () => {
  source = await startThrowawayCluster();
  await psql(source.url, 'create database shop');
  await psql(withDatabase(source.url, 'shop'), 'create table orders (id int primary key); insert into orders select generate_series(1, 1234)');
  client = s3Client();
  primary = await createBucket(client);
  cloud = await createBucket(client);
  usb = await mkdtemp(join(tmpdir(), 'lb-usb-'));
});

const apps: App[] = [];
afterEach(async () => {
  await closeApps(apps);
});

afterAll(async () => {
  await source?.stop();
  await removeBucket(client, primary);
  await removeBucket(client, cloud);
  client.destroy();
  await rm(usb, { recursive: true, force: true });
});

/** The dataset with a dir replica and an s3 one; `cloudEndpoint` lets a test take the cloud away. */
function config(options: { cloudEndpoint?: string; usbRetention?: Record<string, number> } = {}): Config {
  return testConfig({
    targets: {
      usb: { kind: 'dir', path: usb },
      cloud: { kind: 's3', endpoint: options.cloudEndpoint ?? s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', connectTimeoutMs: 500, idleTimeoutMs: 1000 },
    },
    datasets: [
      {
        id: 'shop', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket: primary, prefix: 'pg/' },
        replicas: [
          { target: 'usb', bucket: 'lifeboat', prefix: 'copies/', ...(options.usbRetention && { retention: options.usbRetention }) },
          { name: 'offsite', target: 'cloud', bucket: cloud, prefix: 'pg/' },
        ],
      },
    ],
  });
}

const outcome = (p: Promise<unknown>) => p.then((value: any) => ({ value, error: undefined }), (error: Error) => ({ value: undefined, error }));

describe('replicateBackup: a verified second copy, on real RGW and a real directory', () => {
  it('with the cloud replica unreachable, the job fails naming it after filling the usb replica; once it is back, a catch-up run copies every verified backup it lacks', async () => {
    for (const tick of TICKS) {
      const dump = await runOnce(config(), dumpPostgres, { dataset: 'shop', tick });
      await runOnce(config(), verifyObject, { dataset: 'shop', key: dump.key });
    }
    const down = await outcome(runOnce(config({ cloudEndpoint: 'http://127.0.0.1:1' }), replicateBackup, { dataset: 'shop' }));
    expect(down.error?.message).toMatch(/^replication failed for shop → offsite: /);
    // The usb replica was filled regardless.
    const dataset = config().datasets[0]!;
    const deps = openLocal(config(), logger());
    try {
      const usbCopies = await listBackups(deps.storeFor(replicaDataset(dataset, { target: 'usb', bucket: 'lifeboat', prefix: 'copies/' })), replicaDataset(dataset, { target: 'usb', bucket: 'lifeboat', prefix: 'copies/' }));
      expect(usbCopies.map((b) => [b.status, b.verify?.trigger])).toEqual([['verified', 'replicate'], ['verified', 'replicate'], ['verified', 'replicate']]);
      expect(await listKeys(client, cloud)).toEqual([]);

      const back = await runOnce(config(), replicateBackup, {});
      const byReplica = Object.fromEntries(back.replicas.map((r: { replica: string }) => [r.replica, r]));
      expect(byReplica.usb).toMatchObject({ copied: [], present: 3, deleted: [] });
      expect(byReplica.offsite).toMatchObject({ present: 0, deleted: [] });
      expect(byReplica.offsite.copied).toHaveLength(3);
      // Artifact, manifest and the copy's own verify record; not the primary's records.
      const keys = await listKeys(client, cloud, 'pg/shop/');
      expect(keys.filter((k) => k.endsWith('/verify.json'))).toHaveLength(3);
      expect(keys.filter((k) => k.endsWith('/manifest.json'))).toHaveLength(3);
      expect(keys.filter((k) => k.endsWith('.sql.gz'))).toHaveLength(3);
      const record = verifyRecordSchema.parse(JSON.parse(Buffer.from(await (await deps.store('cloud', cloud).get(keys.find((k) => k.endsWith('verify.json'))!)).toArray().then((c) => Buffer.concat(c))).toString()));
      expect(record).toMatchObject({ ok: true, trigger: 'replicate' });

      // Nothing new: nothing copied again.
      const again = await runOnce(config(), replicateBackup, { dataset: 'shop' });
      expect(again.replicas.map((r: { copied: string[] }) => r.copied.length)).toEqual([0, 0]);

      // Metrics come back from the targets alone: the replicas' newest copy and no lag.
      const events = await targetEvents(deps, dataset);
      const replicated = events.filter((e) => e.event === 'backup.replicated').map((e) => e.payload);
      expect(replicated).toEqual([
        expect.objectContaining({ replica: 'usb', backupAt: TICKS[2], lagSeconds: 0 }),
        expect.objectContaining({ replica: 'offsite', backupAt: TICKS[2], lagSeconds: 0 }),
      ]);
    } finally {
      await deps.close();
    }
  });

  it('a dir replica that cannot be written (its path is a file) fails the job with ReplicaUnreachableError and counts it; once fixed, the next run fills it in', async () => {
    const disk = join(usb, 'usb3');
    await writeFile(disk, 'not a directory\n');
    const cfg = testConfig({
      targets: { usb3: { kind: 'dir', path: disk } },
      datasets: [{ id: 'shop', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket: primary, prefix: 'pg/' }, replicas: [{ target: 'usb3', bucket: 'bbb', prefix: '' }] }],
    });
    const deps = openLocal(cfg, logger());
    try {
      const run = () => runFunction(replicateBackup, { dataset: 'shop' }, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} });
      const down = await outcome(run());
      expect(down.error?.name).toBe('ReplicationFailedError');
      expect(down.error?.message).toMatch(/^replication failed for shop → usb3: ReplicaUnreachableError: cannot reach replica usb3 \(usb3\/bbb\) of dataset shop: .*ENOTDIR/);
      expect(await deps.metrics.samples()).toContainEqual({ name: 'lifeboat_replica_failures_total', labels: { dataset: 'shop', replica: 'usb3' }, value: 1 });

      await rm(disk);
      await mkdir(disk);
      const back = (await run()) as { replicas: Array<{ copied: string[]; pending: number }> };
      expect(back.replicas[0]!.copied).toHaveLength(3);
      expect(back.replicas[0]!.pending).toBe(0);
      expect((await readdir(join(disk, 'bbb', 'shop'))).sort()).toEqual(TICKS.map((t) => t.replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')).sort());
    } finally {
      await deps.close();
      await rm(disk, { recursive: true, force: true });
    }
  });

  it('`backups ls` says where each backup exists, and names a replica it cannot read', async () => {
    const lines = async (cfg: Config) => {
      const out: string[] = [];
      const write = process.stdout.write;
      process.stdout.write = ((chunk: string) => out.push(chunk) > 0) as unknown as typeof process.stdout.write;
      try {
        await backupsLsCommand({ config: cfg, source: 'test' } as LoadedConfig, logger(), { dataset: 'shop', json: true });
      } finally {
        process.stdout.write = write;
      }
      return out.join('').trim().split('\n').map((l) => JSON.parse(l) as { copies?: string[] });
    };
    expect((await lines(config())).map((b) => b.copies)).toEqual([['usb', 'offsite'], ['usb', 'offsite'], ['usb', 'offsite']]);
    expect((await lines(config({ cloudEndpoint: 'http://127.0.0.1:1' }))).map((b) => b.copies)[0]).toEqual(['usb', 'offsite (unreachable)']);
  });

  it("the web UI's backup page lists the replicas holding the backup", async () => {
    const cfg = config({ cloudEndpoint: 'http://127.0.0.1:1' });
    const deps = openLocal(cfg, logger());
    try {
      const [newest] = await listBackups(deps.storeFor(cfg.datasets[0]!), cfg.datasets[0]!);
      const page = await backupDetailPage(deps, { config: cfg, now: new Date(), operator: false }, cfg.datasets[0]!, newest!.id, new AbortController().signal);
      expect(page.body.text).toMatch(/<th scope="row">Copies on replicas<\/th><td>usb, offsite \(unreachable: TargetUnreachableError: cannot reach target cloud/);
    } finally {
      await deps.close();
    }
  });

  it("the web UI's dataset page has a Copies column, and names a replica it cannot read", async () => {
    const cfg = config({ cloudEndpoint: 'http://127.0.0.1:1' });
    const deps = openLocal(cfg, logger());
    try {
      const page = await datasetPage(deps, { config: cfg, now: new Date(), operator: false }, cfg.datasets[0]!, backupListQuery.parse({}), new AbortController().signal);
      expect(page.body.text).toContain('<th scope="col">Copies</th>');
      expect(page.body.text.match(/<td data-copies>usb, offsite \(unreachable\)<\/td>/g)).toHaveLength(3);
      expect(page.body.text).toMatch(/class="problem" role="alert">Replica offsite could not be read: TargetUnreachableError/);
    } finally {
      await deps.close();
    }
  });

  it("the replica's own retention deletes on the replica only, and keeps its N verified copies", async () => {
    const result = await runOnce(config({ usbRetention: { daily: 2 } }), replicateBackup, { dataset: 'shop' });
    const usbOutcome = result.replicas.find((r: { replica: string }) => r.replica === 'usb');
    const oldest = TICKS[0]!.replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
    expect(usbOutcome).toMatchObject({ deleted: [oldest], guarded: undefined });
    expect((await readdir(join(usb, 'lifeboat', 'copies', 'shop'))).sort()).toHaveLength(2);
    // The primary and the other replica keep all three.
    expect((await listKeys(client, primary, 'pg/shop/')).filter((k) => k.endsWith('manifest.json'))).toHaveLength(3);
    expect((await listKeys(client, cloud, 'pg/shop/')).filter((k) => k.endsWith('manifest.json'))).toHaveLength(3);
  });

  it('a copy that went bad on the replica is no copy: the next run copies it again and it verifies', async () => {
    const dataset = config({ usbRetention: { daily: 2 } }).datasets[0]!;
    const view = replicaDataset(dataset, replicasOf(dataset)[0]!);
    const deps = openLocal(config(), logger());
    try {
      const [newest] = await listBackups(deps.storeFor(view), view);
      // Flip one byte in the middle of the copy on the "usb disk": same size, other bytes.
      const file = join(usb, 'lifeboat', ...newest!.manifest.artifact.key.split('/'));
      const handle = await open(file, 'r+');
      const middle = Math.floor(newest!.manifest.artifact.size / 2);
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, middle);
      await handle.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, middle);
      await handle.close();
      const scope = { deps, log: logger(), signal: new AbortController().signal, emit: async () => {} };
      expect((await verifyArtifact(scope, view, newest!.manifest.artifact.key, 'manual')).ok).toBe(false);
      expect((await listBackups(deps.storeFor(view), view))[0]!.status).toBe('corrupt');
    } finally {
      await deps.close();
    }
    const result = await runOnce(config({ usbRetention: { daily: 2 } }), replicateBackup, { dataset: 'shop' });
    expect(result.replicas.find((r: { replica: string }) => r.replica === 'usb')).toMatchObject({ copied: [TICKS[2]!.replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')], present: 1, deleted: [], pending: 0 });
    const deps2 = openLocal(config(), logger());
    try {
      expect((await listBackups(deps2.storeFor(view), view)).map((b) => b.status)).toEqual(['verified', 'verified']);
    } finally {
      await deps2.close();
    }
  });

  it("the replica's retention guard: two verified copies on one day with daily 2 fill one day slot, so nothing is deleted and the guard says why", async () => {
    const day = Math.floor((Date.now() - 20 * DAY) / DAY) * DAY;
    const ticks = [day + 3600_000, day + 2 * 3600_000].map((t) => new Date(t).toISOString());
    const cfg = () => testConfig({
      targets: { usb: { kind: 'dir', path: usb } },
      datasets: [{ id: 'till', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket: primary, prefix: 'pg/' }, replicas: [{ target: 'usb', bucket: 'guard', prefix: '', retention: { daily: 2 } }] }],
    });
    for (const tick of ticks) {
      const dump = await runOnce(cfg(), dumpPostgres, { dataset: 'till', tick });
      await runOnce(cfg(), verifyObject, { dataset: 'till', key: dump.key });
    }
    const result = await runOnce(cfg(), replicateBackup, { dataset: 'till' });
    expect(result.replicas[0]).toMatchObject({ replica: 'usb', deleted: [], guarded: 'only 1 of 2 required verified backups would remain' });
    expect(result.replicas[0].copied).toHaveLength(2);
    expect(await readdir(join(usb, 'guard', 'till'))).toHaveLength(2);
  });

  it('through the real queue (Redis): a dump is verified, fanned out to replicateBackup, copied and verified on the replica, and the recorder holds the replica metrics', async () => {
    const tick = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 3600_000).toISOString();
    const cfg = testConfig({
      targets: { usb: { kind: 'dir', path: usb } },
      datasets: [{ id: 'live', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket: primary, prefix: 'live/' }, replicas: [{ name: 'usb2', target: 'usb', bucket: 'live', prefix: '' }] }],
    });
    const app = await openApp(cfg, logger());
    apps.push(app);
    await app.startWorkers();
    const job = await app.queues.enqueue('dumpPostgres', { dataset: 'live', tick });
    const dump = (await app.queues.waitFor('dumpPostgres', job.id!, 60_000)) as { key: string };
    const stamp = dump.key.split('/')[2]!;
    let samples: Awaited<ReturnType<typeof app.recorder.samples>> = [];
    for (let i = 0; i < 300 && !samples.some((s) => s.name === 'lifeboat_replica_last_success_timestamp_seconds'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      samples = await app.recorder.samples();
    }
    expect(samples).toContainEqual({ name: 'lifeboat_replica_last_success_timestamp_seconds', labels: { dataset: 'live', replica: 'usb2' }, value: Date.parse(tick) / 1000 });
    expect(samples).toContainEqual({ name: 'lifeboat_replica_lag_seconds', labels: { dataset: 'live', replica: 'usb2' }, value: 0 });
    expect(samples).toContainEqual({ name: 'lifeboat_replica_pending_backups', labels: { dataset: 'live', replica: 'usb2' }, value: 0 });
    expect((await readdir(join(usb, 'live', 'live', stamp))).sort()).toEqual(['manifest.json', 'pg_dumpall.sql.gz', 'verify.json']);
    // The copy's verification is the replica's own: it did not count as a verification of the primary's backup.
    const view = replicaDataset(cfg.datasets[0]!, { name: 'usb2', target: 'usb', bucket: 'live', prefix: '' });
    const [copy] = await listBackups(app.deps.storeFor(view), view);
    expect(copy).toMatchObject({ id: stamp, status: 'verified', verify: { trigger: 'replicate' } });
  });

  it('`restore --from offsite` restores from the replica with the primary bucket gone; an unknown replica is a usage error naming the known ones', async () => {
    const unknown = await outcome(restoreByKind(config(), logger(), { dataset: 'shop', backup: 'latest', to: 'postgres://x@127.0.0.1:1/postgres', from: 'tape' }));
    expect(unknown.error).toMatchObject({ exitCode: 2, message: '--from: dataset shop has no replica "tape" (known: usb, offsite)' });

    await removeBucket(client, primary);
    const destination = await startThrowawayCluster();
    try {
      expect(await restoreByKind(config(), logger(), { dataset: 'shop', backup: 'latest', to: destination.url, from: 'offsite' })).toBe(0);
      expect(await psql(withDatabase(destination.url, 'shop'), 'select count(*) from orders')).toBe('1234');
    } finally {
      await destination.stop();
      primary = await createBucket(client, primary);
    }
  });

  it('an etcd snapshot and the k3s server token are replicated; `restore --from` writes both with the primary target unreachable', async () => {
    const work = await mkdtemp(join(tmpdir(), 'lb-replica-etcd-'));
    const etcd = await startEtcd(join(work, 'data'));
    try {
      etcdctl('--endpoints', etcd.endpoint, 'put', '/registry/things/one', 'value-one');
      const name = `etcd-snapshot-node1-${Math.floor((Date.now() - 3600_000) / 1000)}`;
      await mkdir(join(work, 'snapshots'));
      etcdctl('--endpoints', etcd.endpoint, 'snapshot', 'save', join(work, 'snapshots', name));
      await writeFile(join(work, 'token'), 'K10abc::server:token\n');
      const cfg = (hubEndpoint = s3Env().endpoint) => testConfig({
        targets: {
          hub: { kind: 's3', endpoint: hubEndpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', connectTimeoutMs: 500 },
          usb: { kind: 'dir', path: usb },
        },
        datasets: [{
          id: 'k3s', kind: 'etcd', target: { name: 'hub', bucket: primary, prefix: 'etcd/' },
          source: { snapshotDir: join(work, 'snapshots'), settleSeconds: 0, uploadToken: true, tokenFile: join(work, 'token') },
          replicas: [{ target: 'usb', bucket: 'etcd-copies', prefix: '' }],
        }],
      });
      await runOnce(cfg(), uploadEtcd, { dataset: 'k3s' });
      await runOnce(cfg(), verifyObject, { dataset: 'k3s', backup: 'all' });
      const result = await runOnce(cfg(), replicateBackup, { dataset: 'k3s' });
      expect(result.replicas).toEqual([expect.objectContaining({ replica: 'usb', copied: [name], pending: 0 })]);

      const dir = join(work, 'restored');
      await mkdir(dir);
      const stderr = process.stderr.write;
      process.stderr.write = (() => true) as unknown as typeof process.stderr.write;
      try {
        expect(await restoreByKind(cfg('http://127.0.0.1:1'), logger(), { dataset: 'k3s', backup: 'latest', toDir: dir, from: 'usb' })).toBe(0);
      } finally {
        process.stderr.write = stderr;
      }
      const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      expect(digest(await readFile(join(dir, name)))).toBe(digest(await readFile(join(work, 'snapshots', name))));
      expect(await readFile(join(dir, 'token'), 'utf8')).toBe('K10abc::server:token\n');
      expect((await stat(join(dir, 'token'))).mode & 0o777).toBe(0o600);
    } finally {
      etcd.process.kill('SIGKILL');
      await rm(work, { recursive: true, force: true });
    }
  });

  it('a replica on an unknown target, or two replicas of one name, is a config error naming the field', () => {
    const raw = (replicas: unknown[]) => ({
      targets: { hub: { kind: 'dir', path: '/tmp/x' }, usb: { kind: 'dir', path: '/tmp/y' } },
      datasets: [{ id: 'shop', kind: 'postgres', source: { mode: 'direct', url: 'postgres://db/postgres' }, target: { name: 'hub', bucket: 'pgs' }, replicas }],
    });
    expect(configProblems(raw([{ target: 'nas', bucket: 'bbb' }]))).toEqual(['datasets[0].replicas[0].target: unknown target "nas" (known: hub, usb)']);
    expect(configProblems(raw([{ target: 'usb', bucket: 'aaa' }, { target: 'usb', bucket: 'bbb' }]))).toEqual(['datasets[0].replicas[1]: a second replica named "usb" (also replicas[0]); give one a name of its own']);
    expect(configProblems(raw([{ target: 'usb', bucket: 'aaa' }, { name: 'usb-b', target: 'usb', bucket: 'bbb' }]))).toEqual([]);
    expect(configProblems(raw([{ target: 'hub', bucket: 'pgs', prefix: 'copy/' }]))).toEqual([
      'datasets[0].replicas[0]: prefix "copy/" in target hub bucket pgs overlaps the dataset\'s own (prefix ""); a replica needs another target, bucket or a prefix apart from the primary\'s',
    ]);
    expect(configProblems(raw([{ target: 'hub', bucket: 'other' }]))).toEqual([]);
  });
});
