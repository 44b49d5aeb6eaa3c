/**
 * One dumpPostgres attempt (or, with mode "file", one upload of a local file through the same target
 * store) in its own process, so its peak RSS is Lifeboat's alone.
 * Prints {"seconds":…,"maxRssMiB":…,"cpuSeconds":…,"size":…} on stdout.
 *
 *   node dump-child.js <endpoint> <bucket> <postgres-url | file> [none|gzip|file]
 * With BENCH_AGE_RECIPIENT set, the dump is age-encrypted to it.
 */
import { createReadStream } from 'node:fs';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { parseConfig } from '../lib/config/load.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { runFunction } from '../queue/runner.js';

const [endpoint, bucket, source, mode = 'none'] = process.argv.slice(2);
const config = parseConfig(
  {
    targets: {
      hub: {
        kind: 's3',
        endpoint,
        accessKeyId: '${env:BENCH_S3_KEY}',
        secretAccessKey: '${env:BENCH_S3_SECRET}',
        ...(process.env.BENCH_PART_MIB ? { partSizeMiB: Number(process.env.BENCH_PART_MIB) } : {}),
        ...(process.env.BENCH_QUEUE ? { queueSize: Number(process.env.BENCH_QUEUE) } : {}),
      },
    },
    datasets: [{ id: 'bench', kind: 'postgres', source: { mode: 'direct', url: mode === 'file' ? 'postgres://unused/x' : source }, target: { name: 'hub', bucket }, compression: mode === 'gzip' ? 'gzip' : 'none', ...(process.env.BENCH_AGE_RECIPIENT ? { encryption: { recipients: [process.env.BENCH_AGE_RECIPIENT] } } : {}) }],
  },
  'bench',
);
// Only what the function needs; a full worker also loads bullmq and ioredis.
const deps = createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
const started = process.hrtime.bigint();
let size: number;
if (mode === 'file') {
  size = (await deps.store('hub', bucket!).put('bench/file-upload', createReadStream(source!))).size;
} else {
  const result = (await runFunction(dumpPostgres, { dataset: 'bench', tick: new Date().toISOString() }, { jobId: 'bench', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} })) as { size: number };
  size = result.size;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await deps.close();
const usage = process.resourceUsage();
console.log(JSON.stringify({ seconds, maxRssMiB: usage.maxRSS / 1024, cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6, size }));
