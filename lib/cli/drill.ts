import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import { DrillFailedError } from '../../queue/errors.js';
import { runInline } from '../../queue/inline.js';
import { drillRecordSchema } from '../catalog/manifest.js';
import type { Config } from '../config/schema.js';
import { drillFor } from '../drill/index.js';
import { openLocal } from '../plumbing/deps.js';
import { CliError, EXIT, exitCodeOf, inlineRetries } from './exit.js';
import { cliDataset } from './steps.js';
import { table } from './format.js';

/** `lifeboat drill`: the drillRestore function inline, for a dataset of any kind, then this drill's check table. */
export async function drillCommand(config: Config, log: Logger, opts: { dataset: string; backup?: string; retries?: number; json?: boolean }): Promise<number> {
  const dataset = cliDataset(config, opts.dataset);
  if (!drillFor(dataset)) throw new CliError(`dataset ${dataset.id}: ${dataset.kind} datasets have no restore drill`, EXIT.usage);
  const deps = openLocal(config, log);
  try {
    const [result] = await runInline(allFunctions, 'drillRestore', { dataset: dataset.id, ...(opts.backup ? { backup: opts.backup } : {}) }, deps, inlineRetries(opts.retries));
    // The table of this drill only: the one the function returned, or the one its failure carries.
    const raw = result?.ok ? result.result : result?.failure instanceof DrillFailedError ? result.failure.record : undefined;
    const record = drillRecordSchema.safeParse(raw);
    if (opts.json) process.stdout.write(`${JSON.stringify(record.success ? record.data : { ok: false, dataset: dataset.id, error: result?.error })}\n`);
    else if (record.success) {
      const r = record.data;
      process.stdout.write(`${table([['CHECK', 'RESULT', 'DETAIL'], ...r.checks.map((c) => [c.name, c.ok ? 'ok' : 'FAILED', c.detail])])}\n`);
      process.stdout.write(`drill of ${dataset.id} backup ${r.backup}: ${r.ok ? 'passed' : 'FAILED'} in ${(r.durationMs / 1000).toFixed(1)} s (restore ${(r.restoreMs / 1000).toFixed(1)} s, ${r.where})\n`);
    }
    if (!result?.ok) process.stderr.write(`lifeboat: ${result?.error}\n`);
    return result?.ok ? EXIT.ok : exitCodeOf(result?.failure);
  } finally {
    await deps.close();
  }
}
