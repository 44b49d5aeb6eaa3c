/**
 * What age encryption costs a dump, in one run on the same database and RGW: dumpPostgres with and
 * without encryption, gzip and uncompressed, alternating so drift on a shared machine hits both.
 * Each attempt is its own process (bench/dump-child.js), so peak RSS is that attempt's alone.
 *
 *   npm run build && node dist/bench/encryption.js [--gib 1] [--rounds 3]
 */
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { findServerBinaries, startThrowawayCluster } from '../lib/postgres/cluster.js';
import { createS3Client } from '../lib/targets/s3.js';
import { fmt, printTable, startBenchRgw } from './common.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, rounds: { type: 'string', default: '3' } } });
const gib = Number(values.gib);
const rounds = Number(values.rounds);
const scale = Math.ceil(gib * 110); // pgbench scale 1 ≈ 10 MB of pg_dumpall text

interface Attempt { seconds: number; maxRssMiB: number; cpuSeconds: number; size: number }

function dump(endpoint: string, source: string, mode: 'none' | 'gzip', env: NodeJS.ProcessEnv): Promise<Attempt> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--max-semi-space-size=2', join(import.meta.dirname, 'dump-child.js'), endpoint, 'bench', source, mode], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`dump-child exited ${code}`))));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const rgw = await startBenchRgw();
const cluster = await startThrowawayCluster();
try {
  const bin = await findServerBinaries({ major: 15 });
  const s3 = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  s3.destroy();
  console.error(`generating pgbench scale ${scale} (~${gib} GiB of dump) …`);
  execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtG', cluster.url], { stdio: ['ignore', 'ignore', 'inherit'] });
  const recipient = await identityToRecipient(await generateX25519Identity());
  const base = { ...process.env, BENCH_S3_KEY: rgw.accessKeyId, BENCH_S3_SECRET: rgw.secretAccessKey };
  const variants = [
    { name: 'gzip', mode: 'gzip' as const, env: base },
    { name: 'gzip + age', mode: 'gzip' as const, env: { ...base, BENCH_AGE_RECIPIENT: recipient } },
    { name: 'uncompressed', mode: 'none' as const, env: base },
    { name: 'uncompressed + age', mode: 'none' as const, env: { ...base, BENCH_AGE_RECIPIENT: recipient } },
  ];
  const results = new Map(variants.map((v) => [v.name, [] as Attempt[]]));
  for (let round = 0; round < rounds; round++) {
    // Alternate the order each round, so neither side always runs on a warmer cache.
    for (const v of round % 2 ? [...variants].reverse() : variants) {
      console.error(`round ${round + 1}: ${v.name} …`);
      results.get(v.name)!.push(await dump(rgw.endpoint, cluster.url, v.mode, v.env));
    }
  }
  const row = (name: string) => {
    const a = results.get(name)!;
    return { seconds: median(a.map((x) => x.seconds)), cpu: median(a.map((x) => x.cpuSeconds)), rss: Math.max(...a.map((x) => x.maxRssMiB)), size: a[0]!.size };
  };
  console.log(`\nage encryption cost: pgbench scale ${scale}, ${rounds} rounds, medians (peak RSS: the highest), RGW on loopback, ${new Date().toISOString()}`);
  printTable([
    ['dumpPostgres', 'wall s', 'CPU s', 'peak RSS MiB', 'stored MiB', 'wall vs plain', 'CPU vs plain'],
    ...variants.map((v) => {
      const r = row(v.name);
      const plain = row(v.mode === 'gzip' ? 'gzip' : 'uncompressed');
      return [v.name, fmt(r.seconds), fmt(r.cpu), fmt(r.rss, 0), fmt(r.size / 1024 ** 2, 0), fmt(r.seconds / plain.seconds), fmt(r.cpu / plain.cpu)];
    }),
  ]);
} finally {
  await cluster.stop();
  rgw.stop();
}
