/**
 * dumpPostgres throughput and memory against the limits it cannot beat and against the peer, all in one
 * run, on the same database and the same RGW, every row a whole process under GNU time (wall, CPU-seconds
 * of it and its children, peak RSS of the largest process):
 *   pg_dumpall > /dev/null                                       (the source's speed)
 *   rclone rcat of the same bytes from a local file, tuned        (the target's speed)
 *   Lifeboat's upload of that file                                (the same, through the target store)
 *   pg_dumpall | rclone rcat, defaults and tuned                  (the peer: --s3-upload-concurrency 8 --s3-chunk-size 16M)
 *   lifeboat dumpPostgres, uncompressed                           (us; its in-worker time beside it)
 * The peer pair and Lifeboat alternate over --rounds; then, with the database doubled, Lifeboat's peak
 * RSS again.
 *
 *   npm run build && node dist/bench/dump.js [--gib 1] [--rounds 3] [--no-double]
 */
import { execFileSync } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { findServerBinaries, startThrowawayCluster } from '../lib/postgres/cluster.js';
import { createS3Client } from '../lib/targets/s3.js';
import { fmt, measureProcess, measureShell, medianUsage, printTable, ratioColumns, rcloneEnv, startBenchRgw, usageColumns, type Usage } from './common.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, rounds: { type: 'string', default: '3' }, double: { type: 'boolean', default: true }, 'no-double': { type: 'boolean' } } });
const gib = Number(values.gib);
// pgbench rows are ~100 bytes of dump text: scale 1 ≈ 10 MB of pg_dumpall output.
const scale = Math.ceil(gib * 110);

/** Node flags the shipped entry points use (see lib/cli/main.ts's shebang). */
const NODE_FLAGS = ['--max-semi-space-size=2'];
const TUNED_RCAT = '--s3-upload-concurrency 8 --s3-chunk-size 16M';

interface LifeboatRun extends Usage {
  workerSeconds: number;
  size: number;
}

async function lifeboat(endpoint: string, bucket: string, source: string, mode: 'none' | 'file', env: NodeJS.ProcessEnv): Promise<LifeboatRun> {
  const run = await measureProcess([process.execPath, ...NODE_FLAGS, join(import.meta.dirname, 'dump-child.js'), endpoint, bucket, source, mode], { env });
  const child = JSON.parse(run.stdout) as { seconds: number; size: number };
  return { ...run, workerSeconds: child.seconds, size: child.size };
}

const rgw = await startBenchRgw();
const cluster = await startThrowawayCluster();
const file = join(tmpdir(), `lifeboat-bench-${process.pid}.sql`);
try {
  const bin = await findServerBinaries({ major: 15 });
  const env = { ...process.env, BENCH_S3_KEY: rgw.accessKeyId, BENCH_S3_SECRET: rgw.secretAccessKey };
  const s3 = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  s3.destroy();
  const rclone = `env -u AWS_CA_BUNDLE rclone --config /dev/null`;
  const renv = rcloneEnv(rgw, { hub: { key: rgw.accessKeyId, secret: rgw.secretAccessKey } });
  const dumpall = `pg_dumpall --dbname '${cluster.url}'`;

  console.error(`generating pgbench scale ${scale} (~${gib} GiB of dump) …`);
  execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtG', cluster.url], { stdio: ['ignore', 'ignore', 'inherit'] });

  const devnull = await measureShell(`${dumpall} > /dev/null`);
  await measureShell(`${dumpall} > ${file}`);
  const bytes = (await stat(file)).size;
  const rawUpload = await measureShell(`${rclone} rcat ${TUNED_RCAT} hub:bench/raw.sql < ${file}`, { env: renv });
  const ourUpload = await lifeboat(rgw.endpoint, 'bench', file, 'file', env);
  await rm(file);

  const runs = { defaults: [] as Usage[], tuned: [] as Usage[], ours: [] as LifeboatRun[] };
  for (let round = 1; round <= Number(values.rounds); round += 1) {
    console.error(`round ${round} …`);
    const steps = [
      async () => runs.defaults.push(await measureShell(`${dumpall} | ${rclone} rcat hub:bench/peer.sql`, { env: renv })),
      async () => runs.tuned.push(await measureShell(`${dumpall} | ${rclone} rcat ${TUNED_RCAT} hub:bench/peer-tuned.sql`, { env: renv })),
      async () => runs.ours.push(await lifeboat(rgw.endpoint, 'bench', cluster.url, 'none', env)),
    ];
    for (const step of round % 2 ? steps : steps.reverse()) await step();
  }
  const defaults = medianUsage(runs.defaults);
  const tuned = medianUsage(runs.tuned);
  const ours = medianUsage(runs.ours);
  const worker = medianUsage(runs.ours.map((r) => ({ seconds: r.workerSeconds, cpuSeconds: 0, maxRssMiB: 0 }))).seconds;
  const oursMaxRss = Math.max(...runs.ours.map((r) => r.maxRssMiB));

  const mib = bytes / 1024 / 1024;
  const limit = Math.max(devnull.seconds, rawUpload.seconds);
  console.log(`\ndumpPostgres benchmark: ${fmt(mib / 1024)} GiB pg_dumpall output, RGW (bluestore) on loopback, medians of ${values.rounds} rounds, ${new Date().toISOString()}`);
  printTable([
    ['run', 'wall s', 'CPU s', 'peak RSS MiB', 'in-worker s', 'MiB/s', 'wall / tuned', 'CPU / tuned'],
    ['pg_dumpall > /dev/null', ...usageColumns(devnull), '', fmt(mib / devnull.seconds, 0), '', ''],
    ['rclone rcat of the file, tuned', ...usageColumns(rawUpload), '', fmt(mib / rawUpload.seconds, 0), '', ''],
    ['lifeboat upload of the file', ...usageColumns(ourUpload), fmt(ourUpload.workerSeconds), fmt(mib / ourUpload.seconds, 0), '', ''],
    ['pg_dumpall | rclone rcat, defaults', ...usageColumns(defaults), '', fmt(mib / defaults.seconds, 0), ...ratioColumns(defaults, tuned)],
    ['pg_dumpall | rclone rcat, tuned', ...usageColumns(tuned), '', fmt(mib / tuned.seconds, 0), '1.00', '1.00'],
    ['lifeboat dumpPostgres', ...usageColumns(ours), fmt(worker), fmt(mib / ours.seconds, 0), ...ratioColumns(ours, tuned)],
  ]);
  console.log(`\nlifeboat / tuned pipe: ${fmt(ours.seconds / tuned.seconds)} wall (target <= 0.80), / defaults: ${fmt(ours.seconds / defaults.seconds)}; / slower limit (${devnull.seconds > rawUpload.seconds ? '/dev/null' : 'raw upload'}): ${fmt(ours.seconds / limit)}`);
  console.log(`lifeboat peak RSS: ${fmt(oursMaxRss, 0)} MiB at ${fmt(mib / 1024)} GiB (highest of the rounds; target <= 150 MiB)`);

  if (values.double && !values['no-double']) {
    console.error(`doubling the database …`);
    execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale * 2), '-I', 'dtG', cluster.url], { stdio: ['ignore', 'ignore', 'inherit'] });
    const twice = await lifeboat(rgw.endpoint, 'bench', cluster.url, 'none', env);
    console.log(`lifeboat peak RSS: ${fmt(twice.maxRssMiB, 0)} MiB at ${fmt(twice.size / 1024 ** 3)} GiB (target: <= 150 MiB, no higher than at 1x); ${fmt(twice.seconds)} s wall`);
  }
} finally {
  await rm(file, { force: true });
  await cluster.stop();
  rgw.stop();
}
