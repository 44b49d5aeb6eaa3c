import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import { retrying, runInline } from '../../queue/inline.js';
import { DrillFailedError } from '../../queue/errors.js';
import { openLocal } from '../plumbing/app.js';
import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import type { Config, PostgresDataset } from '../config/schema.js';
import { drillRecordSchema } from '../catalog/manifest.js';
import { serverInfo } from '../postgres/connection.js';
import { restoreDump } from '../postgres/restore.js';
import { LocalRunner } from '../postgres/runner.js';
import { hashStream } from '../targets/hash.js';
import { CliError, EXIT, exitCodeOf, inlineRetries, isUnreachable } from './exit.js';
import { formatBytes, table } from './format.js';

/** Databases every cluster has; a dump "contains" them without creating them. */
const BUILTIN_DATABASES = new Set(['postgres', 'template1', 'template0']);

function postgresDataset(config: Config, id: string): PostgresDataset {
  const dataset = config.datasets.find((d) => d.id === id);
  if (!dataset) throw new CliError(`no dataset "${id}" in the config (known: ${config.datasets.map((d) => d.id).join(', ') || 'none'})`, EXIT.usage);
  if (dataset.kind !== 'postgres') throw new CliError(`dataset ${id} is a ${dataset.kind} dataset, not postgres`, EXIT.usage);
  return dataset;
}

/**
 * `--to`, checked before anything is read: a postgres:// or postgresql:// URL. A password in it is no
 * problem (LocalRunner moves it to PGPASSWORD), but it is never echoed back, not even in this message.
 */
export function destinationUrl(to: string): string {
  let url: URL;
  try {
    url = new URL(to);
  } catch {
    throw new CliError('--to: not a URL; expected postgres://user@host:port/database (a Unix socket: postgresql:///postgres?host=/run/postgresql)', EXIT.usage);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw new CliError(`--to: a ${url.protocol}// URL is no PostgreSQL server; expected postgres:// or postgresql://`, EXIT.usage);
  return to;
}

/**
 * A step that only reads, retried by the command's policy. Its last failure exits 3 if the target or
 * the destination could not be reached, else 1.
 */
function readStep<T>(what: string, policy: ReturnType<typeof inlineRetries>, step: () => Promise<T>): Promise<T> {
  return retrying(what, step, { attempts: policy.retries.attempts, delayMs: () => policy.retries.backoffMs, onAttemptFailed: policy.onAttemptFailed }).catch((err: unknown) => {
    throw new CliError(`${what}: ${err instanceof Error ? err.message : String(err)}`, isUnreachable(err) ? EXIT.unavailable : EXIT.failed);
  });
}

function pick(entries: BackupEntry[], dataset: string, backup: string): BackupEntry {
  const entry = backup === 'latest' ? entries[0] : entries.find((e) => e.id === backup);
  if (!entry) throw new CliError(backup === 'latest' ? `dataset ${dataset} has no backups on its target` : `dataset ${dataset} has no backup ${backup} (have: ${entries.slice(0, 5).map((e) => e.id).join(', ')}${entries.length > 5 ? ', …' : ''})`, EXIT.failed);
  return entry;
}

/** "\r  1.2 GiB  84.0 MiB/s" on a terminal, at most twice a second. */
function progressPrinter(label: string): ((bytes: number) => void) | undefined {
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

/**
 * `lifeboat restore`: needs only the target and the destination; no Redis, no cluster. The sha256 is
 * checked in a first full read before the destination is touched; the second read feeds psql.
 */
export async function restoreCommand(config: Config, log: Logger, opts: { dataset: string; backup: string; to: string; force?: boolean; retries?: number }): Promise<void> {
  const dataset = postgresDataset(config, opts.dataset);
  const destination = new LocalRunner({ url: destinationUrl(opts.to) });
  const deps = openLocal(config, log);
  const out = (line: string) => process.stderr.write(`${line}\n`);
  // Only the steps that read are retried; the restore itself writes into the destination, so never twice.
  const policy = inlineRetries(opts.retries);
  try {
    const store = deps.storeFor(dataset);
    const entry = pick(await readStep(`listing ${store.label}`, policy, () => listBackups(store, dataset)), dataset.id, opts.backup);
    const { manifest } = entry;
    out(`backup ${entry.id} of ${dataset.id}: ${manifest.artifact.key} (${formatBytes(manifest.artifact.size)}, ${entry.status})`);
    if (entry.status === 'corrupt' && !opts.force) throw new CliError(`backup ${entry.id} failed verification; choose another with --backup, or --force`, EXIT.failed);

    const verifyProgress = progressPrinter('verifying');
    const { sha256, size } = await readStep(`reading ${manifest.artifact.key}`, policy, async () => {
      const stream = await store.get(manifest.artifact.key);
      if (verifyProgress) {
        let bytes = 0;
        stream.on('data', (c: Buffer) => verifyProgress((bytes += c.length)));
      }
      return hashStream(stream);
    });
    if (verifyProgress) process.stderr.write('\n');
    if (sha256 !== manifest.artifact.sha256 || size !== manifest.artifact.size) {
      throw new CliError(`refusing to restore: ${manifest.artifact.key} does not match its manifest (sha256 ${sha256}, ${size} bytes; manifest ${manifest.artifact.sha256}, ${manifest.artifact.size} bytes)`, EXIT.failed);
    }
    out('sha256 matches the manifest');

    const present = new Set((await readStep(`connecting to ${destination.label}`, policy, () => serverInfo(destination))).databases);
    const databases = ((manifest.source as { databases?: string[] }).databases ?? []).filter((db) => !BUILTIN_DATABASES.has(db));
    const collisions = databases.filter((db) => present.has(db));
    if (collisions.length > 0 && !opts.force) {
      throw new CliError(`${destination.label} already has ${collisions.length === 1 ? 'database' : 'databases'} ${collisions.join(', ')} from this dump; restoring would mix old and new data. Use a fresh server, drop them, or pass --force.`, EXIT.failed);
    }

    const restored = await restoreDump(store, manifest, destination, { onProgress: progressPrinter('restoring') });
    if (process.stderr.isTTY) process.stderr.write('\n');
    if (restored.sha256 !== manifest.artifact.sha256) throw new CliError('the object changed between the verification pass and the restore; run the restore again', EXIT.failed);
    if (restored.errors.length > 0) {
      for (const e of restored.errors.slice(0, 20)) out(`  ${e}`);
      throw new CliError(`restore finished with ${restored.errors.length} errors`, EXIT.failed);
    }
    out(`restored ${databases.length} databases (${databases.join(', ')}) into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  } finally {
    await deps.close();
  }
}

/** `lifeboat drill`: the drillRestore function, inline, then its check table. */
export async function drillCommand(config: Config, log: Logger, opts: { dataset: string; backup?: string; retries?: number }): Promise<number> {
  const dataset = postgresDataset(config, opts.dataset);
  const deps = openLocal(config, log);
  const policy = inlineRetries(opts.retries);
  try {
    const store = deps.storeFor(dataset);
    const entries = await readStep(`listing ${store.label}`, policy, () => listBackups(store, dataset));
    const entry = opts.backup ? pick(entries, dataset.id, opts.backup) : entries.find((e) => e.status === 'verified');
    if (!entry) throw new CliError(`dataset ${dataset.id} has no verified backup to drill`, EXIT.failed);
    const [result] = await runInline(allFunctions, 'drillRestore', { dataset: dataset.id, backup: entry.id }, deps, policy);
    // The table of this drill only: the one the function returned, or the one its failure carries.
    const raw = result?.ok ? result.result : result?.failure instanceof DrillFailedError ? result.failure.record : undefined;
    const record = drillRecordSchema.safeParse(raw);
    if (record.success) {
      process.stdout.write(`${table([['CHECK', 'RESULT', 'DETAIL'], ...record.data.checks.map((c) => [c.name, c.ok ? 'ok' : 'FAILED', c.detail])])}\n`);
      process.stdout.write(`drill of ${dataset.id} backup ${entry.id}: ${record.data.ok ? 'passed' : 'FAILED'} in ${(record.data.durationMs / 1000).toFixed(1)} s (restore ${(record.data.restoreMs / 1000).toFixed(1)} s, ${record.data.where})\n`);
    }
    if (!result?.ok) process.stderr.write(`lifeboat: ${result?.error}\n`);
    return result?.ok ? EXIT.ok : exitCodeOf(result?.failure);
  } finally {
    await deps.close();
  }
}
