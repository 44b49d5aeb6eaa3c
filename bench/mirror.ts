/**
 * mirrorBucket against `rclone sync` on the same RGW, in one run, both timed as whole processes under GNU
 * time (wall, CPU-seconds, peak RSS); Lifeboat's in-worker time (after Node loaded its modules) is
 * printed beside it. rclone runs twice: with its defaults, and as an expert runs it (`--transfers 32
 * --checkers 32 --fast-list`, plus `--size-only` for the no-change run). It gets two remotes with
 * different users, so it streams through itself as Lifeboat must, instead of copying server-side.
 *   1. a mixed corpus (3,000 objects of 4-256 KiB plus 2 x 64 MiB): a full mirror, then a no-change
 *      re-run (as a worker, and as `lifeboat run mirrorBucket --inline`), rounds alternating the order
 *   2. a full mirror of 50k objects of 1 KiB in one flat prefix
 *   3. Lifeboat's peak RSS against object count (10k, 100k)
 *
 *   npm run build && node dist/bench/mirror.js [--small 3000] [--rounds 3 (0: skip the corpus)] [--flat 50000] [--rss 10000,100000] [--profile DIR]
 * --profile writes a CPU profile of each Lifeboat run in round 1 (node --cpu-prof) to DIR; summarise one
 * with `node dist/bench/profileSummary.js DIR/<file>.cpuprofile`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client, S3Store } from '../lib/targets/s3.js';
import { fmt, measureProcess, medianUsage, printTable, ratioColumns, rcloneEnv, startBenchRgw, usageColumns, type Usage } from './common.js';

const { values } = parseArgs({
  options: {
    small: { type: 'string', default: '3000' },
    rounds: { type: 'string', default: '3' },
    flat: { type: 'string', default: '50000' },
    rss: { type: 'string', default: '10000,100000' },
    profile: { type: 'string' },
  },
});
const MiB = 1024 * 1024;
/** The flags the shipped entry points run Node with (lib/cli/main.ts's shebang, package.json). */
const NODE_FLAGS = ['--max-semi-space-size=2'];
const CLI = join(import.meta.dirname, '../lib/cli/main.js');
const RCLONE = ['env', '-u', 'AWS_CA_BUNDLE', 'rclone', '--config', '/dev/null'];
const TUNED = ['--transfers', '32', '--checkers', '32', '--fast-list'];

interface LifeboatRun extends Usage {
  workerSeconds: number;
  copied: number;
  skipped: number;
  heads: number;
}

const rgw = await startBenchRgw();
const work = await mkdtemp(join(tmpdir(), 'lifeboat-bench-mirror-'));
try {
  const cephEnv = { ...process.env, CEPH_CONF: rgw.cephConf };
  const users = { src: { key: 'bench-src-access', secret: 'bench-src-secret-0123456789' }, dst: { key: 'bench-dst-access', secret: 'bench-dst-secret-0123456789' } };
  for (const [uid, u] of Object.entries(users)) execFileSync('radosgw-admin', ['user', 'create', `--uid=bench-${uid}`, `--display-name=${uid}`, `--access-key=${u.key}`, `--secret-key=${u.secret}`], { env: cephEnv, stdio: 'ignore' });
  const client = (u: { key: string; secret: string }) => createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: u.key, secretAccessKey: u.secret });
  const src = client(users.src);
  const dst = client(users.dst);
  const bucket = async (c: S3Client, name: string) => c.send(new CreateBucketCommand({ Bucket: name })).then(() => name);

  async function fill(name: string, objects: Array<{ key: string; size: number }>) {
    console.error(`filling ${name}: ${objects.length} objects …`);
    let next = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (next < objects.length) {
        const o = objects[next++]!;
        await new S3Store(src, 'bench', name).putObject(o.key, randomBytes(o.size), { length: o.size });
      }
    }));
  }
  const env = { ...process.env, BENCH_SRC_KEY: users.src.key, BENCH_SRC_SECRET: users.src.secret, BENCH_DST_KEY: users.dst.key, BENCH_DST_SECRET: users.dst.secret };
  const profileFlags = (label: string) => (values.profile ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`, `--cpu-prof-name=${label}.cpuprofile`] : []);

  /** mirrorBucket as a worker runs it: one process, the in-worker time reported by the child. */
  const lifeboat = async (from: string, to: string, profile?: string): Promise<LifeboatRun> => {
    const run = await measureProcess([process.execPath, ...NODE_FLAGS, ...(profile ? profileFlags(profile) : []), join(import.meta.dirname, 'mirror-child.js'), rgw.endpoint, from, to], { env });
    return { ...run, ...(JSON.parse(run.stdout) as Omit<LifeboatRun, keyof Usage>) };
  };
  /** The same through the CLI, as an operator or a CronJob would: `lifeboat run mirrorBucket --inline`. */
  const lifeboatCli = async (from: string, to: string): Promise<Usage> => {
    const file = join(work, `${from}-${to}.yaml`);
    await writeFile(file, JSON.stringify({
      targets: { hub: { kind: 's3', endpoint: rgw.endpoint, accessKeyId: '${env:BENCH_DST_KEY}', secretAccessKey: '${env:BENCH_DST_SECRET}' } },
      datasets: [{ id: 'bench', kind: 'bucket', source: { endpoint: rgw.endpoint, bucket: from, accessKeyId: '${env:BENCH_SRC_KEY}', secretAccessKey: '${env:BENCH_SRC_SECRET}' }, target: { name: 'hub', bucket: to, prefix: 'mirror/' }, mirror: { sample: 20 } }],
    }));
    return measureProcess([process.execPath, ...NODE_FLAGS, CLI, '--config', file, 'run', 'mirrorBucket', '--dataset', 'bench', '--inline', '--json'], { env });
  };
  const renv = rcloneEnv(rgw, users);
  const rclone = (from: string, to: string, flags: string[]) => measureProcess([...RCLONE, 'sync', ...flags, `src:${from}`, `dst:${to}`], { env: renv });

  // 1. The mixed corpus, in rounds that alternate the order of the three tools (--rounds 0 skips it).
  if (Number(values.rounds) > 0) await mixedCorpus();
  async function mixedCorpus() {
    const count = Number(values.small);
    const corpus = await bucket(src, 'corpus');
    const objects = Array.from({ length: count }, (_, i) => ({ key: `dir${i % 30}/obj-${i}.bin`, size: 4096 + Math.floor(Math.random() * (256 * 1024 - 4096)) }));
    objects.push({ key: 'large/a.bin', size: 64 * MiB }, { key: 'large/b.bin', size: 64 * MiB });
    await fill(corpus, objects);
    const totalMiB = objects.reduce((a, o) => a + o.size, 0) / MiB;
    const runs = { defaults: [] as Usage[], tuned: [] as Usage[], ours: [] as LifeboatRun[], defaultsAgain: [] as Usage[], tunedAgain: [] as Usage[], oursAgain: [] as LifeboatRun[], cliAgain: [] as Usage[] };
    for (let round = 1; round <= Number(values.rounds); round += 1) {
      console.error(`mixed corpus, round ${round} …`);
      const [d, t, o] = await Promise.all([`rd-${round}`, `rt-${round}`, `lb-${round}`].map((b) => bucket(dst, b)));
      const steps = [
        async () => {
          runs.defaults.push(await rclone(corpus, d!, []));
          runs.defaultsAgain.push(await rclone(corpus, d!, []));
        },
        async () => {
          runs.tuned.push(await rclone(corpus, t!, TUNED));
          runs.tunedAgain.push(await rclone(corpus, t!, [...TUNED, '--size-only']));
        },
        async () => {
          runs.ours.push(await lifeboat(corpus, o!, round === 1 ? 'mixed-full' : undefined));
          runs.oursAgain.push(await lifeboat(corpus, o!, round === 1 ? 'mixed-nochange' : undefined));
          runs.cliAgain.push(await lifeboatCli(corpus, o!));
        },
      ];
      for (const step of round % 2 ? steps : steps.reverse()) await step();
  }
  const m = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, medianUsage(v)])) as Record<keyof typeof runs, Usage>;
  const worker = (rs: LifeboatRun[]) => fmt(medianUsage(rs.map((r) => ({ seconds: r.workerSeconds, cpuSeconds: 0, maxRssMiB: 0 }))).seconds);
  console.log(`\nmirror benchmark: ${objects.length} objects, ${fmt(totalMiB, 0)} MiB, RGW (bluestore) on loopback, medians of ${values.rounds} rounds, ${new Date().toISOString()}`);
  printTable([
    ['run', 'wall s', 'CPU s', 'peak RSS MiB', 'in-worker s', 'wall / tuned', 'CPU / tuned', 'wall / defaults'],
    ['rclone sync, defaults, full', ...usageColumns(m.defaults), '', ...ratioColumns(m.defaults, m.tuned), ''],
    ['rclone sync, tuned, full', ...usageColumns(m.tuned), '', '1.00', '1.00', ''],
    ['lifeboat mirrorBucket, full', ...usageColumns(m.ours), worker(runs.ours), ...ratioColumns(m.ours, m.tuned), fmt(m.ours.seconds / m.defaults.seconds)],
    ['rclone sync, defaults, no change', ...usageColumns(m.defaultsAgain), '', ...ratioColumns(m.defaultsAgain, m.tunedAgain), ''],
    ['rclone sync, tuned --size-only, no change', ...usageColumns(m.tunedAgain), '', '1.00', '1.00', ''],
    ['lifeboat mirrorBucket, no change', ...usageColumns(m.oursAgain), worker(runs.oursAgain), ...ratioColumns(m.oursAgain, m.tunedAgain), fmt(m.oursAgain.seconds / m.defaultsAgain.seconds)],
    ['lifeboat run --inline (CLI), no change', ...usageColumns(m.cliAgain), '', ...ratioColumns(m.cliAgain, m.tunedAgain), fmt(m.cliAgain.seconds / m.defaultsAgain.seconds)],
  ]);
  const workerNoChange = medianUsage(runs.oursAgain.map((r) => ({ seconds: r.workerSeconds, cpuSeconds: 0, maxRssMiB: 0 }))).seconds;
  console.log(`copied ${runs.ours[0]!.copied} then ${runs.oursAgain[0]!.copied}; HEADs on the no-change run: ${runs.oursAgain[0]!.heads}`);
  console.log(`targets: full <= 1.00x wall and <= 1.50x CPU of tuned; no change <= 1.00x wall (worker: ${fmt(workerNoChange / m.tunedAgain.seconds)}x, CLI: ${fmt(m.cliAgain.seconds / m.tunedAgain.seconds)}x)`);
  }

  // 2. Many small objects, in one flat prefix: per-object cost.
  const flat = Number(values.flat);
  const flatBuckets = new Map<number, string>();
  const flatBucket = async (n: number) => {
    if (!flatBuckets.has(n)) {
      const name = await bucket(src, `flat-${n}`);
      await fill(name, Array.from({ length: n }, (_, i) => ({ key: `f${String(i).padStart(7, '0')}`, size: 1024 })));
      flatBuckets.set(n, name);
    }
    return flatBuckets.get(n)!;
  };
  if (flat > 0) {
    const from = await flatBucket(flat);
    const tuned = await rclone(from, await bucket(dst, `flat-${flat}-rclone`), TUNED);
    const ours = await lifeboat(from, await bucket(dst, `flat-${flat}-lifeboat`), 'flat-full');
    console.log(`\n${flat} objects of 1 KiB, one flat prefix, full mirror`);
    printTable([
      ['run', 'wall s', 'CPU s', 'peak RSS MiB', 'in-worker s', 'wall / tuned', 'CPU / tuned'],
      ['rclone sync, tuned', ...usageColumns(tuned), '', '1.00', '1.00'],
      ['lifeboat mirrorBucket', ...usageColumns(ours), fmt(ours.workerSeconds), ...ratioColumns(ours, tuned)],
    ]);
  }

  // 3. Memory against object count.
  const rss: Array<[number, LifeboatRun]> = [];
  for (const n of values.rss!.split(',').filter(Boolean).map(Number)) {
    const from = await flatBucket(n);
    rss.push([n, await lifeboat(from, await bucket(dst, `rss-${n}`))]);
  }
  if (rss.length > 0) {
    console.log('\nLifeboat peak RSS against object count (1 KiB objects, one flat prefix)');
    printTable([['objects', 'peak RSS MiB', 'wall s', 'CPU s'], ...rss.map(([n, r]) => [String(n), fmt(r.maxRssMiB, 0), fmt(r.seconds), fmt(r.cpuSeconds)])]);
    if (rss.length >= 2) console.log(`RSS at ${rss.at(-1)![0]} / RSS at ${rss[0]![0]}: ${fmt(rss.at(-1)![1].maxRssMiB / rss[0]![1].maxRssMiB)}   (targets: <= 1.20, and <= 200 MiB)`);
  }
  src.destroy();
  dst.destroy();
} finally {
  await rm(work, { recursive: true, force: true });
  rgw.stop();
}
