import type { Config, PostgresDataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { isPermanentConnectionFailure, serverInfo, toolVersion, type ServerInfo } from '../postgres/connection.js';
import { LocalRunner, type PostgresRunner } from '../postgres/runner.js';
import { CHECK_TIMEOUT_MS, fail, messageOf, ok, within, type CheckLine } from './types.js';

/** Per postgres dataset: the server answers, and the pg_dumpall that will dump it is not older than it. */
export async function checkPostgres(config: Config, deps: Pick<Deps, 'postgres'>): Promise<CheckLine[]> {
  const datasets = config.datasets.flatMap((d, index) => (d.kind === 'postgres' ? [{ d, index }] : []));
  return (await Promise.all(datasets.map(({ d, index }) => checkOne(d, index, deps)))).flat();
}

async function checkOne(d: PostgresDataset, index: number, deps: Pick<Deps, 'postgres'>): Promise<CheckLine[]> {
  const field = `datasets[${index}].source`;
  const check = `postgres ${d.id}`;
  const signal = AbortSignal.timeout(CHECK_TIMEOUT_MS);
  let runner: PostgresRunner;
  try {
    runner = await within(deps.postgres(d), CHECK_TIMEOUT_MS, 'finding the server pod');
  } catch (err) {
    return [fail(check, `cannot find the server pod in namespace ${d.source.mode === 'kubernetes' ? d.source.namespace : '?'}: ${messageOf(err)}`, `check ${field}.pod/selector and the cluster access (see the kubernetes lines)`)];
  }
  let server: ServerInfo | undefined;
  const lines: CheckLine[] = [];
  try {
    server = await within(serverInfo(runner, signal), CHECK_TIMEOUT_MS, `psql (${runner.label})`);
    lines.push(ok(check, `PostgreSQL ${server.version} at ${runner.label} (${server.databases.length} databases)`));
  } catch (err) {
    const message = signal.aborted ? `psql (${runner.label}): no answer within ${CHECK_TIMEOUT_MS / 1000} s` : messageOf(err);
    const fix = isPermanentConnectionFailure(message)
      ? `check ${field}.${d.source.mode === 'direct' ? 'url and password' : 'user and password'}`
      : d.source.mode === 'direct'
        ? `check ${field}.url, and that the server accepts connections from here`
        : `check ${field}.host/port, and that the server runs in its pod`;
    lines.push(fail(check, message, fix));
  }
  lines.push(await checkDumpall(d, field, runner, server));
  return lines;
}

/** The configured pg_dumpall runs, and its major version is at least the server's: an older one refuses to dump. */
async function checkDumpall(d: PostgresDataset, field: string, runner: PostgresRunner, server: ServerInfo | undefined): Promise<CheckLine> {
  const check = `pg_dumpall ${d.id}`;
  const binary = runner instanceof LocalRunner ? runner.binary('pg_dumpall') : `pg_dumpall in pod ${runner.label}`;
  let tool: { major: number; text: string };
  try {
    tool = await within(toolVersion(runner, 'pg_dumpall', AbortSignal.timeout(CHECK_TIMEOUT_MS)), CHECK_TIMEOUT_MS, `${binary} --version`);
  } catch (err) {
    return fail(check, `${binary}: ${messageOf(err)}`, d.source.mode === 'direct' ? `install the PostgreSQL client tools, or set ${field}.pgDumpall to a pg_dumpall binary` : 'the server image must have pg_dumpall');
  }
  const version = tool.text.replace(/^.*\(PostgreSQL\)\s*/, '').split(/\s/)[0];
  if (!server) return ok(check, `${binary} is PostgreSQL ${version} (the server's version is unknown: see the postgres line)`);
  if (tool.major < server.major) {
    return fail(check, `${binary} is PostgreSQL ${version}, older than the server's ${server.version}: pg_dumpall refuses to dump a newer server`, `set ${field}.pgDumpall to a pg_dumpall of version ${server.major} or newer (e.g. /usr/lib/postgresql/${server.major}/bin/pg_dumpall)`);
  }
  return ok(check, `${binary} is PostgreSQL ${version}, server ${server.version}`);
}
