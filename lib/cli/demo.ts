import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { errorMessage } from '../../queue/errors.js';
import { openApp } from '../plumbing/app.js';
import { listBackups } from '../catalog/catalog.js';
import type { LoadedConfig } from '../config/load.js';
import type { PostgresDataset } from '../config/schema.js';
import { libpqEnv } from '../postgres/connection.js';
import { capture } from '../postgres/process.js';
import { buildServer, BOARD_PATH } from '../server.js';
import { EXIT } from './exit.js';
import { backupsTable } from './format.js';

const SAMPLE_DB = 'lifeboat_demo';

const SAMPLE_SQL = `
create table if not exists boats (id serial primary key, name text not null, length_m numeric(5,2), launched date);
insert into boats (name, length_m, launched)
  select 'boat ' || g, (g % 40) + 3.5, date '2000-01-01' + g from generate_series(1, 2000) g
  where not exists (select 1 from boats);
create table if not exists crew (id serial primary key, boat_id int references boats(id), name text);
insert into crew (boat_id, name) select (g % 2000) + 1, 'sailor ' || g from generate_series(1, 5000) g
  where not exists (select 1 from crew);`;

async function ensureSampleDatabase(url: string, psql: string, log: Logger, signal?: AbortSignal): Promise<void> {
  const env = libpqEnv({ url });
  const exists = (await capture(psql, ['-X', '-A', '-t', '--dbname', url, '-c', `select 1 from pg_database where datname = '${SAMPLE_DB}'`], { env, signal })).trim();
  if (exists !== '1') {
    await capture(psql, ['-X', '-q', '--dbname', url, '-c', `create database ${SAMPLE_DB}`], { env, signal });
    log.info({ database: SAMPLE_DB }, 'created sample database');
  }
  const sampleUrl = new URL(url);
  sampleUrl.pathname = `/${SAMPLE_DB}`;
  await capture(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--dbname', sampleUrl.toString(), '-c', SAMPLE_SQL], { env, signal });
}

/**
 * The README's first command: everything in one process. A sample database, a worker for every
 * function, a dump of the first postgres dataset, verification by fan-out, then the catalog.
 */
export async function runDemo(
  loaded: LoadedConfig,
  log: Logger,
  options: { database?: string; serve: boolean; onSignals: (stop: (force: boolean) => Promise<void>) => void },
): Promise<number | undefined> {
  const { config } = loaded;
  const dataset = config.datasets.find((d): d is PostgresDataset => d.kind === 'postgres' && d.source.mode === 'direct');
  if (!dataset || dataset.source.mode !== 'direct') {
    process.stderr.write(`demo: ${loaded.source} has no postgres dataset in direct mode\n`);
    return EXIT.usage;
  }
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`Lifeboat demo, config: ${loaded.source}`);
  if (options.database) out(`featuring database ${options.database}`);
  else {
    await ensureSampleDatabase(dataset.source.url, dataset.source.psql, log);
    out(`sample database ${SAMPLE_DB} is ready (2,000 boats, 5,000 crew)`);
  }

  const app = await openApp(config, log);
  const store = app.deps.storeFor(dataset);
  await store.ensureBucket();
  const server = await buildServer({ config, recorder: app.recorder, queues: app.queues });
  let address: string;
  try {
    address = await server.listen({ host: config.server.host, port: config.server.port });
  } catch (err) {
    await app.close();
    process.stderr.write(`demo: cannot listen on ${config.server.host}:${config.server.port}: ${errorMessage(err)}\n`);
    return EXIT.unavailable;
  }
  const stop = async () => {
    await server.close();
    await app.close();
  };

  try {
    await app.startWorkers();
    const tick = new Date();
    const job = await app.queues.enqueue('dumpPostgres', { dataset: dataset.id, tick: tick.toISOString() });
    out(`dumpPostgres job ${job.id}: dumping dataset ${dataset.id} into ${store.label} …`);
    const result = (await app.queues.waitFor('dumpPostgres', job.id!, 10 * 60_000)) as { key: string; size: number; sha256: string };
    out(`stored ${result.key} (${result.size} bytes, sha256 ${result.sha256.slice(0, 16)}…); verifyObject runs by fan-out …`);

    // Verification is its own job; the catalog on the target says when it is done.
    const deadline = Date.now() + 120_000;
    let entries = await listBackups(store, dataset);
    while (entries.find((e) => e.manifest.artifact.key === result.key)?.status === 'unverified' && Date.now() < deadline) {
      await sleep(200);
      entries = await listBackups(store, dataset);
    }
    out('');
    out(backupsTable(entries));
    out('');
    const status = entries.find((e) => e.manifest.artifact.key === result.key)?.status;
    out(`Catalog:    npx lifeboat backups ls${loaded.source === 'embedded defaults' ? '' : ` -c ${loaded.source}`}`);
    if (status !== 'verified') {
      out(`the newest backup is ${status ?? 'missing'}; see the logs above`);
      await stop();
      return EXIT.failed;
    }
    // The servers' addresses only when they stay up: a URL nobody answers on is a dead end.
    if (!options.serve) {
      out(`Web UI, Bull Board and /metrics: run \`npx lifeboat serve${loaded.source === 'embedded defaults' ? '' : ` -c ${loaded.source}`}\` (or this demo on a terminal)`);
      await stop();
      return EXIT.ok;
    }
    out(`Web UI:     ${address}/`);
    out(`Bull Board: ${address}${BOARD_PATH}`);
    out(`Metrics:    ${address}/metrics`);
    out('serving; Ctrl-C to stop');
    options.onSignals(stop);
    return undefined;
  } catch (err) {
    await stop();
    throw err;
  }
}
