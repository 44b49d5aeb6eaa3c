import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import { datasetKindMismatch, type Progress } from '../../queue/define.js';
import { errorMessage } from '../../queue/errors.js';
import { runInline } from '../../queue/inline.js';
import { formatIssues } from '../config/issues.js';
import type { LoadedConfig } from '../config/load.js';
import { openApp, openLocal } from '../plumbing/app.js';
import { CliError, EXIT, inlineRetries } from './exit.js';
import { progressPrinter } from './progress.js';
import { resultLine } from './results.js';
import { cliDataset } from './steps.js';

export interface RunOptions {
  dataset?: string;
  tick?: Date;
  backup?: string;
  wait?: boolean;
  inline?: boolean;
  retries?: number;
  dryRun?: boolean;
  forceDelete?: boolean;
  timeout: number;
  json?: boolean;
}

/** `lifeboat run <fn>`: enqueues the job of one tick (or runs it inline), after checking everything it can first. */
export async function runCommand(
  fnName: string,
  opts: RunOptions,
  load: () => Promise<LoadedConfig>,
  logger: () => Logger,
  onSignals: (stop: (force: boolean) => Promise<void>) => void,
): Promise<void> {
  // Everything is checked before a job exists or a metric moves: a refusal is exit 2.
  const fn = allFunctions.find((f) => f.name === fnName);
  if (!fn) throw new CliError(`unknown function "${fnName}" (known: ${allFunctions.map((f) => f.name).join(', ')})`, EXIT.usage);
  // Overriding a safety guard is for an operator watching the run, never for a queued job.
  if (opts.forceDelete && !opts.inline) throw new CliError('--force-delete: only with --inline', EXIT.usage);
  if (opts.retries !== undefined && !opts.inline) throw new CliError(`--retries: only with --inline (a queued job retries as ${fn.name} declares)`, EXIT.usage);
  const { config: cfg } = await load();
  if (opts.dataset) {
    const mismatch = datasetKindMismatch(fn, cliDataset(cfg, opts.dataset));
    if (mismatch) throw new CliError(mismatch, EXIT.usage);
  }
  const tick = opts.tick ?? new Date();
  const data = {
    ...(opts.dataset ? { dataset: opts.dataset } : {}),
    tick: tick.toISOString(),
    ...(opts.backup ? { backup: opts.backup } : {}),
    ...(opts.dryRun ? { dryRun: true } : {}),
    ...(opts.forceDelete ? { forceDelete: true } : {}),
  };
  const valid = fn.input.safeParse(data);
  if (!valid.success) throw new CliError(`invalid input for ${fn.name}: ${formatIssues(valid.error).join('; ')}`, EXIT.usage);
  const log = logger();
  // Machines get JSON lines; a person at a terminal gets a sentence per run.
  const json = opts.json === true || !process.stdout.isTTY;
  const progress = progressPrinter();

  if (opts.inline) {
    const deps = openLocal(cfg, log);
    const controller = new AbortController();
    onSignals(async () => controller.abort());
    const results = await runInline(allFunctions, fn.name, data, deps, { signal: controller.signal, ...inlineRetries(opts.retries), onProgress: (name, p) => progress.report(name, p) });
    progress.end();
    await deps.close();
    for (const { failure: _, ...r } of results) process.stdout.write(`${json ? JSON.stringify(r) : resultLine(r)}\n`);
    process.exitCode = results.every((r) => r.ok) ? EXIT.ok : EXIT.failed;
    return;
  }

  const app = await openApp(cfg, log).catch((err: unknown) => {
    throw new CliError(errorMessage(err), EXIT.unavailable);
  });
  try {
    const { job, created, state } = await app.queues.enqueueTick(fn.name, data);
    const jobId = job.id!;
    process.stderr.write(
      created
        ? `enqueued ${fn.name} job ${jobId}${opts.dataset ? ` for dataset ${opts.dataset}` : ''}\n`
        : `job ${jobId} for ${fn.name} ${opts.dataset ?? 'all datasets'} tick ${data.tick} already exists (state: ${state})\n`,
    );
    if (!opts.wait) {
      process.stdout.write(json ? `${JSON.stringify({ fn: fn.name, jobId, created, state })}\n` : `job ${jobId}: ${state}; follow it in Bull Board or with --wait\n`);
      return;
    }
    let outcome: { fn: string; jobId: string; ok: boolean; result?: unknown; error?: string };
    try {
      const result = await app.queues.waitFor(fn.name, jobId, opts.timeout * 1000, (p) => progress.report(fn.name, p as Progress));
      outcome = { fn: fn.name, jobId, ok: true, result };
    } catch (err) {
      outcome = { fn: fn.name, jobId, ok: false, error: errorMessage(err) };
      process.exitCode = EXIT.failed;
    }
    progress.end();
    process.stdout.write(`${json ? JSON.stringify(outcome) : resultLine(outcome)}\n`);
  } finally {
    await app.close();
  }
}
