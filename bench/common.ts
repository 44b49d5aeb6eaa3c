/** Shared pieces of the benchmark scripts: a bench RGW, rclone remotes, timing. Not used by tests. */
import { spawn, type SpawnOptions } from 'node:child_process';
import { parseConfig } from '../lib/config/load.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { startRgw, type RgwInstance } from '../test/rgw/launch.js';

export type BenchRgw = RgwInstance;

/** A fresh RGW on bluestore (a sparse file), so large runs do not fill the OSD's RAM. */
export function startBenchRgw(): Promise<BenchRgw> {
  return startRgw({ store: 'bluestore' });
}

/** Environment for `rclone --config /dev/null` with one s3 remote per name (each with its own user), all on the bench RGW. */
export function rcloneEnv(rgw: BenchRgw, remotes: Record<string, { key: string; secret: string }>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.AWS_CA_BUNDLE; // the machine's bundle breaks rclone's S3 client
  for (const [name, credentials] of Object.entries(remotes)) {
    const p = `RCLONE_CONFIG_${name.toUpperCase()}_`;
    Object.assign(env, {
      [`${p}TYPE`]: 's3',
      [`${p}PROVIDER`]: 'Other',
      [`${p}ENDPOINT`]: rgw.endpoint,
      [`${p}ACCESS_KEY_ID`]: credentials.key,
      [`${p}SECRET_ACCESS_KEY`]: credentials.secret,
      [`${p}FORCE_PATH_STYLE`]: 'true',
      [`${p}REGION`]: 'us-east-1',
    });
  }
  return env;
}

/** Runs a shell command, returns wall seconds; throws on failure. */
export function timeShell(command: string, options: SpawnOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('bash', ['-o', 'pipefail', '-c', command], { stdio: ['ignore', 'ignore', 'inherit'], ...options });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${command} exited ${code}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e9);
    });
  });
}

export function fmt(n: number, digits = 2): string {
  return n.toFixed(digits);
}

export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
}

export interface Usage {
  seconds: number;
  cpuSeconds: number;
  maxRssMiB: number;
}

export interface ProcessUsage extends Usage {
  stdout: string;
}

/**
 * Runs argv as a whole process under GNU time (Debian's `time`): wall seconds, user+system CPU seconds of
 * it and its children, and peak RSS. Both sides of a comparison are timed this way, so Node's own start
 * counts against Lifeboat as a Go binary's counts against rclone.
 */
export function measureProcess(argv: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<ProcessUsage> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', 'usage %U %S %M', ...argv], { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${argv.join(' ')} exited ${code}\n${err.slice(-4000)}`));
      const m = /usage ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(err);
      if (!m) return reject(new Error(`no usage line from /usr/bin/time for ${argv.join(' ')}`));
      resolve({ seconds: Number(process.hrtime.bigint() - started) / 1e9, cpuSeconds: Number(m[1]) + Number(m[2]), maxRssMiB: Number(m[3]) / 1024, stdout: out });
    });
  });
}

/** A shell command (bash -o pipefail) under GNU time; see measureProcess. */
export async function measureShell(command: string, options: { env?: NodeJS.ProcessEnv } = {}): Promise<Usage> {
  const { seconds, cpuSeconds, maxRssMiB } = await measureProcess(['bash', '-o', 'pipefail', '-c', command], options);
  return { seconds, cpuSeconds, maxRssMiB };
}

/** The median of each of a run's measures over its rounds. */
export function medianUsage<T extends Usage>(runs: T[]): Usage {
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  return { seconds: median(runs.map((r) => r.seconds)), cpuSeconds: median(runs.map((r) => r.cpuSeconds)), maxRssMiB: median(runs.map((r) => r.maxRssMiB)) };
}

/** "wall 1.23 s  CPU 0.98 s  RSS 45 MiB" columns of a table row. */
export function usageColumns(u: Usage): string[] {
  return [fmt(u.seconds), fmt(u.cpuSeconds), fmt(u.maxRssMiB, 0)];
}

/** Ratios of `ours` against `theirs`: wall and CPU. */
export function ratioColumns(ours: Usage, theirs: Usage): string[] {
  return [fmt(ours.seconds / theirs.seconds), fmt(ours.cpuSeconds / theirs.cpuSeconds)];
}

/**
 * A postgres dataset "bench" (direct, uncompressed) from `url` to bucket "bench" on the bench RGW, and
 * its functions run in this process (keys in BENCH_S3_KEY/BENCH_S3_SECRET of `env`).
 */
export function benchPostgresDataset(rgw: BenchRgw, url: string, env: NodeJS.ProcessEnv) {
  const rawConfig = {
    targets: { hub: { kind: 's3', endpoint: rgw.endpoint, accessKeyId: '${env:BENCH_S3_KEY}', secretAccessKey: '${env:BENCH_S3_SECRET}' } },
    datasets: [{ id: 'bench', kind: 'postgres', source: { mode: 'direct', url }, target: { name: 'hub', bucket: 'bench' }, compression: 'none' }],
  };
  const deps = createDeps({ config: parseConfig(rawConfig, 'bench', { env }), logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
  return {
    rawConfig,
    once: (fn: AnyFunction, data: unknown) => runFunction(fn, data, { jobId: 'bench', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} }),
    close: () => deps.close(),
  };
}
