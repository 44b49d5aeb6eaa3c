import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import type { VerifyFinding } from '../../functions/verifyObject.js';
import { runInline } from '../../queue/inline.js';
import { CorruptBackupError } from '../../queue/errors.js';
import { openLocal } from '../plumbing/deps.js';
import type { Config } from '../config/schema.js';
import { CliError, EXIT, exitCodeOf, inlineRetries } from './exit.js';
import { cliDataset } from './steps.js';
import { formatBytes, table } from './format.js';

/** `lifeboat verify`: verifyObject inline for the chosen backups, recorded like any verification, then a table. */
export async function verifyCommand(config: Config, log: Logger, opts: { dataset: string; backup: string; json?: boolean; retries?: number }): Promise<number> {
  const dataset = cliDataset(config, opts.dataset);
  const deps = openLocal(config, log);
  try {
    const [result] = await runInline(allFunctions, 'verifyObject', { dataset: dataset.id, backup: opts.backup }, deps, inlineRetries(opts.retries));
    const findings = (result?.ok ? (result.result as { findings?: VerifyFinding[] }).findings : result?.failure instanceof CorruptBackupError ? (result.failure.findings as VerifyFinding[]) : undefined) ?? [];
    // No findings: nothing was read (no such backup, or the target is unreachable: exit 3).
    if (findings.length === 0) throw new CliError(result?.error ?? 'verification produced no result', exitCodeOf(result?.failure));
    if (opts.json) for (const f of findings) process.stdout.write(`${JSON.stringify(f)}\n`);
    else {
      const rows = [['BACKUP', 'SIZE', 'CHECKS', 'RESULT', 'DETAIL'], ...findings.map((f) => [f.backup, formatBytes(Math.max(0, f.size)), String(f.checks), f.ok ? 'ok' : 'CORRUPT', f.reason ?? ''])];
      process.stdout.write(`${table(rows)}\n`);
      const bad = findings.filter((f) => !f.ok).length;
      process.stdout.write(`${dataset.id}: ${findings.length - bad} of ${findings.length} verified${bad ? `, ${bad} CORRUPT` : ''}\n`);
    }
    return findings.every((f) => f.ok) ? EXIT.ok : EXIT.failed;
  } finally {
    await deps.close();
  }
}
