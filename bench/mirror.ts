/**
 * mirrorBucket against `rclone sync` on the same RGW, in one run. rclone gets two remotes with different
 * users, so it streams through itself as Lifeboat must, instead of copying server-side.
 *   1. a mixed corpus (3,000 objects of 4-256 KiB plus 2 x 64 MiB): full mirror, then a no-change re-run
 *   2. Lifeboat's peak RSS mirroring 10k and 100k small objects in one flat prefix
 *
 *   npm run build && node dist/bench/mirror.js [--small 3000] [--flat 10000,100000]
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../lib/targets/s3.js';
import { fmt, printTable, rcloneEnv, startBenchRgw, timeShell } from './common.js';

const { values } = parseArgs({ options: { small: { type: 'string', default: '3000' }, flat: { type: 'string', default: '10000,100000' } } });
const MiB = 1024 * 1024;
const NODE_FLAGS = ['--max-semi-space-size=2'];

const rgw = await startBenchRgw();
try {
  const cephEnv = { ...process.env, CEPH_CONF: rgw.cephConf };
  const users = { src: { key: 'bench-src-access', secret: 'bench-src-secret-0123456789' }, dst: { key: 'bench-dst-access', secret: 'bench-dst-secret-0123456789' } };
  for (const [uid, u] of Object.entries(users)) execFileSync('radosgw-admin', ['user', 'create', `--uid=bench-${uid}`, `--display-name=${uid}`, `--access-key=${u.key}`, `--secret-key=${u.secret}`], { env: cephEnv, stdio: 'ignore' });
  const client = (u: { key: string; secret: string }) => createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: u.key, secretAccessKey: u.secret });
  const src = client(users.src);
  const dst = client(users.dst);
  const bucket = async (c: S3Client, name: string) => c.send(new CreateBucketCommand({ Bucket: name })).then(() => name);

  async function fill(name: string, objects: Array<{ key: string; size: number }>) {
    let next = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < objects.length) {
        const o = objects[next++]!;
        await src.send(new PutObjectCommand({ Bucket: name, Key: o.key, Body: randomBytes(o.size) }));
      }
    }));
  }
  const env = { ...process.env, BENCH_SRC_KEY: users.src.key, BENCH_SRC_SECRET: users.src.secret, BENCH_DST_KEY: users.dst.key, BENCH_DST_SECRET: users.dst.secret };
  const lifeboat = (from: string, to: string): Promise<{ seconds: number; maxRssMiB: number; copied: number; skipped: number; heads: number }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [...NODE_FLAGS, join(import.meta.dirname, 'mirror-child.js'), rgw.endpoint, from, to], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (c) => (out += c));
      child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`mirror-child exited ${code}`))));
    });
  const renv = rcloneEnv(rgw, users);
  const rclone = (from: string, to: string) => timeShell(`env -u AWS_CA_BUNDLE rclone --config /dev/null sync src:${from} dst:${to}`, { env: renv });
  const rcloneRss = async (from: string, to: string) => {
    const out = execFileSync('bash', ['-c', `/usr/bin/time -f %M env -u AWS_CA_BUNDLE rclone --config /dev/null sync src:${from} dst:${to} 2>&1 >/dev/null | tail -1`], { env: renv, encoding: 'utf8' });
    return Number(out.trim()) / 1024;
  };

  // 1. The mixed corpus.
  const count = Number(values.small);
  const corpus = await bucket(src, 'corpus');
  const objects = Array.from({ length: count }, (_, i) => ({ key: `dir${i % 30}/obj-${i}.bin`, size: 4096 + Math.floor(Math.random() * (256 * 1024 - 4096)) }));
  objects.push({ key: 'large/a.bin', size: 64 * MiB }, { key: 'large/b.bin', size: 64 * MiB });
  console.error(`filling ${objects.length} objects …`);
  await fill(corpus, objects);
  const totalMiB = objects.reduce((a, o) => a + o.size, 0) / MiB;
  const rcloneDst = await bucket(dst, 'rclone-dst');
  const oursDst = await bucket(dst, 'lifeboat-dst');
  const rcloneFull = await rclone(corpus, rcloneDst);
  const rcloneAgain = await rclone(corpus, rcloneDst);
  const rcloneAgainRss = await rcloneRss(corpus, rcloneDst);
  const oursFull = await lifeboat(corpus, oursDst);
  const oursAgain = await lifeboat(corpus, oursDst);
  console.log(`\nmirror benchmark: ${objects.length} objects, ${fmt(totalMiB, 0)} MiB, RGW (bluestore) on loopback, ${new Date().toISOString()}`);
  printTable([
    ['run', 'seconds', 'peak RSS MiB', 'copied', 'HEADs'],
    ['rclone sync, full', fmt(rcloneFull), '', '', ''],
    ['lifeboat mirror, full', fmt(oursFull.seconds), fmt(oursFull.maxRssMiB, 0), String(oursFull.copied), String(oursFull.heads)],
    ['rclone sync, no change', fmt(rcloneAgain), fmt(rcloneAgainRss, 0), '', ''],
    ['lifeboat mirror, no change', fmt(oursAgain.seconds), fmt(oursAgain.maxRssMiB, 0), String(oursAgain.copied), String(oursAgain.heads)],
  ]);
  console.log(`\nfull:      lifeboat / rclone = ${fmt(oursFull.seconds / rcloneFull)}   (target <= 1.00)`);
  console.log(`no change: lifeboat / rclone = ${fmt(oursAgain.seconds / rcloneAgain)}   (target <= 0.25)`);

  // 2. Memory against object count, in one flat prefix.
  const rss: Array<[number, number, number]> = [];
  for (const n of values.flat!.split(',').map(Number)) {
    const flat = await bucket(src, `flat-${n}`);
    console.error(`filling ${n} small objects …`);
    await fill(flat, Array.from({ length: n }, (_, i) => ({ key: `f${String(i).padStart(7, '0')}`, size: 1024 })));
    const run = await lifeboat(flat, await bucket(dst, `flat-${n}-dst`));
    rss.push([n, run.maxRssMiB, run.seconds]);
  }
  printTable([['objects', 'peak RSS MiB', 'seconds'], ...rss.map(([n, m, s]) => [String(n), fmt(m, 0), fmt(s)])]);
  if (rss.length >= 2) console.log(`RSS at ${rss.at(-1)![0]} / RSS at ${rss[0]![0]}: ${fmt(rss.at(-1)![1] / rss[0]![1])}   (target <= 1.20)`);
  src.destroy();
  dst.destroy();
} finally {
  rgw.stop();
}
