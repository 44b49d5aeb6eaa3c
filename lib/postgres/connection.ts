import type { Secret } from '../config/secret.js';
import { capture } from './process.js';

export interface PostgresConnection {
  /** postgres:// URL without a password. */
  url: string;
  password?: Secret;
}

/** Environment for libpq tools: the password travels in PGPASSWORD, never on a command line. */
export function libpqEnv(connection: PostgresConnection, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, PGAPPNAME: 'lifeboat', PGCONNECT_TIMEOUT: base.PGCONNECT_TIMEOUT ?? '10' };
  delete env.PGPASSWORD;
  if (connection.password) env.PGPASSWORD = connection.password.reveal();
  return env;
}

/** "pg_dumpall (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" → 15 */
export function parseToolMajor(versionOutput: string): number {
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(versionOutput);
  if (!match) throw new Error(`cannot read a PostgreSQL version from ${JSON.stringify(versionOutput.trim().slice(0, 100))}`);
  return Number(match[1]);
}

export async function toolVersion(binary: string, signal?: AbortSignal): Promise<{ major: number; text: string }> {
  const text = (await capture(binary, ['--version'], { signal })).trim();
  return { major: parseToolMajor(text), text };
}

export interface ServerInfo {
  /** e.g. 150020 */
  versionNum: number;
  major: number;
  version: string;
  databases: string[];
}

/** Server version and the databases pg_dumpall will dump (every database that allows connections). */
export async function serverInfo(psql: string, connection: PostgresConnection, signal?: AbortSignal): Promise<ServerInfo> {
  const versionSql = `select current_setting('server_version_num'), current_setting('server_version')`;
  const databasesSql = 'select datname from pg_database where datallowconn order by datname';
  const out = await capture(psql, ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-F', '\t', '--dbname', connection.url, '-c', versionSql, '-c', databasesSql], {
    env: libpqEnv(connection),
    signal,
  });
  const [first, ...rest] = out.split('\n').filter((line) => line !== '');
  const [num, version] = (first ?? '').split('\t');
  const versionNum = Number(num);
  if (!Number.isInteger(versionNum) || !version) throw new Error(`unexpected answer from ${psql}: ${JSON.stringify(first)}`);
  return { versionNum, major: Math.floor(versionNum / 10000), version, databases: rest };
}

/** libpq failures that retrying will not fix. */
export function isPermanentConnectionFailure(message: string): boolean {
  return /password authentication failed|no password supplied|role ".*" does not exist|database ".*" does not exist|no pg_hba\.conf entry|permission denied|must be superuser/i.test(message);
}
