import { z } from 'zod';

/** Every event a function can emit, with its payload schema. Subscribers receive the payload as input. */
export const eventSchemas = {
  /** A backup artifact and its manifest are on the target. */
  'backup.uploaded': z.object({
    dataset: z.string(),
    kind: z.string(),
    target: z.string(),
    bucket: z.string(),
    key: z.string(),
    manifestKey: z.string().optional(),
    etag: z.string().optional(),
    size: z.number().int().nonnegative(),
    /** What the backup holds, when the artifact is a report about it (a mirror's bytes). */
    dataBytes: z.number().int().nonnegative().optional(),
    /** When the data was captured, if earlier than the upload (an etcd snapshot): freshness counts from here. */
    takenAt: z.string().optional(),
    sha256: z.string().optional(),
    startedAt: z.string(),
    finishedAt: z.string(),
  }),
  /** A backup another tool wrote to the hub (Velero) was seen complete; it counts for freshness. */
  'backup.observed': z.object({
    dataset: z.string(),
    kind: z.string(),
    key: z.string(),
    finishedAt: z.string(),
    size: z.number().int().nonnegative().optional(),
  }),
  /** verifyObject re-read an artifact and it matched its manifest. */
  'backup.verified': z.object({
    dataset: z.string(),
    kind: z.string(),
    key: z.string(),
    size: z.number().int().nonnegative(),
    checkedAt: z.string(),
  }),
  /** replicateBackup brought a replica up to date: its newest verified copy, and how far behind the primary's newest it is. */
  'backup.replicated': z.object({
    dataset: z.string(),
    kind: z.string(),
    replica: z.string(),
    key: z.string(),
    /** The tick of the replica's newest verified backup. */
    backupAt: z.string(),
    checkedAt: z.string(),
    lagSeconds: z.number().nonnegative(),
    /** Backups the replica's retention wants that it still lacks. */
    pendingBackups: z.number().int().nonnegative().optional(),
  }),
  /** verifyObject found an artifact that does not match its manifest. */
  'backup.corrupt': z.object({
    dataset: z.string(),
    kind: z.string(),
    key: z.string(),
    checkedAt: z.string(),
    reason: z.string(),
  }),
  /** drillRestore restored a backup into a throwaway server and ran its checks. */
  'drill.completed': z.object({
    dataset: z.string(),
    kind: z.string(),
    key: z.string(),
    ok: z.boolean(),
    startedAt: z.string(),
    finishedAt: z.string(),
    failedChecks: z.array(z.string()),
  }),
  /** A full listing of a dataset's catalog (pruneCheck): which backups' newest check failed, replacing what events said. */
  'catalog.measured': z.object({
    dataset: z.string(),
    kind: z.string(),
    backups: z.number().int().nonnegative(),
    corruptKeys: z.array(z.string()),
    measuredAt: z.string(),
  }),
  /** pruneCheck measured what a target holds. */
  'capacity.measured': z.object({
    target: z.string(),
    usedBytes: z.number().nonnegative(),
    capacityBytes: z.number().positive().optional(),
    growthBytesPerDay: z.number().optional(),
    daysUntilFull: z.number().nonnegative().optional(),
    datasets: z.array(z.object({ dataset: z.string(), kind: z.string(), bytes: z.number().nonnegative() })),
    measuredAt: z.string(),
  }),
} as const;

export type EventName = keyof typeof eventSchemas;
export type EventPayload<E extends EventName> = z.infer<(typeof eventSchemas)[E]>;
export const eventNames = Object.keys(eventSchemas) as EventName[];
