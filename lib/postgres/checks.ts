import type { Check } from '../catalog/manifest.js';
import { databaseStats, serverInfo, type DatabaseStats } from './connection.js';
import type { PostgresRunner } from './runner.js';

export interface Assertion {
  name?: string;
  database: string;
  sql: string;
  expect: string;
}

/** Runs one SQL statement in a database and returns its unaligned, tuples-only output. */
export async function queryIn(runner: PostgresRunner, database: string, sql: string, signal?: AbortSignal): Promise<string> {
  const statement = sql.trim().endsWith(';') ? sql.trim() : `${sql.trim()};`;
  const script = `\\set ON_ERROR_STOP 1\n\\connect "${database.replace(/"/g, '""')}"\n${statement}\n`;
  return (await runner.run('psql', ['-A', '-t', '-q', '-f', '-'], { stdin: script, signal })).trim();
}

/**
 * The drill's checks against a restored server: every database the manifest lists exists, each one's
 * table count is within tolerance of the dump-time figure, and every user assertion holds.
 */
export async function drillChecks(
  runner: PostgresRunner,
  expected: { databases: string[]; stats?: Record<string, DatabaseStats> },
  options: { tableTolerancePercent: number; assertions: Assertion[]; signal?: AbortSignal },
): Promise<Check[]> {
  const checks: Check[] = [];
  const present = new Set((await serverInfo(runner, options.signal)).databases);
  for (const db of expected.databases) {
    checks.push({ name: `database ${db}`, ok: present.has(db), detail: present.has(db) ? 'exists' : 'missing after restore' });
  }
  const restored = expected.databases.filter((db) => present.has(db));
  if (expected.stats) {
    const actual = await databaseStats(runner, restored, options.signal);
    for (const db of restored) {
      const want = expected.stats[db]?.tables;
      if (want === undefined) continue;
      const got = actual[db]!.tables;
      const allowed = Math.floor((want * options.tableTolerancePercent) / 100);
      const ok = Math.abs(got - want) <= allowed;
      checks.push({ name: `tables ${db}`, ok, detail: `${got} tables, ${want} at dump time${allowed ? ` (±${allowed})` : ''}` });
    }
  }
  for (const [i, assertion] of options.assertions.entries()) {
    const name = `assertion ${assertion.name ?? i + 1}`;
    try {
      const got = await queryIn(runner, assertion.database, assertion.sql, options.signal);
      checks.push({ name, ok: got === assertion.expect, detail: got === assertion.expect ? `${assertion.database}: ${JSON.stringify(got)}` : `${assertion.database}: got ${JSON.stringify(got)}, expected ${JSON.stringify(assertion.expect)}` });
    } catch (err) {
      checks.push({ name, ok: false, detail: `${assertion.database}: ${(err as Error).message.split('\n').slice(-2).join(' ').trim()}` });
    }
  }
  return checks;
}
