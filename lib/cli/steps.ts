import { retrying } from '../../queue/inline.js';
import type { BackupEntry } from '../catalog/catalog.js';
import { CliError, EXIT, type inlineRetries, isUnreachable } from './exit.js';
import { formatBytes } from './format.js';

/**
 * A step that only reads, retried by the command's policy. Its last failure exits 3 if the target or
 * the destination could not be reached, else 1.
 */
export function readStep<T>(what: string, policy: ReturnType<typeof inlineRetries>, step: () => Promise<T>): Promise<T> {
  return retrying(what, step, { attempts: policy.retries.attempts, delayMs: () => policy.retries.backoffMs, onAttemptFailed: policy.onAttemptFailed }).catch((err: unknown) => {
    if (err instanceof CliError) throw err;
    throw new CliError(`${what}: ${err instanceof Error ? err.message : String(err)}`, isUnreachable(err) ? EXIT.unavailable : EXIT.failed);
  });
}

/** `--backup latest` or an id; what the dataset holds is called `noun` ("backup", "snapshot"). */
export function pickBackup(entries: BackupEntry[], dataset: string, backup: string, noun = 'backup'): BackupEntry {
  const entry = backup === 'latest' ? entries[0] : entries.find((e) => e.id === backup);
  if (!entry) throw new CliError(backup === 'latest' ? `dataset ${dataset} has no ${noun}s on its target` : `dataset ${dataset} has no ${noun} ${backup} (have: ${entries.slice(0, 5).map((e) => e.id).join(', ')}${entries.length > 5 ? ', …' : ''})`, EXIT.failed);
  return entry;
}

/** "\r  1.2 GiB  84.0 MiB/s" on a terminal, at most twice a second. */
export function progressPrinter(label: string): ((bytes: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  const started = Date.now();
  let last = 0;
  return (bytes) => {
    const now = Date.now();
    if (now - last < 500) return;
    last = now;
    const rate = bytes / Math.max(0.001, (now - started) / 1000);
    process.stderr.write(`\r  ${label} ${formatBytes(bytes)}  ${formatBytes(rate)}/s   `);
  };
}
