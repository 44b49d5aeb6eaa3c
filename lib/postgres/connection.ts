import type { Secret } from '../config/secret.js';
import type { PostgresRunner } from './runner.js';

export interface PostgresConnection {
  /** postgres:// URL without a password. */
  url: string;
  password?: Secret;
}

/**
 * A libpq URL split into the URL without its password (for command lines and messages) and the password
 * (for PGPASSWORD): from the user info (`postgres://user:pw@host/db`) or a `password` query parameter.
 */
export function splitPassword(url: string): { url: string; password?: string } {
  const u = new URL(url);
  const fromQuery = u.searchParams.get('password');
  if (!u.password && fromQuery === null) return { url };
  const password = u.password ? decodeURIComponent(u.password) : fromQuery!;
  u.password = '';
  // Filtered by hand: URLSearchParams would re-encode the other parameters (a space as "+", which libpq keeps).
  u.search = u.search.slice(1).split('&').filter((pair) => !pair.startsWith('password=')).join('&');
  return { url: u.toString(), password };
}

/** Environment for libpq tools: a configured password travels in PGPASSWORD, never on a command line. */
export function libpqEnv(connection: PostgresConnection, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, PGAPPNAME: 'lifeboat', PGCONNECT_TIMEOUT: base.PGCONNECT_TIMEOUT ?? '10' };
  if (connection.password) env.PGPASSWORD = connection.password.reveal();
  return env;
}

/** "pg_dumpall (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" → 15 */
export function parseToolMajor(versionOutput: string): number {
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(versionOutput);
  if (!match) throw new Error(`cannot read a PostgreSQL version from ${JSON.stringify(versionOutput.trim().slice(0, 100))}`);
  return Number(match[1]);
}

export async function toolVersion(runner: PostgresRunner, tool: 'psql' | 'pg_dumpall', signal?: AbortSignal): Promise<{ major: number; text: string }> {
  const text = (await runner.run(tool, ['--version'], { signal })).trim();
  return { major: parseToolMajor(text), text };
}

export interface ServerInfo {
  /** e.g. 150020 */
  versionNum: number;
  major: number;
  version: string;
  /** Every database that allows connections: what pg_dumpall dumps. */
  databases: string[];
}

export async function serverInfo(runner: PostgresRunner, signal?: AbortSignal): Promise<ServerInfo> {
  const out = await runner.run('psql', ['-A', '-t', '-v', 'ON_ERROR_STOP=1', '-F', '\t',
    '-c', `select current_setting('server_version_num'), current_setting('server_version')`,
    '-c', 'select datname from pg_database where datallowconn order by datname'], { signal });
  const [first, ...rest] = out.split('\n').filter((line) => line !== '');
  const [num, version] = (first ?? '').split('\t');
  const versionNum = Number(num);
  if (!Number.isInteger(versionNum) || !version) throw new Error(`unexpected answer from psql (${runner.label}): ${JSON.stringify(first)}`);
  return { versionNum, major: Math.floor(versionNum / 10000), version, databases: rest };
}

export interface DatabaseStats {
  /** User tables (and partitioned tables) outside the system schemas. */
  tables: number;
  /** Estimated live rows: planner statistics, not a count. */
  rowsEstimate: number;
  /** The tables' size on disk without indexes (pg_table_size): about what their dump text weighs. */
  tableBytes: number;
}

/** psql's quoting for an identifier in a \connect line. */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

const STATS_SQL = `select count(*), coalesce(sum(greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0))), 0), coalesce(sum(pg_table_size(c.oid)), 0)
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  left join pg_stat_all_tables s on s.relid = c.oid
  where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%';`;

/** Tables and estimated rows per database, in one psql session that \connects to each. */
export async function databaseStats(runner: PostgresRunner, databases: string[], signal?: AbortSignal): Promise<Record<string, DatabaseStats>> {
  if (databases.length === 0) return {};
  const script = ['\\set ON_ERROR_STOP 1', ...databases.flatMap((db) => [`\\connect ${quoteIdent(db)}`, STATS_SQL])].join('\n') + '\n';
  const out = await runner.run('psql', ['-A', '-t', '-q', '-F', '\t', '-f', '-'], { stdin: script, signal });
  const rows = out.split('\n').filter((line) => /^\d+\t\d+\t\d+$/.test(line));
  if (rows.length !== databases.length) throw new Error(`expected statistics for ${databases.length} databases, got ${rows.length}`);
  return Object.fromEntries(databases.map((db, i) => {
    const [tables, rows_, tableBytes] = rows[i]!.split('\t').map(Number) as [number, number, number];
    return [db, { tables, rowsEstimate: rows_, tableBytes }];
  }));
}

/** libpq failures that retrying will not fix. */
export function isPermanentConnectionFailure(message: string): boolean {
  return /password authentication failed|no password supplied|role ".*" does not exist|database ".*" does not exist|no pg_hba\.conf entry|permission denied|must be superuser/i.test(message);
}
