/** Shared pieces of the benchmark scripts: a bench RGW, rclone remotes, timing. Not used by tests. */
import { execFileSync, spawn, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

export interface BenchRgw {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): void;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A fresh RGW on bluestore (a sparse file), so large runs do not fill the OSD's RAM. */
export async function startBenchRgw(): Promise<BenchRgw> {
  const env = { ...process.env, RGW_STORE: 'bluestore', RGW_PORT: String(await freePort()), MON_PORT: String(await freePort()) };
  const dir = execFileSync('test/rgw/rgw.sh', ['start'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const vars = Object.fromEntries(
    readFileSync(`${dir}/env`, 'utf8')
      .split('\n')
      .map((l) => /^export (\w+)=(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  ) as Record<string, string>;
  return {
    endpoint: vars.S3_ENDPOINT!,
    accessKeyId: vars.S3_ACCESS_KEY!,
    secretAccessKey: vars.S3_SECRET_KEY!,
    stop: () => execFileSync('test/rgw/rgw.sh', ['stop', dir], { stdio: 'inherit' }),
  };
}

/** Environment for `rclone --config /dev/null` with one s3 remote per name, all on the bench RGW. */
export function rcloneEnv(rgw: BenchRgw, remotes: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.AWS_CA_BUNDLE; // the machine's bundle breaks rclone's S3 client
  for (const name of remotes) {
    const p = `RCLONE_CONFIG_${name.toUpperCase()}_`;
    Object.assign(env, {
      [`${p}TYPE`]: 's3',
      [`${p}PROVIDER`]: 'Other',
      [`${p}ENDPOINT`]: rgw.endpoint,
      [`${p}ACCESS_KEY_ID`]: rgw.accessKeyId,
      [`${p}SECRET_ACCESS_KEY`]: rgw.secretAccessKey,
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
