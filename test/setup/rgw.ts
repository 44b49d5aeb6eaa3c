/**
 * Starts a real Ceph RGW for the test run with the project's own script, unless S3_ENDPOINT points at
 * one already (as .ci/run does). Never skips: without ceph the run fails and says what to install.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { TestProject } from 'vitest/node';

export interface S3TestEnv {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  cephConf?: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3TestEnv;
  }
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

function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^export (\w+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

export default async function setup(project: TestProject) {
  const { S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, CEPH_CONF } = process.env;
  if (S3_ENDPOINT && S3_ACCESS_KEY && S3_SECRET_KEY) {
    project.provide('s3', { endpoint: S3_ENDPOINT, accessKeyId: S3_ACCESS_KEY, secretAccessKey: S3_SECRET_KEY, cephConf: CEPH_CONF });
    return;
  }
  const env = { ...process.env, RGW_PORT: String(await freePort()), MON_PORT: String(await freePort()) };
  let dir: string;
  try {
    dir = execFileSync('test/rgw/rgw.sh', ['start'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  } catch {
    throw new Error('could not start Ceph RGW for the tests (see above); set S3_ENDPOINT/S3_ACCESS_KEY/S3_SECRET_KEY to use a running one');
  }
  const vars = parseEnvFile(readFileSync(`${dir}/env`, 'utf8'));
  project.provide('s3', { endpoint: vars.S3_ENDPOINT!, accessKeyId: vars.S3_ACCESS_KEY!, secretAccessKey: vars.S3_SECRET_KEY!, cephConf: vars.CEPH_CONF });
  return () => {
    execFileSync('test/rgw/rgw.sh', ['stop', dir], { stdio: 'inherit' });
  };
}
