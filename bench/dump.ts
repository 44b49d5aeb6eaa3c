/**
 * dumpPostgres throughput and memory against the limits it cannot beat and against the peer, all in one
 * run, on the same database and the same RGW:
 *   pg_dumpall > /dev/null                                  (the source's speed)
 *   rclone rcat of the same bytes from a local file, 16M×4  (the target's speed)
 *   pg_dumpall | rclone rcat, rclone defaults               (the peer)
 *   lifeboat dumpPostgres, uncompressed                     (us)
 * then, with the database doubled, Lifeboat's peak RSS again.
 *
 *   npm run build && node dist/bench/dump.js [--gib 1] [--no-double]
 */
import { execFileSync, spawn } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { findServerBinaries, startThrowawayCluster } from '../lib/postgres/cluster.js';
import { createS3Client } from '../lib/targets/s3.js';
import { fmt, printTable, rcloneEnv, startBenchRgw, timeShell } from './common.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, double: { type: 'boolean', default: true }, 'no-double': { type: 'boolean' } } });
const gib = Number(values.gib);
// pgbench rows are ~100 bytes of dump text: scale 1 ≈ 10 MB of pg_dumpall output.
const scale = Math.ceil(gib * 110);

/** Node flags the shipped entry points use (see lib/cli/main.ts's shebang). */
const NODE_FLAGS = ['--max-semi-space-size=2'];

function lifeboat(endpoint: string, bucket: string, source: string, mode: 'none' | 'file', env: NodeJS.ProcessEnv): Promise<{ seconds: number; maxRssMiB: number; cpuSeconds: number; size: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...NODE_FLAGS, join(import.meta.dirname, 'dump-child.js'), endpoint, bucket, source, mode], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`dump-child exited ${code}`))));
  });
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

  const devnull = await timeShell(`${dumpall} > /dev/null`);
  await timeShell(`${dumpall} > ${file}`);
  const bytes = (await stat(file)).size;
  const rawUpload = await timeShell(`${rclone} rcat --s3-chunk-size 16M --s3-upload-concurrency 4 hub:bench/raw.sql < ${file}`, { env: renv });
  const ourUpload = await lifeboat(rgw.endpoint, 'bench', file, 'file', env);
  await rm(file);
  const peer = await timeShell(`${dumpall} | ${rclone} rcat hub:bench/peer.sql`, { env: renv });
  const ours = await lifeboat(rgw.endpoint, 'bench', cluster.url, 'none', env);

  const limit = Math.max(devnull, rawUpload);
  const mib = bytes / 1024 / 1024;
  console.log(`\ndumpPostgres benchmark: ${fmt(mib / 1024)} GiB pg_dumpall output, RGW (bluestore) on loopback, ${new Date().toISOString()}`);
  printTable([
    ['run', 'seconds', 'MiB/s'],
    ['pg_dumpall > /dev/null', fmt(devnull), fmt(mib / devnull, 0)],
    ['rclone rcat file (16M x 4)', fmt(rawUpload), fmt(mib / rawUpload, 0)],
    ['lifeboat upload of the file', fmt(ourUpload.seconds), fmt(mib / ourUpload.seconds, 0)],
    ['pg_dumpall | rclone rcat', fmt(peer), fmt(mib / peer, 0)],
    ['lifeboat dumpPostgres', fmt(ours.seconds), fmt(mib / ours.seconds, 0)],
  ]);
  console.log(`\nlifeboat / slower limit (${devnull > rawUpload ? '/dev/null' : 'raw upload'}): ${fmt(ours.seconds / limit)}   (target <= 1.10)`);
  console.log(`lifeboat / rclone pipe:  ${fmt(ours.seconds / peer)}   (target <= 0.70)`);
  console.log(`lifeboat peak RSS:       ${fmt(ours.maxRssMiB, 0)} MiB at ${fmt(mib / 1024)} GiB   (target <= 150 MB = 143 MiB); CPU ${fmt(ours.cpuSeconds)} s`);
  console.log(`(diagnostic) lifeboat upload / rclone upload of the same file: ${fmt(ourUpload.seconds / rawUpload)}`);

  if (values.double && !values['no-double']) {
    console.error(`doubling the database …`);
    execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale * 2), '-I', 'dtG', cluster.url], { stdio: ['ignore', 'ignore', 'inherit'] });
    const twice = await lifeboat(rgw.endpoint, 'bench', cluster.url, 'none', env);
    console.log(`lifeboat peak RSS:       ${fmt(twice.maxRssMiB, 0)} MiB at ${fmt(twice.size / 1024 ** 3)} GiB   (target: no higher than at 1x)`);
  }
} finally {
  await rm(file, { force: true });
  await cluster.stop();
  rgw.stop();
}
