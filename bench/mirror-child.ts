/**
 * One mirrorBucket run in its own process, so its peak RSS is Lifeboat's alone.
 *   node mirror-child.js <endpoint> <source-bucket> <dest-bucket>   (keys in BENCH_SRC_KEY/SECRET, BENCH_DST_KEY/SECRET)
 * Prints {"seconds":…,"maxRssMiB":…,"copied":…,"skipped":…,"heads":…}.
 */
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { parseConfig } from '../lib/config/load.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { runFunction } from '../queue/runner.js';

const [endpoint, src, dst] = process.argv.slice(2);
const config = parseConfig(
  {
    targets: { hub: { kind: 's3', endpoint, accessKeyId: '${env:BENCH_DST_KEY}', secretAccessKey: '${env:BENCH_DST_SECRET}' } },
    datasets: [{ id: 'bench', kind: 'bucket', source: { endpoint, bucket: src, accessKeyId: '${env:BENCH_SRC_KEY}', secretAccessKey: '${env:BENCH_SRC_SECRET}' }, target: { name: 'hub', bucket: dst, prefix: 'mirror/' }, mirror: { sample: 20 } }],
  },
  'bench',
);
const deps = createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
const started = process.hrtime.bigint();
const result = (await runFunction(mirrorBucket, { dataset: 'bench', tick: new Date().toISOString() }, { jobId: 'bench', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} })) as {
  copied: { count: number };
  skipped: { count: number };
  heads: number;
};
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await deps.close();
console.log(JSON.stringify({ seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024, copied: result.copied.count, skipped: result.skipped.count, heads: result.heads }));
