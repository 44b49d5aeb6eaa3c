import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
import { openLocal } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { replicaDataset } from '../lib/replica/view.js';
import { configProblems, createBucket, listKeys, logger, psql, removeBucket, runOnce, s3Client, s3Env, testConfig, withDatabase } from './helpers.js';

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

  it('a replica on an unknown target, or two replicas of one name, is a config error naming the field', () => {
    const raw = (replicas: unknown[]) => ({
      targets: { hub: { kind: 'dir', path: '/tmp/x' }, usb: { kind: 'dir', path: '/tmp/y' } },
      datasets: [{ id: 'shop', kind: 'postgres', source: { mode: 'direct', url: 'postgres://db/postgres' }, target: { name: 'hub', bucket: 'pgs' }, replicas }],
    });
    expect(configProblems(raw([{ target: 'nas', bucket: 'bbb' }]))).toEqual(['datasets[0].replicas[0].target: unknown target "nas" (known: hub, usb)']);
    expect(configProblems(raw([{ target: 'usb', bucket: 'aaa' }, { target: 'usb', bucket: 'bbb' }]))).toEqual(['datasets[0].replicas[1]: a second replica named "usb" (also replicas[0]); give one a name of its own']);
    expect(configProblems(raw([{ target: 'usb', bucket: 'aaa' }, { name: 'usb-b', target: 'usb', bucket: 'bbb' }]))).toEqual([]);
  });
});
