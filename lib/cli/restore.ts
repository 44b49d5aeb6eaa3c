import { InvalidArgumentError } from 'commander';
import type { Logger } from 'pino';
import { openLocal } from '../plumbing/app.js';
import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import type { Config } from '../config/schema.js';
import { serverInfo } from '../postgres/connection.js';
import { checkDatabaseName, DatabaseNotInDumpError } from '../postgres/dumpallSections.js';
import { dumpRoles, restoreDatabase, restoreDump } from '../postgres/restore.js';
import { LocalRunner } from '../postgres/runner.js';
import { hashStream } from '../targets/hash.js';
import type { TargetStore } from '../targets/store.js';
import { CliError, EXIT, exitCodeOf, inlineRetries } from './exit.js';
import { formatBytes, table } from './format.js';
import { cliDataset, pickBackup, progressPrinter, readStep } from './steps.js';
import { restoreBucketCommand, type BucketRestoreCommandOptions } from './restoreBucket.js';
import { restoreEtcdCommand } from './restoreEtcd.js';

/** Databases every cluster has; a dump "contains" them without creating them. */
const BUILTIN_DATABASES = new Set(['postgres', 'template1', 'template0']);


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
}

/** What `restore --json` prints for a postgres restore. */
export interface PostgresRestoreResult {
  ok: true;
  dataset: string;
  backup: string;
  key: string;
  bytes: number;
  sha256: string;
  destination: string;
  durationMs: number;
  /** The whole pg_dumpall, or one database out of it. */
  restored: { databases: string[] } | { database: string; as: string; rolesCreated: string[]; rolesMissing: Record<string, number> };
}

export type RestoreCliOptions = RestoreOptions & Omit<BucketRestoreCommandOptions, keyof RestoreOptions> & { toDir?: string };

const BUCKET_FLAGS = ['toTarget', 'toSource', 'toBucket', 'toPrefix', 'prefix', 'at', 'overwrite', 'concurrency'] as const;

/** `lifeboat restore`: postgres into a server (`--to`), a bucket mirror into a bucket (`--to-target`/`--to-source`), etcd into a directory (`--to-dir`). */
export async function restoreByKind(config: Config, log: Logger, opts: RestoreCliOptions): Promise<number> {
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
    const result = await restoreEtcdCommand(config, log, { dataset: opts.dataset, backup: opts.backup, toDir: opts.toDir ?? '', force: opts.force, retries: opts.retries });
    if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    return EXIT.ok;
  }
  if (opts.toDir !== undefined && kind !== undefined) throw new CliError(`--to-dir is for etcd datasets; dataset ${opts.dataset} is a ${kind} dataset (use --to)`, EXIT.usage);
  await restoreCommand(config, log, opts);
  return EXIT.ok;
}

/** `--as`: a name that can be quoted safely, else exit 2 before anything runs. */
export function parseTargetDatabase(value: string): string {
  try {
    return checkDatabaseName(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

interface ManifestSource {
  databases?: string[];
  stats?: Record<string, { tables?: number; rowsEstimate?: number }>;
}

/**
 * `lifeboat restore`: needs only the target and the destination; no Redis, no cluster. The sha256 is
 * checked in a first full read before the destination is touched; the second read feeds psql.
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
    const job: RestoreJob = { store, entry, destination: destination!, policy, out, force: opts.force ?? false };
    const result = opts.database !== undefined ? await restoreOneDatabase(job, { database: opts.database, as: opts.as, roles: opts.roles ?? false, dryRun: opts.dryRun ?? false }) : await restoreWholeCluster(job);
    if (result && opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await deps.close();
  }
}

interface RestoreJob {
  store: TargetStore;
  entry: BackupEntry;
  destination: LocalRunner;
  policy: ReturnType<typeof inlineRetries>;
  out: (line: string) => void;
  force: boolean;
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

/** The first pass: the whole artifact against its manifest, before the destination is touched. */
async function verifyArtifact({ store, entry: { manifest }, policy, out }: RestoreJob): Promise<void> {
  const verifyProgress = progressPrinter('verifying', { bytes: manifest.artifact.size });
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
}

async function restoreWholeCluster(job: RestoreJob): Promise<PostgresRestoreResult> {
  const { store, entry: { manifest }, destination, policy, out } = job;
  await verifyArtifact(job);

  const present = new Set((await readStep(`connecting to ${destination.label}`, policy, () => serverInfo(destination))).databases);
  const databases = ((manifest.source as ManifestSource).databases ?? []).filter((db) => !BUILTIN_DATABASES.has(db));
  const collisions = databases.filter((db) => present.has(db));
  if (collisions.length > 0 && !job.force) {
    throw new CliError(`${destination.label} already has ${collisions.length === 1 ? 'database' : 'databases'} ${collisions.join(', ')} from this dump; restoring would mix old and new data. Use a fresh server, drop them, or pass --force.`, EXIT.failed);
  }

  const restored = await restoreDump(store, manifest, destination, { onProgress: progressPrinter('restoring', { bytes: manifest.artifact.size }) });
  if (process.stderr.isTTY) process.stderr.write('\n');
  if (restored.sha256 !== manifest.artifact.sha256) throw new CliError('the object changed between the verification pass and the restore; run the restore again', EXIT.failed);
  if (restored.errors.length > 0) {
    for (const e of restored.errors.slice(0, 20)) out(`  ${e}`);
    throw new CliError(`restore finished with ${restored.errors.length} errors`, EXIT.failed);
  }
  out(`restored ${databases.length} databases (${databases.join(', ')}) into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  return { ...resultOf(job, restored), restored: { databases } };
}

function resultOf({ entry: { id, dataset, manifest }, destination }: RestoreJob, restored: { sha256: string; durationMs: number }): Omit<PostgresRestoreResult, 'restored'> {
  return { ok: true, dataset, backup: id, key: manifest.artifact.key, bytes: manifest.artifact.size, sha256: restored.sha256, destination: destination.label, durationMs: restored.durationMs };
}

/** Roles at the destination, read before anything is written: --roles creates only the others. */
async function destinationRoles(runner: LocalRunner): Promise<Set<string>> {
  const out = await runner.run('psql', ['-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', 'select rolname from pg_roles']);
  return new Set(out.split('\n').filter((line) => line !== ''));
}

const listNames = (names: string[]) => names.map((n) => JSON.stringify(n)).join(', ');

/**
 * `--database NAME [--as NEWNAME] [--roles] [--dry-run]`: one database's section of the pg_dumpall
 * backup, cut from the stream on its way to psql.
 */
async function restoreOneDatabase(job: RestoreJob, opts: { database: string; as?: string; roles: boolean; dryRun: boolean }): Promise<PostgresRestoreResult | undefined> {
  const { store, entry: { id, manifest }, destination, policy, out } = job;
  const inBackup = (manifest.source as ManifestSource).databases;
  // The manifest says what the dump holds; the cutter checks again while it reads.
  if (inBackup && !inBackup.includes(opts.database)) throw new CliError(`backup ${id} has no database ${JSON.stringify(opts.database)} (it has: ${listNames(inBackup)})`, EXIT.failed);
  const targetName = opts.as ?? opts.database;
  const described = targetName === opts.database ? JSON.stringify(targetName) : `${JSON.stringify(opts.database)} as ${JSON.stringify(targetName)}`;

  if (opts.dryRun) {
    // Reads only: the start of the artifact (its roles) and the destination's catalogs.
    const dumpRoleNames = await readStep(`reading the roles of ${manifest.artifact.key}`, policy, () => dumpRoles(store, manifest));
    const { present, roles } = await readStep(`connecting to ${destination.label}`, policy, async () => ({ present: (await serverInfo(destination)).databases, roles: await destinationRoles(destination) }));
    const missing = dumpRoleNames.filter((r) => !roles.has(r));
    const say = (line: string) => process.stdout.write(`${line}\n`);
    say(`dry run: nothing was changed`);
    say(`would check the sha256 of ${manifest.artifact.key} (${formatBytes(manifest.artifact.size)}), then restore database ${described} from backup ${id} into ${destination.label}`);
    if (present.includes(targetName)) say(`${destination.label} already has database ${JSON.stringify(targetName)}: the restore would refuse${job.force ? ' (but --force is given)' : ' without --force'}`);
    if (opts.roles) say(`roles to create: ${missing.length ? listNames(missing) : 'none'} (only those missing at the destination; existing roles are left as they are)`);
    else say(`roles to create: none (without --roles)${missing.length ? `; missing at the destination: ${listNames(missing)}: objects they own are left to the restoring user, their grants dropped` : ''}`);
    return;
  }

  await verifyArtifact(job);
  const { present, roles } = await readStep(`connecting to ${destination.label}`, policy, async () => ({ present: (await serverInfo(destination)).databases, roles: await destinationRoles(destination) }));
  if (present.includes(targetName) && !job.force) {
    throw new CliError(`${destination.label} already has database ${JSON.stringify(targetName)}; restoring into it would mix old and new data. Drop it, choose another name with --as, or pass --force.`, EXIT.failed);
  }

  let restored;
  try {
    restored = await restoreDatabase(store, manifest, destination, { database: opts.database, renameTo: opts.as, existingRoles: roles, createMissingRoles: opts.roles }, { onProgress: progressPrinter('restoring', { bytes: manifest.artifact.size }) });
  } catch (err) {
    if (err instanceof DatabaseNotInDumpError) throw new CliError(`backup ${id} has no database ${JSON.stringify(err.database)} (it has: ${listNames(err.databases)})`, EXIT.failed);
    throw err;
  }
  if (process.stderr.isTTY) process.stderr.write('\n');
  if (restored.sha256 !== manifest.artifact.sha256) throw new CliError('the object changed between the verification pass and the restore; run the restore again', EXIT.failed);
  const { rolesCreated, droppedForMissingRole } = restored.cut;
  if (rolesCreated.length > 0) out(`created roles missing at the destination: ${listNames(rolesCreated)}`);
  const dropped = Object.entries(droppedForMissingRole);
  if (dropped.length > 0) {
    out(`roles missing at the destination: ${dropped.map(([role, n]) => `${JSON.stringify(role)} (${n} ${n === 1 ? 'statement' : 'statements'})`).join(', ')}; ownership was left to the restoring user and their grants were dropped (--roles creates them)`);
  }
  if (restored.errors.length > 0) {
    for (const e of restored.errors.slice(0, 20)) out(`  ${e}`);
    throw new CliError(`restore finished with ${restored.errors.length} errors`, EXIT.failed);
  }
  out(`restored database ${described} into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  return { ...resultOf(job, restored), restored: { database: opts.database, as: targetName, rolesCreated, rolesMissing: droppedForMissingRole } };
}
