/**
 * verifyObject against a raw GET + sha256 of the same object, and the scrub over many small backups, in one run:
 *   1. a ~1 GiB pg_dumpall backup (pgbench scale 110) on RGW, uncompressed and gzip
 *   2. baseline `curl -s <presigned url> | sha256sum` (gzip: also gunzip and hash the content, as verify does)
 *      against verifyObject of that backup in its own process (bench/verify-child.ts); median of N rounds, alternating
 *   3. the scrub over 1,000 small backups: one real dumpPostgres of a tiny cluster, copied into 999 more tick
 *      folders (artifact + manifest as dumpPostgres writes them), then `verifyObject {scrub: true}`
 *
 *   npm run build && node dist/bench/verify.js [--scale 110] [--backups 1000] [--rounds 3] [--no-gzip] [--profile DIR]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { backupDir, MANIFEST_FILE } from '../lib/catalog/layout.js';
import type { Manifest } from '../lib/catalog/manifest.js';
import { parseConfig } from '../lib/config/load.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import { findServerBinaries, startThrowawayCluster } from '../lib/postgres/cluster.js';
import { createS3Client } from '../lib/targets/s3.js';
import { runFunction } from '../queue/runner.js';
import { fmt, measureShell, printTable, startBenchRgw, type Usage } from './common.js';

const { values } = parseArgs({
  options: {
    scale: { type: 'string', default: '110' },
    backups: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '3' },
    'no-gzip': { type: 'boolean', default: false },
    profile: { type: 'string' },
  },
});
const scale = Number(values.scale);
const backups = Number(values.backups);
const rounds = Number(values.rounds);
const NODE = `node --max-semi-space-size=2`;
const child = join(import.meta.dirname, 'verify-child.js');

interface ChildRun extends Usage {
  inWorker: number;
  requests: Record<string, number>;
  result: Record<string, unknown>;
}

/** A child under GNU time: the whole process's wall, CPU and peak RSS, plus the JSON line it prints. */
function measureChild(command: string, env: NodeJS.ProcessEnv): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const p = spawn('/usr/bin/time', ['-f', 'usage %U %S %M', 'bash', '-o', 'pipefail', '-c', command], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (err += c));
    p.on('error', reject);
    p.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const m = /usage ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`${command} exited ${code}\n${err.slice(-4000)}`));
      const line = JSON.parse(out.trim().split('\n').pop()!) as { seconds: number; requests: Record<string, number>; result: Record<string, unknown> };
      resolve({ seconds, cpuSeconds: Number(m[1]) + Number(m[2]), maxRssMiB: Number(m[3]) / 1024, inWorker: line.seconds, requests: line.requests, result: line.result });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
function medianRun<T extends Usage>(runs: T[]): T {
  const m = median(runs.map((r) => r.seconds));
  return runs.find((r) => r.seconds === m)!;
}

/** Self time by function from a .cpuprofile, as shares of all samples. */
async function profileTop(file: string, n: number): Promise<string[][]> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as {
    nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\/(node_modules|dist)\//, '')}:${f.lineNumber + 1}` : '';
    const name = `${f.functionName || '(anonymous)'} ${where}`.trim();
    const dt = profile.timeDeltas[i] ?? 0;
    self.set(name, (self.get(name) ?? 0) + dt);
    total += dt;
  });
  return [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, us]) => [name, fmt(us / 1e6), `${fmt((100 * us) / total, 1)}%`]);
}

const rgw = await startBenchRgw();
const big = await startThrowawayCluster();
const tiny = await startThrowawayCluster();
const work = await mkdtemp(join(tmpdir(), 'lifeboat-bench-verify-'));
const env = { ...process.env, BENCH_S3_KEY: rgw.accessKeyId, BENCH_S3_SECRET: rgw.secretAccessKey, LOG_LEVEL: 'error' };
try {
  const bin = await findServerBinaries({ major: 15 });
  const s3 = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  console.error(`generating pgbench scale ${scale} …`);
  execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtg', big.url], { stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', '1', '-I', 'dt', tiny.url], { stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync(join(bin, 'psql'), ['-X', '-q', '-d', tiny.url, '-c', 'insert into pgbench_branches select g, 0 from generate_series(1, 200) g'], { stdio: ['ignore', 'ignore', 'inherit'] });

  const target = { name: 'hub', bucket: 'bench' };
  const rawConfig = {
    targets: { hub: { kind: 's3', endpoint: rgw.endpoint, accessKeyId: '${env:BENCH_S3_KEY}', secretAccessKey: '${env:BENCH_S3_SECRET}' } },
    datasets: [
      { id: 'big', kind: 'postgres', source: { mode: 'direct', url: big.url }, target: { ...target, prefix: 'big/' }, compression: 'none' },
      { id: 'bigz', kind: 'postgres', source: { mode: 'direct', url: big.url }, target: { ...target, prefix: 'bigz/' }, compression: 'gzip' },
      { id: 'many', kind: 'postgres', source: { mode: 'direct', url: tiny.url }, target: { ...target, prefix: 'many/' }, compression: 'none' },
    ],
    redis: { url: 'redis://127.0.0.1:1' },
  };
  const configFile = join(work, 'lifeboat.json');
  await writeFile(configFile, JSON.stringify(rawConfig));
  const config = parseConfig(rawConfig, 'bench', { env });
  const deps = createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
  const once = (data: unknown) => runFunction(dumpPostgres, data, { jobId: 'bench', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} }) as Promise<{ key: string; size: number }>;

  console.error('dumping (none) …');
  const plain = await once({ dataset: 'big', tick: new Date().toISOString() });
  const gz = values['no-gzip'] ? undefined : (console.error('dumping (gzip) …'), await once({ dataset: 'bigz', tick: new Date().toISOString() }));

  // 1,000 small backups: one real dump, then its artifact and manifest again under other ticks.
  console.error(`writing ${backups} small backups …`);
  const many = config.datasets.find((d) => d.id === 'many')!;
  const store = deps.storeFor(many);
  const base = new Date(Math.floor(Date.now() / 60_000) * 60_000);
  const first = await once({ dataset: 'many', tick: base.toISOString() });
  const manifest = (await store.getJson<Manifest>(`${backupDir(many, base)}${MANIFEST_FILE}`))!;
  const chunks: Buffer[] = [];
  for await (const c of await store.get(first.key)) chunks.push(c as Buffer);
  const artifact = Buffer.concat(chunks);
  let next = 1;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < backups) {
      const tick = new Date(base.getTime() - next++ * 3600_000);
      const dir = backupDir(many, tick);
      const key = `${dir}pg_dumpall.sql`;
      const put = await store.put(key, Readable.from([artifact]), { contentType: manifest.artifact.contentType, metadata: { 'lifeboat-dataset': many.id } });
      await store.putJson(`${dir}${MANIFEST_FILE}`, { ...manifest, tick: tick.toISOString(), artifact: { ...manifest.artifact, key, etag: put.etag } } satisfies Manifest);
    }
  }));
  await deps.close();

  const url = (key: string) => getSignedUrl(s3, new GetObjectCommand({ Bucket: 'bench', Key: key }), { expiresIn: 6 * 3600 });
  const plainUrl = await url(plain.key);
  const gzUrl = gz && (await url(gz.key));
  s3.destroy();

  type Row = { label: string; runs: Usage[]; child?: ChildRun[] };
  const rows: Record<string, Row> = {
    base: { label: 'curl | sha256sum (none)', runs: [] },
    verify: { label: 'verifyObject (none)', runs: [], child: [] },
    ...(gz && {
      baseZ: { label: 'curl | tee sha256sum | gzip -dc | sha256sum (gzip)', runs: [] },
      verifyZ: { label: 'verifyObject (gzip)', runs: [], child: [] },
    }),
    scrub: { label: `scrub of ${backups} backups`, runs: [], child: [] },
  };
  const verifyCmd = (dataset: string, key: string) => `${NODE} ${child} ${configFile} ${dataset} key '${key}'`;
  const steps: Record<string, () => Promise<void>> = {
    base: async () => void rows.base!.runs.push(await measureShell(`curl -sf '${plainUrl}' | sha256sum >/dev/null`)),
    verify: async () => {
      const r = await measureChild(verifyCmd('big', plain.key), env);
      if (r.result.ok !== true) throw new Error(`verifyObject failed: ${JSON.stringify(r.result)}`);
      rows.verify!.runs.push(r);
      rows.verify!.child!.push(r);
    },
    baseZ: async () => void rows.baseZ!.runs.push(await measureShell(`curl -sf '${gzUrl}' | tee >(sha256sum >/dev/null) | gzip -dc | sha256sum >/dev/null`)),
    verifyZ: async () => {
      const r = await measureChild(verifyCmd('bigz', gz!.key), env);
      if (r.result.ok !== true) throw new Error(`verifyObject failed: ${JSON.stringify(r.result)}`);
      rows.verifyZ!.runs.push(r);
      rows.verifyZ!.child!.push(r);
    },
  };
  for (let round = 0; round < rounds; round++) {
    console.error(`round ${round + 1}/${rounds} …`);
    // Alternating which goes first, so neither always meets a warmer cache.
    const pairs = [['base', 'verify'], ...(gz ? [['baseZ', 'verifyZ']] : [])];
    for (const pair of pairs) for (const name of round % 2 ? [...pair].reverse() : pair) await steps[name]!();
    // Each round's clock 31 days past the last, so every backup is due again.
    const r = await measureChild(`${NODE} ${child} ${configFile} many scrub ${31 * round}`, env);
    if (r.result.checked !== backups || r.result.corrupt !== 0) throw new Error(`scrub checked ${JSON.stringify(r.result)}`);
    rows.scrub!.runs.push(r);
    rows.scrub!.child!.push(r);
  }

  const table = [['run', 'wall s', 'in-worker s', 'CPU s', 'peak RSS MiB', 'MiB/s']];
  const mib = (name: string) => (name === 'scrub' ? undefined : (name.endsWith('Z') ? gz!.size : plain.size) / 1024 ** 2);
  const med: Record<string, ChildRun | Usage> = {};
  for (const [name, row] of Object.entries(rows)) {
    const m: Usage & Partial<ChildRun> = medianRun<Usage>(row.child ?? row.runs);
    med[name] = m;
    const size = mib(name);
    table.push([row.label, fmt(m.seconds), m.inWorker !== undefined ? fmt(m.inWorker) : '', fmt(m.cpuSeconds), fmt(m.maxRssMiB, 0), size ? fmt(size / m.seconds, 0) : '']);
  }
  console.log(`\nverify benchmark: ${fmt(plain.size / 1024 ** 3)} GiB dump (pgbench scale ${scale})${gz ? `, gzip ${fmt(gz.size / 1024 ** 2, 0)} MiB` : ''}, RGW (bluestore) on loopback, median of ${rounds} rounds, ${new Date().toISOString()}`);
  printTable(table);
  const ratio = (v: string, b: string) => {
    const vr = med[v] as ChildRun;
    const br = med[b]!;
    return `wall ${fmt(vr.seconds / br.seconds)} (in-worker ${fmt(vr.inWorker / br.seconds)}), throughput ${fmt(br.seconds / vr.seconds)}x the baseline`;
  };
  console.log(`\nverifyObject / baseline (none): ${ratio('verify', 'base')}   (target: throughput >= 0.90x, wall <= 1.11)`);
  if (gz) console.log(`verifyObject / baseline (gzip): ${ratio('verifyZ', 'baseZ')}`);
  const s = med.scrub as ChildRun;
  const total = Object.values(s.requests).reduce((a, b) => a + b, 0);
  console.log(`scrub: ${fmt((s.inWorker * 1000) / backups)} s per 1,000 backups in-worker (${fmt((s.seconds * 1000) / backups)} s whole process), ${total} requests (${fmt(total / backups, 1)} per backup): ${Object.entries(s.requests).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  console.log(`verifyObject requests (none): ${Object.entries((med.verify as ChildRun).requests).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  console.log(`all rounds (wall s): ${Object.values(rows).map((r) => `${r.label}: ${r.runs.map((u) => fmt(u.seconds)).join(' / ')}`).join('; ')}`);

  if (values.profile) {
    await mkdir(values.profile, { recursive: true });
    for (const f of await readdir(values.profile)) if (f.endsWith('.cpuprofile')) await rm(join(values.profile, f));
    await measureChild(`node --max-semi-space-size=2 --cpu-prof --cpu-prof-dir=${values.profile} ${child} ${configFile} big key '${plain.key}'`, env);
    const file = (await readdir(values.profile)).find((f) => f.endsWith('.cpuprofile'))!;
    console.log(`\nprofile of verifyObject (none), self time: ${join(values.profile, file)}`);
    printTable([['function', 'self s', 'share'], ...(await profileTop(join(values.profile, file), 20))]);
  }
} finally {
  await big.stop().catch(() => {});
  await tiny.stop().catch(() => {});
  await rm(work, { recursive: true, force: true });
  rgw.stop();
}
