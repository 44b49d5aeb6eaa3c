/**
 * Webhook ingest: bucket-notification events per second into deduplicated verifyObject jobs, and accept
 * latency, against a real `lifeboat serve` (its own process) and real Redis, driven by autocannon.
 *
 *   npm run build && node dist/bench/webhook.js [--seconds 10] [--connections 16]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { freePort } from '../lib/plumbing/net.js';
import { fmt, printTable } from './common.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, connections: { type: 'string', default: '16' } } });
const prefix = `bench-webhook-${process.pid}`;
const dir = await mkdtemp(join(tmpdir(), 'lifeboat-bench-webhook-'));
const port = await freePort();
await writeFile(
  join(dir, 'lifeboat.yaml'),
  `redis: { url: "redis://127.0.0.1:6379", prefix: ${prefix} }
targets: { local: { kind: dir, path: ${dir}/data } }
datasets:
  - { id: velero, kind: velero, target: { name: local, bucket: velero-hub } }
server: { host: 127.0.0.1, port: ${port} }
`,
);
const serve = spawn(process.execPath, ['--max-semi-space-size=2', join(import.meta.dirname, '../lib/cli/main.js'), 'serve', '-c', join(dir, 'lifeboat.yaml')], { env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: 'inherit' });
const redis = new Redis('redis://127.0.0.1:6379');
try {
  for (let i = 0; ; i++) {
    if (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)) break;
    if (i > 100) throw new Error('serve did not start');
    await sleep(100);
  }
  const template = readFileSync(join(import.meta.dirname, '../../test/fixtures/minio-put.json'), 'utf8');
  let n = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}/hooks/s3`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    connections: Number(values.connections),
    duration: Number(values.seconds),
    // Every event names a new object, so each one is a job (and every fifth repeats one: dedupe at work).
    requests: [{ setupRequest: (req: autocannon.Request) => ({ ...req, body: template.replaceAll('nightly-20261126030000', `nightly-${n++ % 5 === 4 ? n - 2 : n}`) }) }],
  });
  const queue = new Queue('verifyObject', { connection: redis, prefix });
  const jobs = await queue.count();
  await queue.close();
  console.log(`\nwebhook ingest benchmark: ${values.connections} connections for ${values.seconds} s against lifeboat serve + Redis on 2 cores, ${new Date().toISOString()}`);
  printTable([
    ['events/s', 'p50 ms', 'p99 ms', 'max ms', '2xx', 'non-2xx', 'jobs'],
    [fmt(result.requests.average, 0), String(result.latency.p50), String(result.latency.p99), String(result.latency.max), String(result['2xx']), String(result.non2xx), String(jobs)],
  ]);
  console.log(`\ntarget: >= 2000 events/s and p99 <= 50 ms`);
} finally {
  serve.kill('SIGTERM');
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
}
