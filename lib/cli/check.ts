import type { Logger } from 'pino';
import { ConfigError, type LoadedConfig } from '../config/load.js';
import { checkEtcd } from '../check/etcd.js';
import { checkKube, COMPONENTS } from '../check/kube.js';
import { checkPostgres } from '../check/postgres.js';
import { checkRedisLine } from '../check/redis.js';
import { checkTimezone, checkWebhookToken } from '../check/server.js';
import { checkTargets } from '../check/targets.js';
import { CHECK_DEADLINE_MS, fail, messageOf, ok, type CheckLine } from '../check/types.js';
import type { Component } from '../kube/permissions.js';
import { openLocal } from '../plumbing/deps.js';
import { CliError, EXIT } from './exit.js';
import { table } from './format.js';

export interface CheckOptions {
  json?: boolean;
  component?: string;
}

/**
 * `lifeboat check`: a doctor for a deployment. Every group of checks runs at once, each request with a
 * short timeout, the whole under CHECK_DEADLINE_MS; a group that has not answered by then fails as timed out.
 */
export async function runChecks(loaded: LoadedConfig, log: Logger, options: { component?: Component; deadlineMs?: number } = {}): Promise<CheckLine[]> {
  const { config, source } = loaded;
  const deps = openLocal(config, log);
  const deadlineMs = options.deadlineMs ?? CHECK_DEADLINE_MS;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), deadlineMs);
  });
  const group = async (name: string, run: () => Promise<CheckLine[]> | CheckLine[]): Promise<CheckLine[]> => {
    const lines = Promise.resolve()
      .then(run)
      .catch((err: unknown) => [fail(name, `the check itself failed: ${messageOf(err)}`)]);
    const first = await Promise.race([lines, deadline]);
    return first === 'deadline' ? [fail(name, `no result within the command's ${deadlineMs / 1000} s limit`)] : first;
  };
  try {
    const groups = await Promise.all([
      [ok('config', `${source}: ${Object.keys(config.targets).length} targets, ${config.datasets.length} datasets${config.datasets.length ? ` (${config.datasets.map((d) => `${d.id} [${d.kind}]`).join(', ')})` : ''}`)],
      group('redis', async () => [await checkRedisLine(config)]),
      group('targets', () => checkTargets(config)),
      group('postgres', () => checkPostgres(config, deps)),
      group('etcd', () => checkEtcd(config)),
      group('kubernetes', () => checkKube(config, deps, options.component)),
      [checkTimezone(config), checkWebhookToken(config)],
    ]);
    return groups.flat();
  } finally {
    clearTimeout(timer);
    await deps.close();
  }
}

export function checkTable(lines: CheckLine[]): string {
  const rows = [['CHECK', 'RESULT', 'DETAIL / FIX'], ...lines.map((l) => [l.check, l.result, l.fix ? `${l.detail}; fix: ${l.fix}` : l.detail])];
  const counts = (['ok', 'warn', 'fail'] as const).map((r) => `${lines.filter((l) => l.result === r).length} ${r}`).join(', ');
  return `${table(rows)}\n${counts}`;
}

export function parseComponent(value: string | undefined): Component | undefined {
  if (value === undefined) return undefined;
  if (!(COMPONENTS as readonly string[]).includes(value)) throw new CliError(`--component: expected one of ${COMPONENTS.join(', ')}, got "${value}"`, EXIT.usage);
  return value as Component;
}

/**
 * Prints the lines (a table, or a JSON array with --json) and returns the exit code: 1 on any fail, 2
 * when the config does not load (that is the one line then).
 */
export async function checkCommand(load: () => Promise<LoadedConfig>, log: Logger, options: CheckOptions): Promise<number> {
  const component = parseComponent(options.component);
  let lines: CheckLine[];
  let code: number;
  try {
    lines = await runChecks(await load(), log, { component });
    code = lines.some((l) => l.result === 'fail') ? EXIT.failed : EXIT.ok;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    lines = [fail('config', `${err.source}: ${err.problems.join('; ')}`, 'fix the fields named (lifeboat config check lists them)')];
    code = EXIT.usage;
  }
  process.stdout.write(options.json ? `${JSON.stringify(lines, null, 2)}\n` : `${checkTable(lines)}\n`);
  // Every check is bounded, but a request that lost its race may still hold a socket: never let it hold the exit.
  setTimeout(() => process.exit(), 3000).unref();
  return code;
}
