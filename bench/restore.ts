/**
 * Restore and drill speed against psql's own, in one run, on the same ≥ 1 GiB dump:
 *   psql -f <local file> into a fresh cluster        (the baseline)
 *   lifeboat restore from RGW into a fresh cluster    (one read: sha256 while it streams into psql, uncompressed)
 *   lifeboat drill (local mode: initdb, restore, checks)
 *
 * --rounds N alternates psql -f and lifeboat restore N times (each into its own fresh cluster) and
 * compares their medians: on two cores shared with RGW one run of each is noisy.
 *
 *   npm run build && node dist/bench/restore.js [--gib 1] [--rounds 1]
 */
import { execFileSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
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

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, rounds: { type: 'string', default: '1' } } });
const scale = Math.ceil(Number(values.gib) * 110);
const rounds = Math.max(1, Math.floor(Number(values.rounds)));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

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

  const configFile = join(tmpdir(), `lifeboat-bench-${process.pid}.yaml`);
  await writeFile(configFile, JSON.stringify({ ...bench.rawConfig, redis: { url: 'redis://127.0.0.1:1' } }));
  const baselines: number[] = [];
  const restores: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    console.error(`round ${round} of ${rounds}: psql -f, then lifeboat restore …`);
    const baselineCluster = await startThrowawayCluster();
    baselines.push(await timeShell(`psql -X -q -v ON_ERROR_STOP=0 --dbname '${baselineCluster.url}' -f ${file} 2>/dev/null`));
    await baselineCluster.stop();
    const target = await startThrowawayCluster();
    // Its stderr says which sha256 check ran: shown, so the row is known to be the single-pass restore.
    const said = join(tmpdir(), `lifeboat-bench-restore-${process.pid}.err`);
    const seconds = await timeShell(`node --max-semi-space-size=2 ${join(import.meta.dirname, '../lib/cli/main.js')} restore bench --to '${target.url}' -c ${configFile} 2>${said}`, { env: { ...env, LOG_LEVEL: 'error' } })
      .catch(async (err: Error) => { throw new Error(`${err.message}\n${await readFile(said, 'utf8').catch(() => '')}`); });
    const lines = (await readFile(said, 'utf8')).split('\n');
    await rm(said, { force: true });
    if (!lines.includes('sha256 matches the manifest (checked while restoring)')) throw new Error(`lifeboat restore did not check the sha256 while restoring:\n${lines.join('\n')}`);
    console.error(lines.filter((l) => l.includes('sha256')).map((l) => `  ${l}`).join('\n'));
    restores.push(seconds);
    await target.stop();
  }
  await rm(file);
  await rm(configFile);
  const baseline = median(baselines);
  const restore = median(restores);

  const started = process.hrtime.bigint();
  const drill = (await once(drillRestore, { dataset: 'bench' })) as { restoreMs: number; checks: unknown[] };
  const drillSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  await bench.close();

  console.log(`\nrestore benchmark: ${fmt(size / 1024 ** 3)} GiB dump (pgbench scale ${scale}, with primary keys), RGW (bluestore) on loopback, ${new Date().toISOString()}`);
  printTable([
    ['run', 'seconds'],
    [`psql -f local file${rounds > 1 ? ` (median of ${baselines.map((b) => fmt(b)).join(', ')})` : ''}`, fmt(baseline)],
    [`lifeboat restore (one read, sha256 while restoring)${rounds > 1 ? ` (median of ${restores.map((r) => fmt(r)).join(', ')})` : ''}`, fmt(restore)],
    ['lifeboat drill (initdb + restore + checks)', fmt(drillSeconds)],
  ]);
  console.log(`\nrestore / psql -f: ${fmt(restore / baseline)}   (target <= 1.20)`);
  console.log(`drill / psql -f:   ${fmt(drillSeconds / baseline)}   (target <= 1.30; restore part ${fmt(drill.restoreMs / 1000)} s, ${drill.checks.length} checks)`);
} finally {
  await rm(file, { force: true });
  await source.stop().catch(() => {});
  rgw.stop();
}
