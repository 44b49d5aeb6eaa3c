/**
 * One mirrorBucket run in its own process, so its peak RSS is Lifeboat's alone.
 *   node mirror-child.js <endpoint> <source-bucket> <dest-bucket>   (keys in BENCH_SRC_KEY/SECRET, BENCH_DST_KEY/SECRET)
 * Prints {"workerSeconds":…,"startSeconds":…,"copied":…,"skipped":…,"heads":…}: the run itself, and the
 * time from process start to the run's start (module loading, config). BENCH_CONCURRENCY sets
 * mirror.concurrency; unset, the default applies.
 */
import { performance } from 'node:perf_hooks';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { parseConfig } from '../lib/config/load.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { runFunction } from '../queue/runner.js';

const [endpoint, src, dst] = process.argv.slice(2);
const concurrency = process.env.BENCH_CONCURRENCY ? { concurrency: Number(process.env.BENCH_CONCURRENCY) } : {};
const config = parseConfig(
  {
    targets: { hub: { kind: 's3', endpoint, accessKeyId: '${env:BENCH_DST_KEY}', secretAccessKey: '${env:BENCH_DST_SECRET}' } },
    datasets: [{ id: 'bench', kind: 'bucket', source: { endpoint, bucket: src, accessKeyId: '${env:BENCH_SRC_KEY}', secretAccessKey: '${env:BENCH_SRC_SECRET}' }, target: { name: 'hub', bucket: dst, prefix: 'mirror/' }, mirror: { sample: 20, ...concurrency } }],
  },
  'bench',
);
const deps = createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
const startSeconds = performance.now() / 1000;
const started = process.hrtime.bigint();
const result = (await runFunction(mirrorBucket, { dataset: 'bench', tick: new Date().toISOString() }, { jobId: 'bench', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} })) as {
  copied: { count: number };
  skipped: { count: number };
  heads: number;
};
const workerSeconds = Number(process.hrtime.bigint() - started) / 1e9;
await deps.close();
console.log(JSON.stringify({ workerSeconds, startSeconds, copied: result.copied.count, skipped: result.skipped.count, heads: result.heads }));
