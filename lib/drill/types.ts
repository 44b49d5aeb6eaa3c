import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { DecryptionError } from '../crypto/age.js';
import { requireDecrypter } from '../crypto/identity.js';
import type { Check } from '../catalog/manifest.js';
import type { Deps } from '../plumbing/deps.js';

/** What a drill of any kind gets from drillRestore. */
export interface DrillScope {
  deps: Deps;
  log: Logger;
  signal: AbortSignal;
  /** The scheduled tick: without a named backup, a drill picks the newest one at or before it, so a retry drills the same one. */
  tick: Date;
}

/** One drill's outcome, before drillRestore writes it as drill.json and emits drill.completed. */
export interface DrillResult {
  /** The backup drilled: its id and the key of its artifact (a report, a snapshot, a Velero backup). */
  backup: string;
  key: string;
  /** Where drill.json goes: beside the artifact, or under _lifeboat/ for backups another tool wrote. */
  recordKey: string;
  mode: string;
  /** Where it ran ("temp dir /tmp/…", "scratch namespace lifeboat-drill-x"). */
  where: string;
  restoreMs: number;
  checks: Check[];
  /** A failure that says nothing about the backup (a scratch server that did not start); the job may retry it. */
  retryable?: unknown;
  /** Kind-specific figures kept in drill.json (revision and keys of an etcd snapshot, objects compared). */
  details?: Record<string, unknown>;
}

export type Drill<D> = (dataset: D, scope: DrillScope, input: { backup?: string }) => Promise<DrillResult>;

/**
 * The decrypting stage a drill needs (none for plaintext), or, when no identity opens the backup here,
 * the drill's result: a recorded, final failure before anything is started. The drill proves the key too.
 */
export function drillDecrypter(
  encrypted: boolean,
  dataset: { id: string; encryption?: { identityFile?: string } },
  purpose: string,
  notStarted: Omit<DrillResult, 'checks' | 'restoreMs' | 'retryable'>,
): { decrypt?: () => Duplex } | { result: DrillResult } {
  if (!encrypted) return {};
  try {
    return { decrypt: requireDecrypter(dataset, purpose) };
  } catch (err) {
    if (!(err instanceof DecryptionError)) throw err;
    return { result: { ...notStarted, restoreMs: 0, checks: [{ name: 'decrypt', ok: false, detail: err.message }], retryable: undefined } };
  }
}
