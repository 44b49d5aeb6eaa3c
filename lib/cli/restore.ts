import type { Logger } from 'pino';
import { openLocal } from '../plumbing/deps.js';
import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import type { Config } from '../config/schema.js';
import { serverInfo } from '../postgres/connection.js';
import { dumpRoles } from '../postgres/restore.js';
import { chooseCheck, destinationRoles, requireDatabaseInBackup, restoreOneDatabase, restoreWholeCluster, RestoreRefusedError, type OneDatabase, type PostgresRestore, type RestoreSteps, type VerifyWhen } from '../postgres/restoreBackup.js';
import { LocalRunner } from '../postgres/runner.js';
import { decrypterFor } from '../crypto/identity.js';
import { findReplica, replicaDataset } from '../replica/view.js';
import { DecryptionError } from '../crypto/age.js';
import { CliError, EXIT, exitCodeOf, inlineRetries } from './exit.js';
import { formatBytes, table } from './format.js';
import { cliDataset, pickBackup, progressPrinter, readStep } from './steps.js';
import { restoreBucketCommand, type BucketRestoreCommandOptions } from './restoreBucket.js';
import { restoreEtcdCommand } from './restoreEtcd.js';


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

export interface RestoreOptions {
  dataset: string;
  backup: string;
  to?: string;
  force?: boolean;
  retries?: number;
  /** Restore only this database out of the pg_dumpall backup. */
  database?: string;
  /** ...under this name. */
  as?: string;
  /** Create the dump's roles that the destination lacks. */
  roles?: boolean;
  /** Print the backup's databases and exit. */
  list?: boolean;
  /** Print what a --database restore would do and exit. */
  dryRun?: boolean;
  /** Print the result as one JSON object on stdout. */
  json?: boolean;
  /** The age identity to decrypt with, instead of the dataset's encryption.identityFile. */
  identity?: string;
  /** Read the backup from this replica of the dataset instead of its target. */
  from?: string;
  /** When to check the sha256 (postgres): during the restore (default), first, or rely on a recent verification. */
  verify?: VerifyWhen;
}

export type { PostgresRestoreResult } from '../postgres/restoreBackup.js';

export type RestoreCliOptions = RestoreOptions & Omit<BucketRestoreCommandOptions, keyof RestoreOptions> & { toDir?: string };

const BUCKET_FLAGS = ['toTarget', 'toSource', 'toBucket', 'toPrefix', 'prefix', 'at', 'overwrite', 'concurrency'] as const;

/** The config with the dataset read from one of its replicas: the restore then never touches the primary target. */
function fromReplica(config: Config, datasetId: string, from: string): Config {
  const dataset = config.datasets.find((d) => d.id === datasetId);
  if (!dataset) return config; // the restore names the unknown dataset itself
  const replica = findReplica(dataset, from);
  if (typeof replica === 'string') throw new CliError(`--from: ${replica}`, EXIT.usage);
  return { ...config, datasets: config.datasets.map((d) => (d === dataset ? replicaDataset(d, replica) : d)) };
}

/** `lifeboat restore`: postgres into a server (`--to`), a bucket mirror into a bucket (`--to-target`/`--to-source`), etcd into a directory (`--to-dir`). */
export async function restoreByKind(original: Config, log: Logger, opts: RestoreCliOptions): Promise<number> {
  const config = opts.from === undefined ? original : fromReplica(original, opts.dataset, opts.from);
  if (!opts.json) return restoreFor(config, log, opts);
  // With --json a failure is a result too, so a script reads one object whatever happened.
  return restoreFor(config, log, opts).catch((err: unknown) => {
    process.stdout.write(`${JSON.stringify({ ok: false, dataset: opts.dataset, error: err instanceof Error ? err.message : String(err), exitCode: exitCodeOf(err) })}\n`);
    throw err;
  });
}

async function restoreFor(config: Config, log: Logger, opts: RestoreCliOptions): Promise<number> {
  const kind = config.datasets.find((d) => d.id === opts.dataset)?.kind;
  const bucketFlags = BUCKET_FLAGS.filter((f) => opts[f] !== undefined);
  if (kind === 'bucket') {
    if (opts.to !== undefined || opts.toDir !== undefined) throw new CliError(`dataset ${opts.dataset} is a bucket dataset: restore it into a bucket with --to-target <name> --to-bucket <bucket>, or --to-source`, EXIT.usage);
    return restoreBucketCommand(config, log, opts);
  }
  if (kind !== undefined && bucketFlags.length > 0) throw new CliError(`--${bucketFlags[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is for bucket datasets; dataset ${opts.dataset} is a ${kind} dataset`, EXIT.usage);
  if (kind === 'etcd') {
    if (opts.to !== undefined) throw new CliError(`dataset ${opts.dataset} is an etcd dataset: restore it into a directory with --to-dir, not --to`, EXIT.usage);
    const result = await restoreEtcdCommand(config, log, { dataset: opts.dataset, backup: opts.backup, toDir: opts.toDir ?? '', force: opts.force, retries: opts.retries, identity: opts.identity });
    if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    return EXIT.ok;
  }
  if (opts.toDir !== undefined && kind !== undefined) throw new CliError(`--to-dir is for etcd datasets; dataset ${opts.dataset} is a ${kind} dataset (use --to)`, EXIT.usage);
  await restoreCommand(config, log, opts);
  return EXIT.ok;
}

interface ManifestSource {
  databases?: string[];
  stats?: Record<string, { tables?: number; rowsEstimate?: number }>;
}

/**
 * `lifeboat restore`: needs only the target and the destination; no Redis, no cluster. The sha256 is
 * checked while the one read feeds psql (or first, see --verify); the output names the choice.
 */
export async function restoreCommand(config: Config, log: Logger, opts: RestoreOptions): Promise<void> {
  const dataset = cliDataset(config, opts.dataset, 'postgres');
  if (!opts.list && opts.to === undefined) throw new CliError('restore: --to <postgres-url> is required (except with --list)', EXIT.usage);
  if (!opts.database && (opts.as !== undefined || opts.roles || opts.dryRun)) throw new CliError('restore: --as, --roles and --dry-run need --database', EXIT.usage);
  const destination = opts.to === undefined ? undefined : new LocalRunner({ url: destinationUrl(opts.to) });
  const deps = openLocal(config, log);
  const out = (line: string) => process.stderr.write(`${line}\n`);
  // Only the steps that read are retried; the restore itself writes into the destination, so never twice.
  const policy = inlineRetries(opts.retries);
  try {
    const store = deps.storeFor(dataset);
    const entry = pickBackup(await readStep(`listing ${store.label}`, policy, () => listBackups(store, dataset)), dataset.id, opts.backup);
    const { manifest } = entry;
    if (opts.list) return printDatabases(entry);
    out(`backup ${entry.id} of ${dataset.id}: ${manifest.artifact.key} (${formatBytes(manifest.artifact.size)}, ${entry.status})`);
    if (entry.status === 'corrupt' && !opts.force) throw new CliError(`backup ${entry.id} failed verification; choose another with --backup, or --force`, EXIT.failed);
    const decrypt = await asCli(async () => decrypterFor(dataset, manifest, `restore backup ${entry.id}`, opts.identity));
    const job: PostgresRestore = { store, entry, destination: destination!, force: opts.force ?? false, decrypt, verify: opts.verify };
    const one: OneDatabase | undefined = opts.database === undefined ? undefined : { database: opts.database, as: opts.as, roles: opts.roles ?? false };
    if (one && opts.dryRun) return await asCli(() => dryRunOneDatabase(job, one, policy));
    const steps = cliSteps(policy, out);
    const result = await asCli(() => (one ? restoreOneDatabase(job, one, steps) : restoreWholeCluster(job, steps)));
    if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await deps.close();
  }
}

/** `--list`: the databases of a backup with the dump-time figures of its manifest. */
function printDatabases(entry: BackupEntry): void {
  const source = entry.manifest.source as ManifestSource;
  const databases = source.databases ?? [];
  process.stdout.write(`backup ${entry.id} of ${entry.dataset}: ${formatBytes(entry.manifest.artifact.size)} in all, ${databases.length} databases (${entry.status})\n`);
  const rows = databases.map((db) => {
    const stats = source.stats?.[db];
    return [db, stats?.tables === undefined ? '?' : String(stats.tables), stats?.rowsEstimate === undefined ? '?' : String(stats.rowsEstimate)];
  });
  process.stdout.write(`${table([['DATABASE', 'TABLES', 'ROWS (EST.)'], ...rows])}\n`);
}

/** The CLI's side of the shared restore steps: lines and the progress bar on stderr, reads retried per --retries. */
function cliSteps(policy: ReturnType<typeof inlineRetries>, out: (line: string) => void): RestoreSteps {
  let printer: { phase: string; print?: (bytes: number) => void } | undefined;
  const endLine = () => {
    if (printer?.print) process.stderr.write('\n');
  };
  return {
    say: (line) => {
      endLine();
      printer = undefined;
      out(line);
    },
    read: (what, step) => readStep(what, policy, step),
    progress: (phase, bytes, total) => {
      if (printer?.phase !== phase) {
        endLine();
        printer = { phase, print: progressPrinter(phase, { bytes: total }) };
      }
      printer.print?.(bytes);
    },
  };
}

/** Refusals and failed restores exit 1, as a failed job would. */
async function asCli<T>(restore: () => Promise<T>): Promise<T> {
  try {
    return await restore();
  } catch (err) {
    if (err instanceof RestoreRefusedError || err instanceof DecryptionError) throw new CliError(err.message, EXIT.failed);
    throw err;
  }
}

/**
 * `--database NAME --dry-run`: reads only the start of the artifact (its roles) and the destination's
 * catalogs, and says what a restore would do.
 */
const listNames = (names: string[]) => names.map((n) => JSON.stringify(n)).join(', ');

async function dryRunOneDatabase(job: PostgresRestore, opts: OneDatabase, policy: ReturnType<typeof inlineRetries>): Promise<void> {
  const { store, entry: { id, manifest }, destination } = job;
  requireDatabaseInBackup(job.entry, opts.database);
  const targetName = opts.as ?? opts.database;
  const described = targetName === opts.database ? JSON.stringify(targetName) : `${JSON.stringify(opts.database)} as ${JSON.stringify(targetName)}`;
  const dumpRoleNames = await readStep(`reading the roles of ${manifest.artifact.key}`, policy, () => dumpRoles(store, manifest, { decrypt: job.decrypt }));
  const { present, roles } = await readStep(`connecting to ${destination.label}`, policy, async () => ({ present: (await serverInfo(destination)).databases, roles: await destinationRoles(destination) }));
  const missing = dumpRoleNames.filter((r) => !roles.has(r));
  const say = (line: string) => process.stdout.write(`${line}\n`);
  say(`dry run: nothing was changed`);
  const check = chooseCheck(job, { fresh: `database ${JSON.stringify(targetName)}`, notFresh: present.includes(targetName) ? [targetName] : [] });
  say(`would restore database ${described} from backup ${id} into ${destination.label}, reading ${manifest.artifact.key} (${formatBytes(manifest.artifact.size)}); sha256: ${check.detail}`);
  if (present.includes(targetName)) say(`${destination.label} already has database ${JSON.stringify(targetName)}: the restore would refuse${job.force ? ' (but --force is given)' : ' without --force'}`);
  if (opts.roles) say(`roles to create: ${missing.length ? listNames(missing) : 'none'} (only those missing at the destination; existing roles are left as they are)`);
  else say(`roles to create: none (without --roles)${missing.length ? `; missing at the destination: ${listNames(missing)}: objects they own are left to the restoring user, their grants dropped` : ''}`);
}
