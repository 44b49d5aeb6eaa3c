/**
 * A whole restore against one database out of the same backup, in one run, on one ≥ 1 GiB pg_dumpall
 * dump on RGW that holds a big database (pgbench, with primary keys) and a small one beside it:
 *   psql -f <local file> into a fresh cluster               (the baseline: the whole dump)
 *   lifeboat restore                                        (one read: the whole dump into psql, sha256 while it streams)
 *   lifeboat restore --database small                       (one read of the whole dump: only small's section into psql)
 *   lifeboat restore --database big --as copy               (one read: big's section, renamed)
 * Each into a fresh cluster, with wall seconds, the client's CPU seconds (lifeboat/psql and their
 * children), the server's CPU seconds (the postmaster and every backend) and the client's peak RSS.
 *
 *   npm run build && node dist/bench/restoreDatabase.js [--gib 1]
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { findServerBinaries, startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { LocalRunner } from '../lib/postgres/runner.js';
import { createS3Client } from '../lib/targets/s3.js';
import { benchPostgresDataset, fmt, printTable, startBenchRgw, timeShell } from './common.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' } } });
const scale = Math.ceil(Number(values.gib) * 110);
const SMALL_ROWS = 20_000;
const CLI = join(import.meta.dirname, '../lib/cli/main.js');
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

interface Measured {
  seconds: number;
  clientCpu: number;
  serverCpu: number;
  maxRssMiB: number;
}

/** CPU seconds of a cluster's postmaster: itself, its reaped children, and the children still running. */
async function serverCpuSeconds(cluster: ThrowawayCluster): Promise<number> {
  const pid = (await readFile(join(cluster.dir, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]!.trim();
  const ticks = async (p: string, withChildren: boolean) => {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after the comm: utime is 14th of the line (index 11 here), stime 12, cutime 13, cstime 14.
    return [11, 12, ...(withChildren ? [13, 14] : [])].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  };
  let total = await ticks(pid, true);
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const children = (await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')).trim();
    for (const child of children ? children.split(' ') : []) total += await ticks(child, false);
  }
  return total / TICKS;
}

/** Runs a shell command under GNU time into a cluster: wall, client CPU and peak RSS, plus the server's CPU. */
async function measure(command: string, cluster: ThrowawayCluster, env: NodeJS.ProcessEnv = process.env): Promise<Measured> {
  const timeFile = join(tmpdir(), `lifeboat-bench-time-${process.pid}`);
  const serverBefore = await serverCpuSeconds(cluster);
  const started = process.hrtime.bigint();
  const stderr = await new Promise<string>((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%U %S %M', '-o', timeFile, 'bash', '-o', 'pipefail', '-c', command], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(err) : reject(new Error(`${command} exited ${code}\n${err.slice(-4000)}`))));
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await new Promise((resolve) => setTimeout(resolve, 300)); // the backend exits and is reaped after psql disconnects
  const serverCpu = (await serverCpuSeconds(cluster)) - serverBefore;
  const [user, system, maxRssKiB] = (await readFile(timeFile, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
  await rm(timeFile, { force: true });
  // The superuser always exists already; any other error fails the run.
  const errors = stderr.split('\n').filter((l) => /ERROR:/.test(l) && !/role "postgres" already exists/.test(l));
  if (errors.length > 0) throw new Error(`${command} reported errors:\n${stderr.slice(0, 4000)}`);
  return { seconds, clientCpu: user! + system!, serverCpu, maxRssMiB: maxRssKiB! / 1024 };
}

const psqlValue = (url: string, sql: string) => new LocalRunner({ url }).run('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql]).then((s) => s.trim());
const withDb = (url: string, db: string) => {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
};
const userDatabases = (url: string) => psqlValue(url, 'select string_agg(datname, \',\' order by datname) from pg_database where not datistemplate');
const ACCOUNTS = 'select count(*), sum(abalance) from pgbench_accounts';
const ITEMS = "select count(*), md5(string_agg(label, ',' order by id)) from items";

const rgw = await startBenchRgw();
const source = await startThrowawayCluster();
const file = join(tmpdir(), `lifeboat-bench-restoredb-${process.pid}.sql`);
const configFile = join(tmpdir(), `lifeboat-bench-restoredb-${process.pid}.yaml`);
const env = { ...process.env, BENCH_S3_KEY: rgw.accessKeyId, BENCH_S3_SECRET: rgw.secretAccessKey };
try {
  const bin = await findServerBinaries({ major: 15 });
  const s3 = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  s3.destroy();
  console.error(`generating pgbench scale ${scale} in database big, ${SMALL_ROWS} rows in database small …`);
  await psqlValue(source.url, 'create database big');
  await psqlValue(source.url, 'create database small');
  execFileSync(join(bin, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtGp', withDb(source.url, 'big')], { stdio: ['ignore', 'ignore', 'inherit'] });
  await psqlValue(withDb(source.url, 'small'), `create table items (id int primary key, label text, price numeric(8,2)); insert into items select g, 'item ' || g, g * 1.25 from generate_series(1, ${SMALL_ROWS}) g`);
  const expected = { big: await psqlValue(withDb(source.url, 'big'), ACCOUNTS), small: await psqlValue(withDb(source.url, 'small'), ITEMS) };

  const { rawConfig, once, close } = benchPostgresDataset(rgw, source.url, env);
  const { key, size } = (await once(dumpPostgres, { dataset: 'bench', tick: new Date().toISOString() })) as { key: string; size: number };
  await once(verifyObject, { dataset: 'bench', key });
  await close();
  await timeShell(`pg_dumpall --dbname '${source.url}' > ${file}`);
  await source.stop();
  await writeFile(configFile, JSON.stringify({ ...rawConfig, redis: { url: 'redis://127.0.0.1:1' } }));

  const lifeboatEnv = { ...env, LOG_LEVEL: 'error' };
  const lifeboat = (args: string, to: ThrowawayCluster) => `node --max-semi-space-size=2 ${CLI} restore bench ${args} --to '${to.url}' -c ${configFile}`;
  /** One run into a fresh cluster, with its result checked before the cluster goes. */
  async function run(name: string, command: (to: ThrowawayCluster) => string, check: (url: string) => Promise<void>, cmdEnv: NodeJS.ProcessEnv = lifeboatEnv): Promise<[string, Measured]> {
    const target = await startThrowawayCluster();
    try {
      console.error(`${name} …`);
      const measured = await measure(command(target), target, cmdEnv);
      await check(target.url);
      return [name, measured];
    } finally {
      await target.stop();
    }
  }
  const equal = (what: string, got: string, want: string) => {
    if (got !== want) throw new Error(`${what}: got ${got}, expected ${want}`);
  };

  const rows = [
    await run('psql -f local file (whole dump)', (to) => `psql -X -q -v ON_ERROR_STOP=0 --dbname '${to.url}' -f ${file}`, async (url) => {
      equal('databases', await userDatabases(url), 'big,postgres,small');
    }, process.env),
    await run('lifeboat restore (whole)', (to) => lifeboat('', to), async (url) => {
      equal('databases', await userDatabases(url), 'big,postgres,small');
      equal('big', await psqlValue(withDb(url, 'big'), ACCOUNTS), expected.big);
      equal('small', await psqlValue(withDb(url, 'small'), ITEMS), expected.small);
    }),
    await run('lifeboat restore --database small', (to) => lifeboat('--database small', to), async (url) => {
      equal('databases', await userDatabases(url), 'postgres,small');
      equal('small', await psqlValue(withDb(url, 'small'), ITEMS), expected.small);
    }),
    await run('lifeboat restore --database big --as copy', (to) => lifeboat('--database big --as copy', to), async (url) => {
      equal('databases', await userDatabases(url), 'copy,postgres');
      equal('copy', await psqlValue(withDb(url, 'copy'), ACCOUNTS), expected.big);
    }),
  ];
  await rm(file);

  const baseline = rows[0]![1];
  console.log(`\nrestore --database benchmark: ${fmt(size / 1024 ** 3)} GiB pg_dumpall (big: pgbench scale ${scale} with primary keys; small: ${SMALL_ROWS} rows), RGW (bluestore) on loopback, ${new Date().toISOString()}`);
  printTable([
    ['run', 'wall s', 'client CPU s', 'server CPU s', 'peak RSS MiB', 'wall / psql -f', 'CPU / psql -f'],
    ...rows.map(([name, m]) => [name, fmt(m.seconds), fmt(m.clientCpu), fmt(m.serverCpu), fmt(m.maxRssMiB, 0), fmt(m.seconds / baseline.seconds), fmt((m.clientCpu + m.serverCpu) / (baseline.clientCpu + baseline.serverCpu))]),
  ]);
  console.log('\nclient = the command and its children (lifeboat: node and psql); server = the target cluster\'s postmaster and backends;');
  console.log('CPU / psql -f compares client + server CPU.');
  console.log('Every run checked after: the expected databases only, pgbench_accounts count and sum, items count and md5.');
} finally {
  await rm(file, { force: true });
  await rm(configFile, { force: true });
  await source.stop().catch(() => {});
  rgw.stop();
}
