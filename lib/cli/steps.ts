import { retrying } from '../../queue/inline.js';
import type { BackupEntry } from '../catalog/catalog.js';
import type { Config, Dataset } from '../config/schema.js';
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

/**
 * "\r  restoring 1.2 GiB of 3.4 GiB (35%)  84.0 MiB/s  ETA 27 s" on a terminal, at most twice a second;
 * without a known total, bytes and rate only. Nothing when stderr is not a terminal.
 */
export function progressPrinter(label: string, total?: { bytes: number; objects?: number }): ((bytes: number, objects?: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  const started = Date.now();
  let last = 0;
  return (bytes, objects) => {
    const now = Date.now();
    if (now - last < 500) return;
    last = now;
    process.stderr.write(`\r  ${progressLine(label, { bytes, objects }, (now - started) / 1000, total)}   `);
  };
}

/** One progress line: what is done, of what, how fast, and how long the rest will take at that rate. */
export function progressLine(label: string, done: { bytes: number; objects?: number }, seconds: number, total?: { bytes: number; objects?: number }): string {
  const rate = done.bytes / Math.max(0.001, seconds);
  const objects = done.objects === undefined ? '' : `, ${done.objects}${total?.objects === undefined ? '' : ` of ${total.objects}`} objects`;
  if (!total || total.bytes <= 0) return `${label} ${formatBytes(done.bytes)}${objects}  ${formatBytes(rate)}/s`;
  const percent = Math.min(100, (done.bytes / total.bytes) * 100);
  // Before the first percent (a dump's schema, a slow first byte) the rate says little: no ETA yet.
  const settled = done.bytes >= total.bytes / 100;
  const eta = rate > 0 && settled ? Math.max(0, (total.bytes - done.bytes) / rate) : undefined;
  return `${label} ${formatBytes(done.bytes)} of ${formatBytes(total.bytes)} (${percent.toFixed(0)}%)${objects}  ${formatBytes(rate)}/s  ETA ${eta === undefined ? '?' : formatDuration(eta)}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** The dataset a command names (of `kind`, when given); anything else exits 2 before anything runs. */
export function cliDataset<K extends Dataset['kind']>(config: Config, id: string, kind?: K): Extract<Dataset, { kind: K }> {
  const dataset = config.datasets.find((d) => d.id === id);
  if (!dataset) throw new CliError(`no dataset "${id}" in the config (known: ${config.datasets.map((d) => d.id).join(', ') || 'none'})`, EXIT.usage);
  if (kind && dataset.kind !== kind) throw new CliError(`dataset ${id} is a ${dataset.kind} dataset, not ${kind}`, EXIT.usage);
  return dataset as Extract<Dataset, { kind: K }>;
}
