import { CronExpressionParser } from 'cron-parser';
import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import { QueueSet, type JobStatus } from '../../queue/queues.js';
import { BACKUP_FUNCTION } from '../api/actions.js';
import { currentAlerts, type ApiAlert } from '../api/alerts.js';
import { datasetSummaries, type ApiDataset } from '../api/datasets.js';
import { targetSummaries, type ApiTarget } from '../api/targets.js';
import type { LoadedConfig } from '../config/load.js';
import type { Config, Dataset } from '../config/schema.js';
import { openLocal } from '../plumbing/deps.js';
import { bounded, checkRedis, createRedis, redisUrlForDisplay, withinTimeout } from '../plumbing/redis.js';
import { plural } from '../text.js';
import { EXIT } from './exit.js';
import { age, formatBytes, table, until } from './format.js';
import { STATUS_REDIS_TIMEOUT_MS, STATUS_TARGETS_TIMEOUT_MS } from './statusLimits.js';

export { STATUS_REDIS_TIMEOUT_MS, STATUS_TARGETS_TIMEOUT_MS };

/** A job that failed for good within this window counts as failing. */
export const FAILED_JOBS_WINDOW_MS = 24 * 3600_000;
/** The newest failed jobs read per function. */
const FAILED_JOBS_PER_FUNCTION = 100;

/** A job that failed for good (all attempts), as the web API's job status names its fields. */
export type FailedJob = { fn: string; id: string; dataset?: string; finishedAt: string } & Pick<JobStatus, 'attemptsMade' | 'failedReason'>;

/** A dataset as the web API sums it up, and when its backup function runs next. */
export type StatusDataset = ApiDataset & { nextRun?: string };

/** What `lifeboat status --json` prints. */
export interface StatusReport {
  generatedAt: string;
  datasets: StatusDataset[];
  targets: ApiTarget[];
  failedJobs: FailedJob[];
  alerts: ApiAlert[];
  redis: 'up' | 'down';
  ok: boolean;
}

/** The next run of the dataset's backup function, from its cron trigger in server.timezone; undefined: none scheduled (Velero schedules itself). */
export function nextBackupRun(config: Config, dataset: Dataset, now: Date): Date | undefined {
  const fn = allFunctions.find((f) => f.name === BACKUP_FUNCTION[dataset.kind]);
  const entries = (fn?.triggers ?? []).flatMap((t) => ('cron' in t ? t.cron(config) : [])).filter((e) => e.input.dataset === dataset.id);
  const runs = entries.map((e) => CronExpressionParser.parse(e.pattern, { tz: config.server.timezone, currentDate: now }).next().getTime());
  return runs.length ? new Date(Math.min(...runs)) : undefined;
}

/** The jobs that failed for good since `since`, newest first; throws RedisUnavailableError when Redis does not answer in time. */
export async function failedJobsSince(config: Config, since: Date): Promise<FailedJob[]> {
  // A probe of its own first: the queues' connection would wait for a Redis that is down forever.
  await checkRedis(config, STATUS_REDIS_TIMEOUT_MS);
  const url = redisUrlForDisplay(config);
  const redis = createRedis(config);
  // Losing Redis from here on shows as a timeout of the reads below.
  redis.on('error', () => {});
  const queues = new QueueSet(allFunctions, redis, config.redis.prefix);
  for (const queue of queues.queues.values()) queue.on('error', () => {});
  try {
    const perFunction = await Promise.all(
      [...queues.queues].map(async ([fn, queue]) => {
        const jobs = await withinTimeout(redis, url, () => queue.getFailed(0, FAILED_JOBS_PER_FUNCTION - 1), STATUS_REDIS_TIMEOUT_MS);
        return jobs.filter((job) => job?.finishedOn !== undefined && job.finishedOn >= since.getTime()).map((job): FailedJob => {
          const dataset = (job.data as { dataset?: unknown } | undefined)?.dataset;
          return {
            fn, id: job.id ?? '', ...(typeof dataset === 'string' ? { dataset } : {}),
            finishedAt: new Date(job.finishedOn!).toISOString(), attemptsMade: job.attemptsMade, failedReason: job.failedReason,
          };
        });
      }),
    );
    return perFunction.flat().sort((a, b) => b.finishedAt.localeCompare(a.finishedAt));
  } finally {
    await bounded(queues.close(), STATUS_REDIS_TIMEOUT_MS, 'closing the queues').catch(() => {});
    redis.disconnect();
  }
}

/** Reads the targets and, when it answers, Redis; all at once, each bounded. */
export async function collectStatus(config: Config, log: Logger): Promise<{ report: StatusReport; redisError?: string }> {
  const deps = openLocal(config, log);
  try {
    const now = deps.clock();
    const signal = AbortSignal.timeout(STATUS_TARGETS_TIMEOUT_MS);
    const [datasets, targets, jobs] = await Promise.all([
      datasetSummaries(deps, signal),
      targetSummaries(deps, signal),
      failedJobsSince(config, new Date(now.getTime() - FAILED_JOBS_WINDOW_MS)).then(
        (failed): { failed: FailedJob[]; error?: string } => ({ failed }),
        (err: unknown) => ({ failed: [], error: (err as Error).message }),
      ),
    ]);
    const alerts = currentAlerts(datasets, targets);
    const withNextRun = datasets.map((d): StatusDataset => {
      const next = nextBackupRun(config, config.datasets.find((c) => c.id === d.id)!, now);
      return next ? { ...d, nextRun: next.toISOString() } : d;
    });
    const ok = problems({ datasets, targets, alerts, failedJobs: jobs.failed }).length === 0;
    return {
      report: { generatedAt: now.toISOString(), datasets: withNextRun, targets, failedJobs: jobs.failed, alerts, redis: jobs.error === undefined ? 'up' : 'down', ok },
      redisError: jobs.error,
    };
  } finally {
    await deps.close();
  }
}

/** What makes status exit 1: "2 alerts", "1 stale dataset", … (nothing: all is well). */
function problems(r: Pick<StatusReport, 'datasets' | 'targets' | 'alerts' | 'failedJobs'>): string[] {
  const unreadable = new Set([...r.datasets.filter((d) => d.error).map((d) => d.target.name), ...r.targets.filter((t) => t.error).map((t) => t.name)]);
  const counts: Array<[number, string, string?]> = [
    [r.alerts.length, 'alert'],
    [r.datasets.filter((d) => d.stale).length, 'stale dataset'],
    [r.failedJobs.length, 'failed job', ' in the last 24 h'],
    [unreadable.size, 'unreadable target'],
  ];
  return counts.filter(([n]) => n > 0).map(([n, what, when = '']) => `${plural(n, what)}${when}`);
}

function datasetRow(d: StatusDataset, now: Date): string[] {
  const newest = d.newest;
  const status = d.error ? 'unreadable' : (newest?.status ?? 'no backups');
  const size = newest ? formatBytes(newest.dataBytes ?? newest.size) : '-';
  const drill = d.lastDrill ? `${d.lastDrill.ok ? 'ok' : 'FAILED'} ${age(new Date(d.lastDrill.at), now)}` : '-';
  const stale = d.stale ? `STALE (over ${d.staleAfterHours} h)` : 'no';
  const next = d.nextRun ? until(new Date(d.nextRun), now) : d.kind === 'velero' ? 'by Velero' : 'not scheduled';
  return [d.id, d.kind, newest ? age(new Date(newest.finishedAt), now) : '-', status, size, drill, stale, next];
}

function targetRow(t: ApiTarget, now: Date): string[] {
  if (t.error) return [t.name, t.kind, 'unreadable', '-', '-', '-'];
  const measured = t.measuredAt !== undefined;
  const capacity = t.capacityBytes ? `${formatBytes(t.capacityBytes)}${measured ? ` (${Math.round((100 * t.usedBytes) / t.capacityBytes)}% used)` : ''}` : '-';
  const fullIn = t.daysUntilFull === undefined ? '-' : `${Math.round(t.daysUntilFull)} d`;
  return [t.name, t.kind, measured ? formatBytes(t.usedBytes) : '-', capacity, fullIn, measured ? age(new Date(t.measuredAt!), now) : 'never (pruneCheck measures)'];
}

/** The one screen: datasets, targets, failed jobs, alerts, and the verdict. */
export function statusText(loaded: LoadedConfig, report: StatusReport, redisError: string | undefined): string {
  const now = new Date(report.generatedAt);
  const lines = [`lifeboat status at ${report.generatedAt.replace(/\.\d+Z$/, 'Z')}, config: ${loaded.source}`, ''];
  lines.push(report.datasets.length ? table([['DATASET', 'KIND', 'NEWEST', 'STATUS', 'SIZE', 'DRILL', 'STALE', 'NEXT BACKUP'], ...report.datasets.map((d) => datasetRow(d, now))]) : 'no datasets in the config');
  for (const d of report.datasets) if (d.error) lines.push(`  ${d.id}: target ${d.target.name} could not be read: ${d.error}`);
  lines.push('', table([['TARGET', 'KIND', 'USED', 'CAPACITY', 'FULL IN', 'MEASURED'], ...report.targets.map((t) => targetRow(t, now))]));
  for (const t of report.targets) if (t.error) lines.push(`  ${t.name}: could not be read: ${t.error}`);
  lines.push('');
  if (redisError !== undefined) lines.push(`failed jobs: unknown, Redis is unreachable (${redisError}); datasets, targets and alerts come from the targets alone`);
  else if (report.failedJobs.length === 0) lines.push('failed jobs in the last 24 h: none');
  else {
    lines.push('failed jobs in the last 24 h:');
    lines.push(table([['FUNCTION', 'DATASET', 'FAILED', 'ATTEMPTS', 'JOB', 'REASON'], ...report.failedJobs.map((j) => [j.fn, j.dataset ?? '-', age(new Date(j.finishedAt), now), String(j.attemptsMade), j.id, j.failedReason ?? ''])]));
  }
  lines.push('');
  if (report.alerts.length === 0) lines.push('alerts: none');
  else {
    lines.push('alerts:');
    lines.push(table(report.alerts.map((a) => [a.severity, a.alert, a.summary])));
  }
  const found = problems(report);
  lines.push('', found.length ? `NOT OK: ${found.join(', ')}` : 'ok: nothing stale, corrupt or failing');
  return lines.join('\n');
}

/** `lifeboat status`: prints the screen (or --json) and returns the exit code: 1 if anything is stale, corrupt or failing. */
export async function statusCommand(loaded: LoadedConfig, log: Logger, options: { json?: boolean }): Promise<number> {
  const { report, redisError } = await collectStatus(loaded.config, log);
  process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : `${statusText(loaded, report, redisError)}\n`);
  return report.ok ? EXIT.ok : EXIT.failed;
}
