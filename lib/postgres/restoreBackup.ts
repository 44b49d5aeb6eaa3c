import type { Duplex } from 'node:stream';
import type { BackupEntry } from '../catalog/catalog.js';
import { hashStream } from '../targets/hash.js';
import type { TargetStore } from '../targets/store.js';
import { PermanentError } from '../../queue/errors.js';
import { serverInfo } from './connection.js';
import { DatabaseNotInDumpError } from './dumpallSections.js';
import { restoreDatabase, restoreDump } from './restore.js';
import type { LocalRunner } from './runner.js';

/**
 * A pg_dumpall backup into a PostgreSQL server, whole or one database: the steps `lifeboat restore`
 * and the restoreBackup job share. The artifact's sha256 is checked in a first full read before the
 * destination is touched; the second read feeds psql and is hashed again.
 */

/** Databases every cluster has; a dump "contains" them without creating them. */
export const BUILTIN_DATABASES = new Set(['postgres', 'template1', 'template0']);

/** The restore will not run, or did not finish cleanly: the backup or the destination is the problem, not the network. */
export class RestoreRefusedError extends PermanentError {
  override name = 'RestoreRefusedError';
}

/** What `restore --json` prints, and the restoreBackup job returns, for a postgres restore. */
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

export interface RestoreSteps {
  /** A line for the operator (the CLI's stderr, the job's log). */
  say(line: string): void;
  /** Runs a step that only reads (the CLI retries those); the restore itself is never retried. */
  read<T>(what: string, step: () => Promise<T>): Promise<T>;
  progress?(phase: 'verifying' | 'restoring', bytes: number, total: number): void;
  signal?: AbortSignal;
}

export interface PostgresRestore {
  store: TargetStore;
  entry: BackupEntry;
  destination: LocalRunner;
  /** Restore into databases that already exist (mixing old and new data). */
  force: boolean;
  /** The age decrypting stage, when the artifact is encrypted (lib/crypto/identity.ts decrypterFor). */
  decrypt?: () => Duplex;
}

interface ManifestSource {
  databases?: string[];
}

export const databasesOf = (entry: BackupEntry): string[] | undefined => (entry.manifest.source as ManifestSource).databases;
const listNames = (names: string[]) => names.map((n) => JSON.stringify(n)).join(', ');

/** The first pass: the whole artifact against its manifest. */
export async function verifyArtifact({ store, entry: { manifest } }: PostgresRestore, steps: RestoreSteps): Promise<void> {
  const { sha256, size } = await steps.read(`reading ${manifest.artifact.key}`, async () => {
    const stream = await store.get(manifest.artifact.key, { signal: steps.signal });
    if (steps.progress) {
      let bytes = 0;
      stream.on('data', (c: Buffer) => steps.progress!('verifying', (bytes += c.length), manifest.artifact.size));
    }
    return hashStream(stream);
  });
  if (sha256 !== manifest.artifact.sha256 || size !== manifest.artifact.size) {
    throw new RestoreRefusedError(`refusing to restore: ${manifest.artifact.key} does not match its manifest (sha256 ${sha256}, ${size} bytes; manifest ${manifest.artifact.sha256}, ${manifest.artifact.size} bytes)`);
  }
  steps.say('sha256 matches the manifest');
}

function resultOf({ entry: { id, dataset, manifest }, destination }: PostgresRestore, restored: { sha256: string; durationMs: number }): Omit<PostgresRestoreResult, 'restored'> {
  return { ok: true, dataset, backup: id, key: manifest.artifact.key, bytes: manifest.artifact.size, sha256: restored.sha256, destination: destination.label, durationMs: restored.durationMs };
}

const restoringProgress = (job: PostgresRestore, steps: RestoreSteps) => steps.progress && ((bytes: number) => steps.progress!('restoring', bytes, job.entry.manifest.artifact.size));

function checkRestored(restored: { sha256: string; plaintextSha256?: string; errors: string[] }, job: PostgresRestore, steps: RestoreSteps): void {
  const { artifact } = job.entry.manifest;
  if (restored.sha256 !== artifact.sha256) throw new RestoreRefusedError('the object changed between the verification pass and the restore; run the restore again');
  if (artifact.encryption && restored.plaintextSha256 !== artifact.encryption.plaintext.sha256) {
    throw new RestoreRefusedError(`the decrypted dump's sha256 ${restored.plaintextSha256} differs from the manifest's ${artifact.encryption.plaintext.sha256}: what was restored is not what was dumped`);
  }
  if (restored.errors.length > 0) {
    for (const e of restored.errors.slice(0, 20)) steps.say(`  ${e}`);
    throw new RestoreRefusedError(`restore finished with ${restored.errors.length} errors: ${restored.errors.slice(0, 3).join('; ')}`);
  }
}

/** The whole pg_dumpall; refuses (without writing) when the destination already has one of its databases. */
export async function restoreWholeCluster(job: PostgresRestore, steps: RestoreSteps): Promise<PostgresRestoreResult> {
  const { store, entry: { manifest }, destination } = job;
  await verifyArtifact(job, steps);
  const present = new Set((await steps.read(`connecting to ${destination.label}`, () => serverInfo(destination))).databases);
  const databases = (databasesOf(job.entry) ?? []).filter((db) => !BUILTIN_DATABASES.has(db));
  const collisions = databases.filter((db) => present.has(db));
  if (collisions.length > 0 && !job.force) {
    throw new RestoreRefusedError(`${destination.label} already has ${collisions.length === 1 ? 'database' : 'databases'} ${collisions.join(', ')} from this dump; restoring would mix old and new data. Use a fresh server, drop them, or pass --force.`);
  }
  const restored = await restoreDump(store, manifest, destination, { signal: steps.signal, onProgress: restoringProgress(job, steps), decrypt: job.decrypt });
  checkRestored(restored, job, steps);
  steps.say(`restored ${databases.length} databases (${databases.join(', ')}) into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  return { ...resultOf(job, restored), restored: { databases } };
}

/** Roles at the destination, read before anything is written: --roles creates only the others. */
export async function destinationRoles(runner: LocalRunner): Promise<Set<string>> {
  const out = await runner.run('psql', ['-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', 'select rolname from pg_roles']);
  return new Set(out.split('\n').filter((line) => line !== ''));
}

export interface OneDatabase {
  database: string;
  /** ...under this name. */
  as?: string;
  /** Create the dump's roles that the destination lacks. */
  roles: boolean;
}

/** The backup's databases, or a refusal naming them when `database` is not one. */
export function requireDatabaseInBackup(entry: BackupEntry, database: string): void {
  const inBackup = databasesOf(entry);
  if (inBackup && !inBackup.includes(database)) throw new RestoreRefusedError(`backup ${entry.id} has no database ${JSON.stringify(database)} (it has: ${listNames(inBackup)})`);
}

/** One database's section of the pg_dumpall, cut from the stream on its way to psql, optionally renamed. */
export async function restoreOneDatabase(job: PostgresRestore, opts: OneDatabase, steps: RestoreSteps): Promise<PostgresRestoreResult> {
  const { store, entry: { id, manifest }, destination } = job;
  requireDatabaseInBackup(job.entry, opts.database);
  const targetName = opts.as ?? opts.database;
  const described = targetName === opts.database ? JSON.stringify(targetName) : `${JSON.stringify(opts.database)} as ${JSON.stringify(targetName)}`;
  await verifyArtifact(job, steps);
  const { present, roles } = await steps.read(`connecting to ${destination.label}`, async () => ({ present: (await serverInfo(destination)).databases, roles: await destinationRoles(destination) }));
  if (present.includes(targetName) && !job.force) {
    throw new RestoreRefusedError(`${destination.label} already has database ${JSON.stringify(targetName)}; restoring into it would mix old and new data. Drop it, choose another name with --as, or pass --force.`);
  }
  let restored;
  try {
    restored = await restoreDatabase(store, manifest, destination, { database: opts.database, renameTo: opts.as, existingRoles: roles, createMissingRoles: opts.roles }, { signal: steps.signal, onProgress: restoringProgress(job, steps), decrypt: job.decrypt });
  } catch (err) {
    if (err instanceof DatabaseNotInDumpError) throw new RestoreRefusedError(`backup ${id} has no database ${JSON.stringify(err.database)} (it has: ${listNames(err.databases)})`);
    throw err;
  }
  const { rolesCreated, droppedForMissingRole } = restored.cut;
  if (rolesCreated.length > 0) steps.say(`created roles missing at the destination: ${listNames(rolesCreated)}`);
  const dropped = Object.entries(droppedForMissingRole);
  if (dropped.length > 0) {
    steps.say(`roles missing at the destination: ${dropped.map(([role, n]) => `${JSON.stringify(role)} (${n} ${n === 1 ? 'statement' : 'statements'})`).join(', ')}; ownership was left to the restoring user and their grants were dropped (--roles creates them)`);
  }
  checkRestored(restored, job, steps);
  steps.say(`restored database ${described} into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  return { ...resultOf(job, restored), restored: { database: opts.database, as: targetName, rolesCreated, rolesMissing: droppedForMissingRole } };
}
