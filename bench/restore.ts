/**
 * Restore and drill speed against psql's own, in one run, on the same ≥ 1 GiB dump:
 *   psql -f <local file> into a fresh cluster        (the baseline)
 *   lifeboat restore from RGW into a fresh cluster    (sha256 first pass, then gunzip-less stream into psql)
 *   lifeboat drill (local mode: initdb, restore, checks)
 *
 *   npm run build && node dist/bench/restore.js [--gib 1]
 */
import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { findServerBinaries, startThrowawayCluster } from '../lib/postgres/cluster.js';
import { createS3Client } from '../lib/targets/s3.js';
import { benchPostgresDataset, fmt, printTable, startBenchRgw, timeShell } from './common.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' } } });
const scale = Math.ceil(Number(values.gib) * 110);

const rgw = await startBenchRgw();
const source = await startThrowawayCluster();
const file = join(tmpdir(), `lifeboat-bench-restore-${process.pid}.sql`);
const env = { ...process.env, BENCH_S3_KEY: rgw.accessKeyId, BENCH_S3_SECRET: rgw.secretAccessKey };
try {
  const bin = await findServerBinaries({ major: 15 });
  const s3 = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  s3.destroy();
  console.error(`generating pgbench scale ${scale} …`);
  execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtGp', source.url], { stdio: ['ignore', 'ignore', 'inherit'] });

  const bench = benchPostgresDataset(rgw, source.url, env);
  const once = bench.once;
  const { key, size } = (await once(dumpPostgres, { dataset: 'bench', tick: new Date().toISOString() })) as { key: string; size: number };
  await once(verifyObject, { dataset: 'bench', key });
  await timeShell(`pg_dumpall --dbname '${source.url}' > ${file}`);
  await source.stop();

  const baselineCluster = await startThrowawayCluster();
  const baseline = await timeShell(`psql -X -q -v ON_ERROR_STOP=0 --dbname '${baselineCluster.url}' -f ${file} 2>/dev/null`);
  await baselineCluster.stop();
  await rm(file);

  const target = await startThrowawayCluster();
  const configFile = join(tmpdir(), `lifeboat-bench-${process.pid}.yaml`);
  await writeFile(configFile, JSON.stringify({ ...bench.rawConfig, redis: { url: 'redis://127.0.0.1:1' } }));
  const restore = await timeShell(`node --max-semi-space-size=2 ${join(import.meta.dirname, '../lib/cli/main.js')} restore bench --to '${target.url}' -c ${configFile}`, { env: { ...env, LOG_LEVEL: 'error' }, stdio: ['ignore', 'ignore', 'ignore'] });
  await target.stop();
  await rm(configFile);

  const started = process.hrtime.bigint();
  const drill = (await once(drillRestore, { dataset: 'bench' })) as { restoreMs: number; checks: unknown[] };
  const drillSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  await bench.close();

  console.log(`\nrestore benchmark: ${fmt(size / 1024 ** 3)} GiB dump (pgbench scale ${scale}, with primary keys), RGW (bluestore) on loopback, ${new Date().toISOString()}`);
  printTable([
    ['run', 'seconds'],
    ['psql -f local file', fmt(baseline)],
    ['lifeboat restore (verify pass + restore)', fmt(restore)],
    ['lifeboat drill (initdb + restore + checks)', fmt(drillSeconds)],
  ]);
  console.log(`\nrestore / psql -f: ${fmt(restore / baseline)}   (target <= 1.20)`);
  console.log(`drill / psql -f:   ${fmt(drillSeconds / baseline)}   (target <= 1.30; restore part ${fmt(drill.restoreMs / 1000)} s, ${drill.checks.length} checks)`);
} finally {
  await rm(file, { force: true });
  await source.stop().catch(() => {});
  rgw.stop();
}
