import type { Duplex } from 'node:stream';
import type { BackupEntry } from '../catalog/catalog.js';
import { hashStream } from '../targets/hash.js';
import type { TargetStore } from '../targets/store.js';
import { PermanentError } from '../../queue/errors.js';
import { serverInfo } from './connection.js';
import { DatabaseNotInDumpError } from './dumpallSections.js';
import { age } from '../cli/format.js';
import { restoreDatabase, restoreDump, type RestoreOutcome, type StreamCounters } from './restore.js';
import type { VerifyWhen } from './verifyWhen.js';
import type { LocalRunner } from './runner.js';

/**
 * A pg_dumpall backup into a PostgreSQL server, whole or one database: the steps `lifeboat restore`
 * and the restoreBackup job share. The artifact's sha256 is checked while it streams into psql (one
 * read); a mismatch fails the restore and drops what it created. Where a mismatch could not be undone
 * (databases that existed before, --force) a first full read checks it before the destination is
 * touched, unless a recent passed verification of the same bytes vouches for it.
 */

/** Databases every cluster has; a dump "contains" them without creating them. */
export const BUILTIN_DATABASES = new Set(['postgres', 'template1', 'template0']);

/** The restore will not run, or did not finish cleanly: the backup or the destination is the problem, not the network. */
export class RestoreRefusedError extends PermanentError {
  override name = 'RestoreRefusedError';
}

/** What was read does not match the manifest: the backup is corrupt. The message says what was dropped and what was not. */
export class BackupMismatchError extends RestoreRefusedError {
  override name = 'BackupMismatchError';
}

export { VERIFY_WHEN, type VerifyWhen } from './verifyWhen.js';

/** How old a passed verification may be for `recent` to rely on it: a week, the drill's rhythm. */
export const RECENT_VERIFICATION_MS = 7 * 24 * 3600_000;

/** The choice made, as the output and the JSON result show it. */
export interface Sha256Check {
  /** `during`: one read, checked at its end; `first`: a read before the restore; `recent`: a verification relied on (and checked during). */
  mode: VerifyWhen;
  /** The line the restore printed, e.g. "checking sha256 while restoring (fails and drops the database on mismatch)". */
  detail: string;
  /** `recent`: when the verification relied on ran. */
  verifiedAt?: string;
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
  /** When and how the sha256 was checked. */
  sha256Check: Sha256Check;
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
  /** When to check the sha256; undefined: during, except where a mismatch could not be undone (see chooseCheck). */
  verify?: VerifyWhen;
  /** For "verified 2 h ago"; default the wall clock. */
  now?: () => Date;
}

interface ManifestSource {
  databases?: string[];
  stats?: Record<string, { tables?: number }>;
}

export const databasesOf = (entry: BackupEntry): string[] | undefined => (entry.manifest.source as ManifestSource).databases;
const listNames = (names: string[]) => names.map((n) => JSON.stringify(n)).join(', ');
const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

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
    throw new BackupMismatchError(`refusing to restore: sha256 mismatch: ${manifest.artifact.key} does not match its manifest (expected sha256 ${manifest.artifact.sha256}, ${manifest.artifact.size} bytes; read ${sha256}, ${size} bytes); nothing was written`);
  }
  steps.say('sha256 matches the manifest');
}

const TRIGGERS: Record<string, string> = { upload: 'verifyObject after the upload', scrub: 'the scrub', manual: 'lifeboat verify', retention: 'pruneCheck', replicate: 'replicateBackup', rekey: 'lifeboat rekey' };

/** A passed verification of exactly these bytes within RECENT_VERIFICATION_MS, or why there is none. */
export function recentVerification(entry: BackupEntry, now: Date): { at: Date; by: string } | { none: string } {
  if (entry.status !== 'verified' || !entry.verify?.ok || !entry.checkedAt) {
    return { none: entry.changedSinceVerified ? `its verification no longer holds (${entry.changedSinceVerified})` : `it is ${entry.status}` };
  }
  const ageMs = now.getTime() - entry.checkedAt.getTime();
  // A record from the future is a skewed clock: beyond a few minutes it vouches for nothing.
  if (ageMs > RECENT_VERIFICATION_MS || ageMs < -5 * 60_000) return { none: `its last verification ran ${ageMs > 0 ? age(entry.checkedAt, now) : `at ${entry.checkedAt.toISOString()}, in the future`}, not within 7 d` };
  return { at: entry.checkedAt, by: TRIGGERS[entry.verify.trigger ?? ''] ?? 'a verification' };
}

/**
 * When to check the sha256. A backup known to be bad (its last verification failed, or the object's
 * size is not the manifest's) is always checked first: it would only be refused later. Otherwise as
 * asked; by default during, except where a mismatch could not be undone (`notFresh`: databases that
 * exist already): there a recent verification is relied on, else the check runs first.
 */
export function chooseCheck(job: PostgresRestore, target: { fresh: string; notFresh: string[] }): Sha256Check {
  const { entry, destination } = job;
  const { artifact } = entry.manifest;
  const now = (job.now ?? (() => new Date()))();
  const before = `before touching ${destination.label}`;
  const first = (why: string): Sha256Check => ({ mode: 'first', detail: `checking sha256 first, ${before} (${why})` });
  if (entry.artifact && entry.artifact.size !== artifact.size) return first(`the object is ${entry.artifact.size} bytes on the target, the manifest says ${artifact.size}`);
  if (entry.status === 'corrupt') return first('its last verification failed');
  if (job.verify === 'first') return first('--verify first');
  const existing = target.notFresh.length > 0 ? `${target.notFresh.length === 1 ? 'database' : 'databases'} ${listNames(target.notFresh)} ${target.notFresh.length === 1 ? 'exists' : 'exist'} already` : '';
  if (job.verify === 'recent' || (job.verify === undefined && existing)) {
    const recent = recentVerification(entry, now);
    const why = job.verify === 'recent' ? '--verify recent' : `${existing}: a mismatch there could not be undone`;
    if ('none' in recent) return first(`${why}, and no passed verification within 7 d vouches for these bytes: ${recent.none}`);
    return { mode: 'recent', verifiedAt: recent.at.toISOString(), detail: `verified ${age(recent.at, now)} by ${recent.by}; not re-hashed first (${why}); the sha256 is still checked while restoring` };
  }
  const onMismatch = existing ? `--verify during: on a mismatch, ${existing} and cannot be dropped` : `fails and drops ${target.fresh} on mismatch`;
  return { mode: 'during', detail: `checking sha256 while restoring (${onMismatch})` };
}

function resultOf({ entry: { id, dataset, manifest }, destination }: PostgresRestore, restored: { sha256: string; durationMs: number }, sha256Check: Sha256Check): Omit<PostgresRestoreResult, 'restored'> {
  return { ok: true, dataset, backup: id, key: manifest.artifact.key, bytes: manifest.artifact.size, sha256: restored.sha256, destination: destination.label, durationMs: restored.durationMs, sha256Check };
}

const restoringProgress = (job: PostgresRestore, steps: RestoreSteps) => steps.progress && ((bytes: number) => steps.progress!('restoring', bytes, job.entry.manifest.artifact.size));

/** What the destination had before the restore wrote anything: what a failed check may drop is only what is new. */
interface Before {
  databases: string[];
  roles: Set<string>;
  /** The databases the restore writes into, by the names they get at the destination. */
  restoring: string[];
}

/**
 * Runs the streaming restore and checks what it read against the manifest. A stage that failed midway
 * (gunzip, decryption, the cutter) on a corrupt object is a mismatch too: the object is read once more
 * to name its sha256. On a mismatch, the databases and roles the restore created are dropped, and the
 * error says what could not be.
 */
async function restoreChecked<T extends RestoreOutcome>(job: PostgresRestore, steps: RestoreSteps, before: Before, check: Sha256Check, restore: (observe: (c: StreamCounters) => void) => Promise<T>): Promise<T> {
  const { artifact } = job.entry.manifest;
  let counters: StreamCounters | undefined;
  let restored: T;
  try {
    restored = await restore((c) => (counters = c));
  } catch (err) {
    // psql got nothing (no identity matched, a header that does not parse): nothing to undo or re-read.
    if (!counters || counters.plaintextBytes() === 0 || steps.signal?.aborted) throw err;
    const reread = await steps.read(`re-reading ${artifact.key}`, async () => hashStream(await job.store.get(artifact.key, { signal: steps.signal }))).catch(() => undefined);
    if (!reread || (reread.sha256 === artifact.sha256 && reread.size === artifact.size)) throw err;
    throw await mismatch(job, before, `read ${reread.sha256}, ${reread.size} bytes (the restore stopped: ${(err as Error).message})`);
  }
  if (restored.sha256 !== artifact.sha256 || restored.bytes !== artifact.size) {
    throw await mismatch(job, before, `read ${restored.sha256}, ${restored.bytes} bytes${check.mode === 'first' ? ', though the first pass matched: the object changed between the two reads' : ''}`);
  }
  if (artifact.encryption && restored.plaintextSha256 !== artifact.encryption.plaintext.sha256) {
    throw await mismatch(job, before, `the ciphertext matches, but the decrypted dump's sha256 is ${restored.plaintextSha256}, the manifest's plaintext sha256 ${artifact.encryption.plaintext.sha256}: what was restored is not what was dumped`);
  }
  // Said before psql's errors: those are about the destination, not the backup.
  steps.say(check.mode === 'first' ? 'sha256 matches the manifest again after the restore' : 'sha256 matches the manifest (checked while restoring)');
  if (restored.errors.length > 0) {
    for (const e of restored.errors.slice(0, 20)) steps.say(`  ${e}`);
    throw new RestoreRefusedError(`restore finished with ${restored.errors.length} errors: ${restored.errors.slice(0, 3).join('; ')}`);
  }
  return restored;
}

/** Drops what the restore created and builds the error naming expected and actual sha256, what was dropped and what was left. */
async function mismatch(job: PostgresRestore, before: Before, read: string): Promise<BackupMismatchError> {
  const { entry, destination } = job;
  const { artifact } = entry.manifest;
  const headline = `sha256 mismatch: ${artifact.key} (backup ${entry.id} of ${entry.dataset}) is corrupt: expected sha256 ${artifact.sha256}, ${artifact.size} bytes (the manifest); ${read}`;
  const created = before.restoring.filter((db) => !before.databases.includes(db));
  const existed = before.restoring.filter((db) => before.databases.includes(db) && !BUILTIN_DATABASES.has(db));
  const dropped: string[] = [];
  const failed: string[] = [];
  const info = await serverInfo(destination).catch(() => undefined);
  for (const db of created) {
    if (info && !info.databases.includes(db)) continue; // the stream stopped before it was created
    const force = (info?.versionNum ?? 0) >= 130000 ? ' with (force)' : '';
    await destination.run('psql', ['-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', `drop database if exists ${quoteIdent(db)}${force}`]).then(
      () => dropped.push(`database ${JSON.stringify(db)}`),
      (err: unknown) => failed.push(`database ${JSON.stringify(db)} (${(err as Error).message.split('\n')[0]})`),
    );
  }
  const rolesNow = await destinationRoles(destination).catch(() => new Set<string>());
  for (const role of [...rolesNow].filter((r) => !before.roles.has(r))) {
    await destination.run('psql', ['-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', `drop role if exists ${quoteIdent(role)}`]).then(
      () => dropped.push(`role ${JSON.stringify(role)}`),
      (err: unknown) => failed.push(`role ${JSON.stringify(role)} (${(err as Error).message.split('\n')[0]})`),
    );
  }
  // What cannot be told apart from what was there: data in databases that existed, builtin ones with tables in the dump.
  const stats = (entry.manifest.source as ManifestSource).stats ?? {};
  const kept = [
    ...existed.map((db) => `database ${JSON.stringify(db)} (it existed before: --force)`),
    ...before.restoring.filter((db) => BUILTIN_DATABASES.has(db) && (stats[db]?.tables ?? 0) > 0).map((db) => `database ${JSON.stringify(db)} (${stats[db]!.tables} tables from the dump restored into it)`),
    ...failed.map((what) => `${what}: could not be dropped`),
  ];
  const parts = [headline + '.'];
  if (dropped.length > 0) parts.push(`Dropped what the restore created: ${dropped.join(', ')}.`);
  if (kept.length > 0) {
    parts.push(`The restored data came from a corrupt backup and was NOT dropped from ${destination.label}: ${kept.join('; ')}. Do not use it: drop or rebuild those (or restore them from a good backup with --force).`);
  } else {
    parts.push(`${destination.label} holds nothing from this backup.`);
  }
  parts.push(`Restore another backup (lifeboat backups ls --dataset ${entry.dataset}; --backup <id>), and run lifeboat verify ${entry.dataset} --backup ${entry.id} to record the finding.`);
  return new BackupMismatchError(parts.join(' '));
}

/** The whole pg_dumpall; refuses (without writing) when the destination already has one of its databases. */
export async function restoreWholeCluster(job: PostgresRestore, steps: RestoreSteps): Promise<PostgresRestoreResult> {
  const { store, entry: { manifest }, destination } = job;
  const { present, roles } = await steps.read(`connecting to ${destination.label}`, async () => ({ present: (await serverInfo(destination)).databases, roles: await destinationRoles(destination) }));
  const inDump = databasesOf(job.entry) ?? [];
  const databases = inDump.filter((db) => !BUILTIN_DATABASES.has(db));
  const collisions = databases.filter((db) => present.includes(db));
  if (collisions.length > 0 && !job.force) {
    throw new RestoreRefusedError(`${destination.label} already has ${collisions.length === 1 ? 'database' : 'databases'} ${collisions.join(', ')} from this dump; restoring would mix old and new data. Use a fresh server, drop them, or pass --force.`);
  }
  const check = chooseCheck(job, { fresh: 'the databases it creates', notFresh: collisions });
  steps.say(check.detail);
  if (check.mode === 'first') await verifyArtifact(job, steps);
  const before: Before = { databases: present, roles, restoring: inDump };
  const restored = await restoreChecked(job, steps, before, check, (observe) => restoreDump(store, manifest, destination, { signal: steps.signal, onProgress: restoringProgress(job, steps), decrypt: job.decrypt, observe }));
  steps.say(`restored ${databases.length} databases (${databases.join(', ')}) into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  return { ...resultOf(job, restored, check), restored: { databases } };
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
  const { present, roles } = await steps.read(`connecting to ${destination.label}`, async () => ({ present: (await serverInfo(destination)).databases, roles: await destinationRoles(destination) }));
  if (present.includes(targetName) && !job.force) {
    throw new RestoreRefusedError(`${destination.label} already has database ${JSON.stringify(targetName)}; restoring into it would mix old and new data. Drop it, choose another name with --as, or pass --force.`);
  }
  const check = chooseCheck(job, { fresh: `database ${JSON.stringify(targetName)}`, notFresh: present.includes(targetName) ? [targetName] : [] });
  steps.say(check.detail);
  if (check.mode === 'first') await verifyArtifact(job, steps);
  let restored;
  try {
    restored = await restoreChecked(job, steps, { databases: present, roles, restoring: [targetName] }, check, (observe) =>
      restoreDatabase(store, manifest, destination, { database: opts.database, renameTo: opts.as, existingRoles: roles, createMissingRoles: opts.roles }, { signal: steps.signal, onProgress: restoringProgress(job, steps), decrypt: job.decrypt, observe }));
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
  steps.say(`restored database ${described} into ${destination.label} in ${(restored.durationMs / 1000).toFixed(1)} s`);
  return { ...resultOf(job, restored, check), restored: { database: opts.database, as: targetName, rolesCreated, rolesMissing: droppedForMissingRole } };
}
