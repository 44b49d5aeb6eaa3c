import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Manifest } from '../catalog/manifest.js';
import { HashingStream } from '../targets/hash.js';
import { progressTap } from '../targets/progress.js';
import type { TargetStore } from '../targets/store.js';
import { DatabaseSectionCutter, rolesInGlobals, type SectionCutOptions, type SectionCutSummary } from './dumpallSections.js';
import type { PostgresRunner } from './runner.js';

export interface RestoreOutcome {
  /** Bytes read from the target (as stored, before gunzip). */
  bytes: number;
  sha256: string;
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
  options: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {},
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
 * can be compared with the verification pass. Errors psql reported are returned, as for restoreDump;
 * a database missing from the dump, or a dump without its trailer, throws (the cutter's errors).
 */
export async function restoreDatabase(
  store: TargetStore,
  manifest: Manifest,
  runner: PostgresRunner,
  cut: SectionCutOptions,
  options: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {},
): Promise<DatabaseRestoreOutcome> {
  const cutter = new DatabaseSectionCutter(cut);
  return { ...(await feedPsql(store, manifest, runner, [cutter], options)), cut: cutter.summary };
}

/** The stored bytes through the hash (and progress), gunzip and any further stages, into psql. */
async function feedPsql(
  store: TargetStore,
  manifest: Manifest,
  runner: PostgresRunner,
  after: NodeJS.ReadWriteStream[],
  options: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
): Promise<RestoreOutcome> {
  const started = Date.now();
  const hashing = new HashingStream();
  const source = await store.get(manifest.artifact.key, { signal: options.signal });
  const stages: Array<NodeJS.ReadWriteStream> = [hashing];
  if (options.onProgress) stages.push(progressTap(options.onProgress));
  if (manifest.artifact.compression === 'gzip') stages.push(createGunzip());
  const sql = pipeline([source, ...stages, ...after] as unknown as [Readable, ...NodeJS.ReadWriteStream[]], () => {}) as unknown as Readable;
  const { stderr } = await runner.feed('psql', ['-q', '-v', 'ON_ERROR_STOP=0', '-f', '-'], sql, { signal: options.signal });
  if (sql.errored) throw sql.errored;
  return { bytes: hashing.bytes, sha256: hashing.sha256, errors: unexpectedErrors(stderr), durationMs: Date.now() - started };
}

/** The roles a pg_dumpall artifact creates, from its globals part only: reads just the start of it. */
export async function dumpRoles(store: TargetStore, manifest: Manifest, options: { signal?: AbortSignal } = {}): Promise<string[]> {
  const source = await store.get(manifest.artifact.key, { signal: options.signal });
  const text = manifest.artifact.compression === 'gzip' ? source.pipe(createGunzip()) : source;
  source.on('error', (err) => text.destroy(err));
  try {
    return await rolesInGlobals(text as AsyncIterable<Buffer>);
  } finally {
    text.destroy();
    source.destroy();
  }
}
