import { isAbsolute, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { DecryptionError, EncryptionSetupError } from '../crypto/age.js';
import { RekeyError, RekeyUsageError, rekeyDataset, type RekeyedBackup, type RekeyResult } from '../crypto/rekey.js';
import { recipientFingerprint } from '../crypto/recipients.js';
import { openLocal } from '../plumbing/deps.js';
import type { Deps } from '../plumbing/deps.js';
import { CliError, EXIT, exitCodeOf, inlineRetries, isUnreachable } from './exit.js';
import { formatBytes } from './format.js';
import { cliDataset, progressPrinter } from './steps.js';

export interface RekeyCliOptions {
  dataset: string;
  /** The old identity file (a path, or a ${file:}/${env:} reference). */
  identity?: string;
  backup?: string;
  dryRun?: boolean;
  json?: boolean;
  retries?: number;
}

/** `--identity ./old.txt` means that file; a ${file:}/${env:} reference is passed on as it is. */
export function identityReference(value: string): string {
  return value.startsWith('${') || isAbsolute(value) ? value : resolve(value);
}

const short = (key: string) => key.slice(key.lastIndexOf('/') + 1);

/** One stderr line per backup, as it happens. */
export function rekeyLine(b: RekeyedBackup): string {
  const removed = b.removed.length ? `; removed ${b.removed.map(short).join(', ')}` : '';
  switch (b.outcome) {
    case 're-encrypted':
      return `  ${b.id}  re-encrypted  ${short(b.key)} → ${short(b.newKey!)} (${formatBytes(b.size ?? 0)}; verified: ${b.verified?.detail ?? '-'})${removed}`;
    case 'would re-encrypt':
      return `  ${b.id}  would re-encrypt  ${short(b.key)} (${b.from!.join(', ')}) → ${short(b.newKey!)} (${b.to!.join(', ')}), then delete ${b.removed.map(short).join(', ')}`;
    case 'current':
      return `  ${b.id}  already current${b.removed.length ? (b.verified ? ` (verified: ${b.verified.detail})` : '') : ''}${removed}`;
    case 'plaintext':
      return `  ${b.id}  plaintext: not encrypted, left as it is (rekey never encrypts a plaintext backup)`;
    case 'failed':
      return `  ${b.id}  FAILED: ${b.error ?? 'failed'}`;
  }
}

export function rekeySummary(r: RekeyResult): string {
  const { reencrypted, current, plaintext, failed, removed } = r.counts;
  const counts = `${r.dryRun ? 'would re-encrypt' : 're-encrypted'} ${reencrypted}, already current ${current}, plaintext ${plaintext}, failed ${failed}`;
  const extra = removed ? `, ${r.dryRun ? 'would remove' : 'removed'} ${removed} old ${removed === 1 ? 'object' : 'objects'}` : '';
  const tail = r.dryRun ? '; nothing was changed' : failed ? '; every backup is either re-encrypted or as it was: run rekey again for the failed ones' : '';
  return `${r.dataset}: ${r.dryRun ? 'dry run: ' : ''}${counts}${extra}${tail}`;
}

/**
 * `lifeboat rekey <dataset>`: inline from the target (no Redis). Lines on stderr, --json one object on
 * stdout (a failure too). Exit 0 all done, 1 a backup failed or no identity opens them, 2 not an
 * encrypted dataset, 3 the target is unreachable.
 */
export async function rekeyCommand(config: Config, log: Logger, opts: RekeyCliOptions, options: { deps?: Deps; signal?: AbortSignal } = {}): Promise<number> {
  const run = async (): Promise<number> => {
    const dataset = cliDataset(config, opts.dataset);
    const deps = options.deps ?? openLocal(config, log);
    const out = (line: string) => process.stderr.write(`${line}\n`);
    // First SIGINT/SIGTERM stops after the step in flight: each backup is either re-encrypted or untouched.
    const controller = new AbortController();
    const onSignal = (signal: NodeJS.Signals) => {
      out(`lifeboat: ${signal}: stopping; every backup is either re-encrypted or as it was; run rekey again to finish`);
      controller.abort(new Error(`stopped by ${signal}`));
    };
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const policy = inlineRetries(opts.retries);
    let printer: { id: string; print?: (bytes: number) => void } | undefined;
    const endLine = () => {
      if (printer?.print) process.stderr.write('\n');
      printer = undefined;
    };
    try {
      const recipients = 'encryption' in dataset ? dataset.encryption?.recipients : undefined;
      if (!opts.json && recipients) out(`rekey ${dataset.id}${opts.dryRun ? ' (dry run)' : ''}: to the current recipients ${recipients.map(recipientFingerprint).join(', ')}`);
      const result = await rekeyDataset(deps, dataset, {
        identity: opts.identity === undefined ? undefined : identityReference(opts.identity),
        backup: opts.backup,
        dryRun: opts.dryRun,
        signal,
        retries: policy.retries,
        onAttemptFailed: policy.onAttemptFailed,
        onBackup: (b) => {
          endLine();
          if (!opts.json) out(rekeyLine(b));
        },
        onProgress: (id, bytes, total) => {
          if (printer?.id !== id) printer = { id, print: progressPrinter(`  ${id} re-encrypting`, { bytes: total }) };
          printer.print?.(bytes);
        },
      });
      endLine();
      if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else {
        for (const w of result.warnings) out(`warning: ${w}`);
        out(rekeySummary(result));
      }
      return result.ok ? EXIT.ok : EXIT.failed;
    } catch (err) {
      endLine();
      if (err instanceof RekeyUsageError) throw new CliError(err.message, EXIT.usage);
      if (err instanceof DecryptionError || err instanceof RekeyError || err instanceof EncryptionSetupError) throw new CliError(err.message, EXIT.failed);
      if (isUnreachable(err)) throw new CliError((err as Error).message, EXIT.unavailable);
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (!options.deps) await deps.close();
    }
  };
  if (!opts.json) return run();
  // With --json a failure is a result too: a script reads one object whatever happened.
  return run().catch((err: unknown) => {
    process.stdout.write(`${JSON.stringify({ ok: false, dataset: opts.dataset, error: err instanceof Error ? err.message : String(err), exitCode: exitCodeOf(err) })}\n`);
    throw err;
  });
}
