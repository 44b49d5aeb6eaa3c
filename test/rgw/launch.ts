/** Starts and stops a loopback Ceph RGW through test/rgw/rgw.sh; shared by the test setup and bench/. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { freePort } from '../../lib/plumbing/net.js';

export interface RgwInstance {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  cephConf: string;
  /** The radosgw process, for fault tests that freeze (SIGSTOP) or kill it. */
  radosgwPid: number;
  stop(): void;
}

export async function startRgw(options: { store?: 'memstore' | 'bluestore' } = {}): Promise<RgwInstance> {
  const env = { ...process.env, RGW_STORE: options.store ?? 'memstore', RGW_PORT: String(await freePort()), MON_PORT: String(await freePort()) };
  const dir = execFileSync('test/rgw/rgw.sh', ['start'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const vars: Record<string, string> = {};
  for (const line of readFileSync(`${dir}/env`, 'utf8').split('\n')) {
    const m = /^export (\w+)=(.*)$/.exec(line);
    if (m) vars[m[1]!] = m[2]!;
  }
  return {
    endpoint: vars.S3_ENDPOINT!,
    accessKeyId: vars.S3_ACCESS_KEY!,
    secretAccessKey: vars.S3_SECRET_KEY!,
    cephConf: vars.CEPH_CONF!,
    radosgwPid: Number(readFileSync(`${dir}/radosgw.pid`, 'utf8')),
    stop: () => execFileSync('test/rgw/rgw.sh', ['stop', dir], { stdio: 'inherit' }),
  };
}
