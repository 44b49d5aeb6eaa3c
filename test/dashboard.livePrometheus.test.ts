import { replicateBackup } from '../functions/replicateBackup.js';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { pruneCheck } from '../functions/pruneCheck.js';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { verifyObject } from '../functions/verifyObject.js';
import type { Config } from '../lib/config/schema.js';
import { samplesFromTargets } from '../lib/metrics/rebuild.js';
import { openApp, type App } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { buildServer } from '../lib/server.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { syncSchedulers } from '../triggers/cron.js';
import { etcdctl, startEtcd } from './etcd.js';
import { closeApps, createBucket, logger, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, seedDatabases, testConfig } from './helpers.js';
import { getJson, startPrometheus, type LivePrometheus, withoutGrafanaVariables } from './livePrometheus.js';

// Every query of the shipped Grafana dashboard against a real Prometheus scraping `lifeboat serve`, after
// real work through the serve's own recorder (Redis): a dump of a throwaway PostgreSQL, a mirror between
// two RGW users, an etcd snapshot upload, their verifications, a passing and (after bit rot on the hub) a
// failing etcd drill, and pruneCheck. Each query must answer, with the labels its panel shows.

const DASHBOARD = join(fileURLToPath(new URL('..', import.meta.url)), 'deploy/grafana/dashboards/lifeboat.json');
const MIRRORED = [1000, 1001, 1002, 1003, 1004];

interface Target {
  refId: string;
  expr: string;
  legendFormat?: string;
}
interface Panel {
  type: string;
  title: string;
  targets?: Target[];
  panels?: Panel[];
}
interface Series {
  metric: Record<string, string>;
  value: [number, string];
}

let pg: ThrowawayCluster;
let etcd: ChildProcess | undefined;
let work: string;
let hub: S3Client;
let source: S3Client;
const hubBuckets: string[] = [];
let sourceBucket: string;
let config: Config;
const apps: App[] = [];
let app: App;
let http: FastifyInstance;
let prometheus: LivePrometheus | undefined;

/** One final attempt in this process, through the serve's recorder and fan-out, as a worker would run it. */
async function run(fn: AnyFunction, data: Record<string, unknown>): Promise<any> {
  return runFunction(fn, data, { jobId: `${fn.name}-${Date.now()}`, attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps: app.deps, emit: app.emit });
}

/** What a query's series must carry: none for a stat that falls back to `or vector(0)`, else what it groups by. */
function expectedLabels(expr: string): string[] {
  if (/\bor vector\(0\)\s*$/.test(expr)) return [];
  const by = /\bby \(([^)]*)\)/.exec(expr);
  if (!by) throw new Error(`no "by (...)" in ${expr}: say which labels the panel shows`);
  return by[1]!.split(',').map((l) => l.trim()).sort();
}

const legendLabels = (legend = '') => [...legend.matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!);

async function query(expr: string): Promise<Series[]> {
  const answer = await getJson<{ status: string; data: { result: Series[] } }>(`${prometheus!.base}/api/v1/query?query=${encodeURIComponent(expr)}`);
  if (answer.status !== 'success') throw new Error(`${expr}: ${JSON.stringify(answer)}`);
  return answer.data.result;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-dashboard-'));
  const [cluster, started] = await Promise.all([startThrowawayCluster(), startEtcd(join(work, 'etcd'))]);
  pg = cluster;
  etcd = started.process;
  await seedDatabases(pg.url, { shop: 100 });
  for (let i = 0; i < 20; i++) etcdctl('--endpoints', started.endpoint, 'put', `/registry/things/${i}`, `value-${i}`);
  const snapshots = join(work, 'snapshots');
  await mkdir(snapshots);
  etcdctl('--endpoints', started.endpoint, 'snapshot', 'save', join(snapshots, `etcd-snapshot-node1-${Math.floor(Date.now() / 1000)}`));

  hub = s3Client();
  const sourceKeys = rgwUser('lifeboat-dashboard-source');
  source = s3ClientFor(sourceKeys);
  for (let i = 0; i < 3; i++) hubBuckets.push(await createBucket(hub));
  sourceBucket = await createBucket(source);
  for (const [i, size] of MIRRORED.entries()) await source.send(new PutObjectCommand({ Bucket: sourceBucket, Key: `img/${i}.jpg`, Body: Buffer.alloc(size, i) }));
  process.env.TEST_DASHBOARD_MIRROR_KEY = sourceKeys.accessKeyId;
  process.env.TEST_DASHBOARD_MIRROR_SECRET = sourceKeys.secretAccessKey;
  const s3 = s3Env();
  const [dumps, snapshotBucket, mirrors] = hubBuckets as [string, string, string];
  config = testConfig({
    redisPrefix: `lbtest-dashboard-${Date.now()}`,
    targets: { hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', partSizeMiB: 5, queueSize: 2, capacityBytes: 1024 ** 3 }, usb: { kind: 'dir', path: join(work, 'usb') } },
    datasets: [
      { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: pg.url }, target: { name: 'hub', bucket: dumps }, replicas: [{ target: 'usb', bucket: 'lifeboat' }] },
      { id: 'k3s', kind: 'etcd', source: { snapshotDir: snapshots, settleSeconds: 0 }, target: { name: 'hub', bucket: snapshotBucket } },
      {
        id: 'photos', kind: 'bucket',
        source: { endpoint: s3.endpoint, bucket: sourceBucket, accessKeyId: '${env:TEST_DASHBOARD_MIRROR_KEY}', secretAccessKey: '${env:TEST_DASHBOARD_MIRROR_SECRET}' },
        target: { name: 'hub', bucket: mirrors, prefix: 'rgw/' },
      },
    ],
  });

  // lifeboat serve, in process, on a real port; its job schedulers as `serve` keeps them.
  app = await openApp(config, logger());
  apps.push(app);
  http = await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: app.deps });
  await http.listen({ host: '127.0.0.1', port: 0 });
  await syncSchedulers(app.functions, config, app.queues, logger());

  const dump = await run(dumpPostgres, { dataset: 'pg' });
  await run(verifyObject, { dataset: 'pg', key: dump.key });
  await run(replicateBackup, { dataset: 'pg' });
  const mirrored = await run(mirrorBucket, { dataset: 'photos' });
  await run(verifyObject, { dataset: 'photos', key: mirrored.key });
  const [snapshot] = (await run(uploadEtcd, { dataset: 'k3s' })).uploaded as string[];
  const snapshotKey = `k3s/${snapshot}/${snapshot}`;
  await run(verifyObject, { dataset: 'k3s', key: snapshotKey });
  await run(drillRestore, { dataset: 'k3s' });

  // Bit rot on the hub, same size: the next verification and drill of the snapshot fail.
  const stored = Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: snapshotBucket, Key: snapshotKey }))).Body!.transformToByteArray());
  const middle = Math.floor(stored.length / 2);
  stored[middle] = stored[middle]! ^ 0xff;
  await hub.send(new PutObjectCommand({ Bucket: snapshotBucket, Key: snapshotKey, Body: stored }));
  await expect(run(verifyObject, { dataset: 'k3s', key: snapshotKey })).rejects.toThrow();
  await expect(run(drillRestore, { dataset: 'k3s' })).rejects.toThrow(/drill of k3s/);

  // A capacity sample from five days ago, so pruneCheck has growth to forecast from.
  await app.deps.storeFor(config.datasets[0]!).putJson('_lifeboat/capacity/hub.json', { target: 'hub', samples: [{ at: new Date(Date.now() - 5 * 86400_000).toISOString(), usedBytes: 10 }] });
  await run(pruneCheck, {});

  prometheus = await startPrometheus((http.server.address() as AddressInfo).port);
}, 120_000);

afterAll(async () => {
  await prometheus?.stop();
  await http?.close();
  await closeApps(apps);
  await pg?.stop();
  etcd?.kill('SIGKILL');
  for (const bucket of hubBuckets) await removeBucket(hub, bucket);
  if (sourceBucket) await removeBucket(source, sourceBucket);
  hub?.destroy();
  source?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the Grafana dashboard on a live Prometheus', () => {
  it('every panel query returns series with the labels its panel shows', async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[] };
    const queries = dashboard.panels
      .flatMap((p) => [p, ...(p.panels ?? [])])
      .flatMap((panel) => (panel.targets ?? []).map((t) => ({ where: `${panel.title} ${t.refId}`, expr: withoutGrafanaVariables(t.expr), legend: t.legendFormat })));
    expect(queries.length).toBeGreaterThan(20);

    // increase() needs two scrapes: wait until every query answers (scrapes are 1 s apart).
    const results = new Map<string, Series[]>();
    for (const deadline = Date.now() + 20_000; ; await sleep(500)) {
      for (const q of queries) results.set(q.where, await query(q.expr));
      if ([...results.values()].every((r) => r.length > 0) || Date.now() > deadline) break;
    }

    const problems: string[] = [];
    for (const { where, expr, legend } of queries) {
      const series = results.get(where)!;
      const wanted = expectedLabels(expr);
      if (series.length === 0) problems.push(`${where}: no series for ${expr}`);
      if (wanted.length === 0 && series.length !== 1) problems.push(`${where}: ${series.length} series, not the one value of a stat`);
      for (const label of legendLabels(legend)) if (!wanted.includes(label)) problems.push(`${where}: the legend shows ${label}, which ${expr} does not group by`);
      for (const s of series) {
        const labels = Object.keys(s.metric).sort();
        if (labels.join() !== wanted.join()) problems.push(`${where}: labels ${labels.join(', ') || 'none'}, expected ${wanted.join(', ') || 'none'}`);
        for (const label of wanted) if (!s.metric[label]) problems.push(`${where}: empty ${label} in ${JSON.stringify(s.metric)}`);
        if (Number.isNaN(Number(s.value[1]))) problems.push(`${where}: value ${s.value[1]}`);
      }
    }
    expect(problems).toEqual([]);

    const byDataset = (where: string) => Object.fromEntries(results.get(where)!.map((s) => [s.metric.dataset, Number(s.value[1])]));
    expect(Object.keys(byDataset('Freshness per dataset A')).sort()).toEqual(['k3s', 'pg', 'photos']);
    // pruneCheck ran last: a mirror's size is still the bytes it mirrored, not its report's.
    const mirroredBytes = MIRRORED.reduce((a, b) => a + b, 0);
    expect(byDataset('Backup size A').photos).toBe(mirroredBytes);
    // So is the rebuild from the targets (what /metrics serves while Redis is down).
    expect((await samplesFromTargets(app.deps)).find((s) => s.name === 'lifeboat_backup_size_bytes' && s.labels.dataset === 'photos')?.value).toBe(mirroredBytes);
    expect(byDataset('Last failure per dataset and function A')).toEqual({ k3s: expect.any(Number) });
    expect(results.get('Last failure per dataset and function A')!.map((s) => s.metric.fn).sort()).toEqual(['drillRestore', 'verifyObject']);
    expect(results.get('Failed verifications A')![0]!.value[1]).toBe('1');
    expect(results.get('Failed drills A')![0]!.value[1]).toBe('1');

    // Queued jobs are the fan-out's waiting verifications; the schedulers' next runs are `scheduled`, not delayed.
    const depth = (state: string) => results.get('Queue depth A')!.filter((s) => s.metric.state === state).reduce((a, s) => a + Number(s.value[1]), 0);
    let schedulers = 0;
    for (const queue of app.queues.queues.values()) schedulers += await queue.getJobSchedulersCount();
    expect(schedulers).toBeGreaterThan(0);
    expect(depth('scheduled')).toBe(schedulers);
    expect(depth('delayed')).toBe(0);
    expect(depth('waiting')).toBeGreaterThan(0);
    expect(Number(results.get('Queued jobs A')![0]!.value[1])).toBe(depth('waiting') + depth('prioritized'));
  }, 60_000);
});
