/** Shared pieces of the benchmark scripts: a bench RGW, rclone remotes, timing. Not used by tests. */
import { spawn, type SpawnOptions } from 'node:child_process';
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
