/**
 * One verifyObject run in its own process, so its wall time, CPU and peak RSS are Lifeboat's alone.
 *   node verify-child.js <config.json> <dataset> key <key>     verify one object (as the upload fan-out does)
 *   node verify-child.js <config.json> <dataset> scrub [days]  the scrub, with the clock moved `days` ahead
 * Keys in BENCH_S3_KEY/BENCH_S3_SECRET. Prints {"seconds":…,"cpuSeconds":…,"maxRssMiB":…,"requests":{…},"result":…}.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { verifyObject } from '../functions/verifyObject.js';
import { parseConfig } from '../lib/config/load.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { createDeps } from '../lib/plumbing/deps.js';
import { silentLogger } from '../lib/plumbing/logger.js';
import { runFunction } from '../queue/runner.js';

const [configFile, dataset, mode, arg] = process.argv.slice(2);
const config = parseConfig(JSON.parse(readFileSync(configFile!, 'utf8')), configFile!);
// A scrub round is due again only if its clock is past the last round's checks.
const offsetMs = mode === 'scrub' ? Number(arg ?? 0) * 86400_000 : 0;
const deps = createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder(), clock: () => new Date(Date.now() + offsetMs) });

// Every HTTP request sent, by method: what one verification or scrub costs the target, whichever client sends it.
const requests: Record<string, number> = {};
diagnostics_channel.subscribe('http.client.request.start', (message) => {
  const method = (message as { request: { method: string } }).request.method;
  requests[method] = (requests[method] ?? 0) + 1;
});

const input = mode === 'scrub' ? { scrub: true, dataset } : { dataset, key: arg };
const started = process.hrtime.bigint();
const result = (await runFunction(verifyObject, input, { jobId: 'bench', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async () => {} })) as Record<string, unknown>;
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await deps.close();
const usage = process.resourceUsage();
const summary = mode === 'scrub' ? { checked: result.checked, corrupt: result.corrupt, bytes: result.bytes, notDue: result.notDue } : { ok: result.ok, size: (result.actual as { size: number }).size };
console.log(JSON.stringify({ seconds, cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6, maxRssMiB: usage.maxRSS / 1024, requests, result: summary }));
