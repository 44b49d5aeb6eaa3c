import { pipeline, type Duplex, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Manifest } from '../catalog/manifest.js';
import { HashingStream } from '../targets/hash.js';
import { progressTap } from '../targets/progress.js';
import type { TargetStore } from '../targets/store.js';
import { DatabaseSectionCutter, rolesInGlobals, type SectionCutOptions, type SectionCutSummary } from './dumpallSections.js';
import type { PostgresRunner } from './runner.js';

export interface RestoreOutcome {
  /** Bytes read from the target (as stored, before decryption and gunzip). */
  bytes: number;
  sha256: string;
  /** Of an encrypted artifact: sha256 of the SQL that reached psql, for the manifest's plaintext hash. */
  plaintextSha256?: string;
  /** Errors psql reported, less the expected one (the bootstrap superuser already exists). */
  errors: string[];
  durationMs: number;
}

/** Errors every restore of a pg_dumpall into a fresh cluster produces, and that mean nothing. */
const EXPECTED_ERRORS = [/role "postgres" already exists/];

export function unexpectedErrors(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((line) => /\bERROR:/.test(line))
    .map((line) => line.replace(/^psql:[^:]*:\d+:\s*/, '').trim())
    .filter((line) => !EXPECTED_ERRORS.some((re) => re.test(line)));
}

/**
 * Streams a pg_dumpall artifact from the target through gunzip into psql on `runner`, hashing what it
 * reads. psql keeps going past errors (the dump's own CREATE ROLE for the superuser always fails on a
 * fresh cluster); the errors are returned for the caller to judge.
 */
export async function restoreDump(
  store: TargetStore,
  manifest: Manifest,
  runner: PostgresRunner,
  options: FeedOptions = {},
): Promise<RestoreOutcome> {
  return feedPsql(store, manifest, runner, [], options);
}

export interface DatabaseRestoreOutcome extends RestoreOutcome {
  /** What the cut found and changed: roles created, statements dropped for missing roles. */
  cut: SectionCutSummary;
}

/**
 * Restores one database out of a pg_dumpall artifact: target → gunzip → the section cutter → psql,
 * streamed end to end (memory does not grow with the dump). The whole artifact is read, so its sha256
 * can be compared with the manifest. Errors psql reported are returned, as for restoreDump;
 * a database missing from the dump, or a dump without its trailer, throws (the cutter's errors).
 */
export async function restoreDatabase(
  store: TargetStore,
  manifest: Manifest,
  runner: PostgresRunner,
  cut: SectionCutOptions,
  options: FeedOptions = {},
): Promise<DatabaseRestoreOutcome> {
  const cutter = new DatabaseSectionCutter(cut);
  return { ...(await feedPsql(store, manifest, runner, [cutter], options)), cut: cutter.summary };
}

export interface FeedOptions {
  signal?: AbortSignal;
  onProgress?: (bytes: number) => void;
  /** The age decrypting stage, for an encrypted artifact (lib/crypto/identity.ts). */
  decrypt?: () => Duplex;
  /** Sees the counters as the stream starts, so a caller can tell after a failed stage how far it got. */
  observe?: (counters: StreamCounters) => void;
}

/** What went through the stream so far: stored bytes read (hashed), and bytes handed on towards psql. */
export interface StreamCounters {
  stored: HashingStream;
  /** Bytes of SQL that left decryption (encrypted artifacts; else the stored count): 0 means psql got nothing. */
  plaintextBytes(): number;
}

/** The stored bytes, decrypted and decompressed as the manifest says: hashed on both sides of that. */
function artifactText(source: Readable, manifest: Manifest, options: FeedOptions, after: NodeJS.ReadWriteStream[] = []) {
  const stored = new HashingStream();
  const stages: Array<NodeJS.ReadWriteStream> = [stored];
  if (options.onProgress) stages.push(progressTap(options.onProgress));
  if (manifest.artifact.encryption) {
    if (!options.decrypt) throw new Error(`${manifest.artifact.key} is age-encrypted and no identity was given to decrypt it`);
    stages.push(options.decrypt());
  }
  if (manifest.artifact.compression === 'gzip') stages.push(createGunzip());
  // The plaintext hash only where the manifest has one to compare (encrypted): a second sha256 of every byte is not free.
  const plaintext = manifest.artifact.encryption ? new HashingStream() : undefined;
  if (plaintext) stages.push(plaintext);
  // Unencrypted, the stored count stands in: only a decryption failure needs to know psql got nothing.
  const counters: StreamCounters = { stored, plaintextBytes: () => plaintext?.bytes ?? stored.bytes };
  options.observe?.(counters);
  const text = pipeline([source, ...stages, ...after] as unknown as [Readable, ...NodeJS.ReadWriteStream[]], () => {}) as unknown as Readable;
  return { text, stored, plaintext };
}

/** The stored bytes through the hash (and progress), decryption, gunzip and any further stages, into psql. */
async function feedPsql(store: TargetStore, manifest: Manifest, runner: PostgresRunner, after: NodeJS.ReadWriteStream[], options: FeedOptions): Promise<RestoreOutcome> {
  const started = Date.now();
  const source = await store.get(manifest.artifact.key, { signal: options.signal });
  const { text: sql, stored, plaintext } = artifactText(source, manifest, options, after);
  const { stderr } = await runner.feed('psql', ['-q', '-v', 'ON_ERROR_STOP=0', '-f', '-'], sql, { signal: options.signal });
  if (sql.errored) throw sql.errored;
  return {
    bytes: stored.bytes, sha256: stored.sha256, plaintextSha256: plaintext?.sha256,
    errors: unexpectedErrors(stderr), durationMs: Date.now() - started,
  };
}

/** The roles a pg_dumpall artifact creates, from its globals part only: reads just the start of it. */
export async function dumpRoles(store: TargetStore, manifest: Manifest, options: { signal?: AbortSignal; decrypt?: () => Duplex } = {}): Promise<string[]> {
  const source = await store.get(manifest.artifact.key, { signal: options.signal });
  const { text } = artifactText(source, manifest, options);
  try {
    return await rolesInGlobals(text as AsyncIterable<Buffer>);
  } finally {
    text.destroy();
    source.destroy();
  }
}
