import type { Logger } from 'pino';
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
