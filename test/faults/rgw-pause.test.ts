import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allFunctions } from '../../functions/index.js';
import { listBackups } from '../../lib/catalog/catalog.js';
import type { Config } from '../../lib/config/schema.js';
import { createDeps } from '../../lib/plumbing/deps.js';
import { MemoryMetricsRecorder } from '../../lib/metrics/recorder.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../../lib/postgres/cluster.js';
import { createS3Client } from '../../lib/targets/s3.js';
import { runInline, type AttemptFailure } from '../../queue/inline.js';
import { createBucket, logger, multipartUploads, psql, testConfig } from '../helpers.js';
import { startRgw, type RgwInstance } from '../rgw/launch.js';

// A private Ceph RGW (never the suite's shared one) is frozen with SIGSTOP for 30 s while a dump and a
// mirror are both in flight. Each request times out (idleTimeoutMs), the attempt fails retryably, and a
// later attempt after SIGCONT finishes: no hang, no silent success, and the metrics say it finished.
const PAUSE_MS = 30_000;
let rgw: RgwInstance;
let rgwPid: number;
let source: ThrowawayCluster;
let work: string;
let cfg: Config;

beforeAll(async () => {
  rgw = await startRgw();
  rgwPid = rgw.radosgwPid;
  source = await startThrowawayCluster();
  await psql(source.url, "create table filler as select g as id, md5(g::text) as pad from generate_series(1, 200000) g");
  work = await mkdtemp(join(tmpdir(), 'lb-pause-'));
  const wrapper = join(work, 'slow-pg_dumpall');
  // Holds the dump open after its first 6 MiB, so the upload is mid-way when RGW freezes.
  await writeFile(wrapper, '#!/bin/bash\n[ "$1" = --version ] && exec pg_dumpall --version\nset -o pipefail\npg_dumpall "$@" | { dd bs=1M count=6 iflag=fullblock 2>/dev/null; sleep 8; cat; }\n');
  await chmod(wrapper, 0o755);
  const admin = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  const [hub, photos] = [await createBucket(admin), await createBucket(admin)];
  admin.destroy();
  process.env.PAUSE_S3_KEY = rgw.accessKeyId;
  process.env.PAUSE_S3_SECRET = rgw.secretAccessKey;
  const keys = { accessKeyId: '${env:PAUSE_S3_KEY}', secretAccessKey: '${env:PAUSE_S3_SECRET}' };
  cfg = testConfig({
    targets: { hub: { kind: 's3', endpoint: rgw.endpoint, ...keys, partSizeMiB: 5, idleTimeoutMs: 3000, connectTimeoutMs: 3000 } },
    datasets: [
      { id: 'db', kind: 'postgres', source: { mode: 'direct', url: source.url, pgDumpall: wrapper }, target: { name: 'hub', bucket: hub, prefix: 'pg/' }, compression: 'none' },
      { id: 'photos', kind: 'bucket', source: { endpoint: rgw.endpoint, bucket: photos, ...keys, idleTimeoutMs: 3000, connectTimeoutMs: 3000 }, target: { name: 'hub', bucket: hub, prefix: 'rgw/' }, mirror: { concurrency: 1, sample: 5 } },
    ],
  });
  const deps = createDeps({ config: cfg, logger: logger(), metrics: new MemoryMetricsRecorder() });
  const src = deps.bucketSource(cfg.datasets[1] as Extract<Config['datasets'][number], { kind: 'bucket' }>);
  for (let i = 0; i < 400; i++) await src.put(`img/${String(i).padStart(4, '0')}.jpg`, Readable.from([Buffer.alloc(128 * 1024, i)]));
  await deps.close();
}, 120_000);

afterAll(async () => {
  if (rgwPid) process.kill(rgwPid, 'SIGCONT');
  rgw?.stop();
  await source?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('RGW frozen for 30 s mid-dump and mid-mirror (a private real RGW)', () => {
  it('both are retried after timeouts and finish once RGW runs again; the metrics record the success', async () => {
    const deps = createDeps({ config: cfg, logger: logger(), metrics: new MemoryMetricsRecorder() });
    const failures: AttemptFailure[] = [];
    const retries = { attempts: 20, backoffMs: 2000 };
    const run = (fn: string, dataset: string) => runInline(allFunctions, fn, { dataset, tick: '2026-11-26T02:00:00Z' }, deps, { retries, onAttemptFailed: (f) => failures.push(f) });
    const hub = deps.storeFor(cfg.datasets[0]!);
    try {
      const settled = new Set<string>();
      const dump = run('dumpPostgres', 'db').finally(() => settled.add('dumpPostgres'));
      const admin = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
      for (const deadline = Date.now() + 30_000; !(await multipartUploads(admin, hub.bucket)).length; await sleep(25)) {
        if (Date.now() > deadline) throw new Error('the dump never started its upload');
      }
      const mirror = run('mirrorBucket', 'photos').finally(() => settled.add('mirrorBucket'));
      for (const deadline = Date.now() + 30_000; ; await sleep(25)) {
        let copied = 0;
        for await (const _ of hub.list('rgw/img/')) copied += 1;
        if (copied > 0) break;
        if (Date.now() > deadline) throw new Error('the mirror never started copying');
      }
      admin.destroy();

      const frozenAt = Date.now();
      process.kill(rgwPid, 'SIGSTOP');
      // Both must still be in flight, or this test proves nothing about them.
      expect([...settled], 'finished before RGW froze').toEqual([]);
      await sleep(PAUSE_MS);
      process.kill(rgwPid, 'SIGCONT');
      const [dumped, mirrored] = await Promise.all([dump, mirror]);
      const finishedMs = Date.now() - frozenAt;

      // Each root job failed at least once on a timeout that names the target, then succeeded.
      for (const [fn, results] of [['dumpPostgres', dumped], ['mirrorBucket', mirrored]] as const) {
        expect(results[0], fn).toMatchObject({ fn, ok: true });
        expect(results[0]!.attempts, fn).toBeGreaterThan(1);
        // Named: the request that stalled names its target, endpoint, bucket and key (a mirror's, whichever side it went to).
        const named = fn === 'dumpPostgres'
          ? /timed out after 3 s without data from target hub \(http/
          : /timed out after 3 s without data from target (hub|source of photos) \(http[^)]*\), bucket \S+ \((GetObject|PutObject|ListObjectsV2) /;
        expect(failures.filter((f) => f.what.includes(fn)).map((f) => String(f.error)), fn).toContainEqual(expect.stringMatching(named));
        expect(results.filter((r) => r.fn === 'verifyObject').every((r) => r.ok), `${fn} verification`).toBe(true);
      }
      const samples = await deps.metrics.samples();
      for (const dataset of ['db', 'photos']) {
        expect(samples.find((s) => s.name === 'lifeboat_backup_last_success_timestamp_seconds' && s.labels.dataset === dataset)?.value, dataset).toBeGreaterThan(0);
        expect(samples.find((s) => s.name === 'lifeboat_verify_last_success_timestamp_seconds' && s.labels.dataset === dataset)?.value, dataset).toBeGreaterThan(0);
      }
      expect(samples.filter((s) => s.name === 'lifeboat_job_failures_total' && s.value > 0)).toEqual([]);
      expect((await listBackups(hub, cfg.datasets[0]!)).map((e) => e.status)).toEqual(['verified']);
      console.log(`RGW frozen ${PAUSE_MS / 1000} s mid-dump and mid-mirror: both finished ${((finishedMs - PAUSE_MS) / 1000).toFixed(1)} s after SIGCONT, after ${failures.length} failed attempts`);
    } finally {
      await deps.close();
    }
  }, 180_000);
});
