import { z } from 'zod';

/** manifest.json: written once beside each backup artifact, after the artifact is complete. */
export const manifestSchema = z.object({
  format: z.literal('lifeboat.manifest/v1'),
  dataset: z.string(),
  kind: z.string(),
  tick: z.string(),
  artifact: z.object({
    key: z.string(),
    size: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    etag: z.string().optional(),
    compression: z.enum(['gzip', 'none']),
    contentType: z.string(),
    /** What the content check looks for, e.g. "pg_dumpall". */
    format: z.string(),
    /**
     * Set when the stored bytes are age ciphertext: size, sha256 and etag above are the ciphertext's;
     * plaintext is what went in before compression and encryption. No key is ever recorded.
     */
    encryption: z
      .object({
        scheme: z.literal('age'),
        /** recipientFingerprint of each recipient. */
        recipients: z.array(z.string()).min(1),
        plaintext: z.object({ size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
        /** When `lifeboat rekey` re-encrypted the artifact to these recipients (absent: as first written). */
        rekeyedAt: z.string().optional(),
      })
      .optional(),
  }),
  source: z.record(z.string(), z.unknown()),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number().nonnegative(),
  writer: z.object({ lifeboat: z.string(), jobId: z.string(), attempt: z.number().int() }),
});
export type Manifest = z.infer<typeof manifestSchema>;

export const checkSchema = z.object({ name: z.string(), ok: z.boolean(), detail: z.string() });
export type Check = z.infer<typeof checkSchema>;

/** Why a verification ran: the upload's fan-out or a notification, the scrub, a CLI request, or retention re-proving a copy it keeps. */
export const verifyTriggers = ['upload', 'scrub', 'manual', 'retention', 'replicate', 'rekey'] as const;
export type VerifyTrigger = (typeof verifyTriggers)[number];

/** One past result in verify.json's history, newest first. */
export const verifyHistoryEntrySchema = z.object({
  checkedAt: z.string(),
  ok: z.boolean(),
  trigger: z.enum(verifyTriggers).optional(),
  /** The failed checks, when not ok. */
  reason: z.string().optional(),
});
export type VerifyHistoryEntry = z.infer<typeof verifyHistoryEntrySchema>;

/** How many past results verify.json keeps. */
export const VERIFY_HISTORY = 10;

/**
 * verify.json: the newest result of re-reading the artifact, plus a short history; a separate object,
 * never an edit of the manifest. The backup's status is the newest result.
 */
export const verifyRecordSchema = z.object({
  format: z.literal('lifeboat.verify/v1'),
  dataset: z.string(),
  key: z.string(),
  ok: z.boolean(),
  checkedAt: z.string(),
  durationMs: z.number().nonnegative(),
  trigger: z.enum(verifyTriggers).optional(),
  expected: z.object({ size: z.number(), sha256: z.string() }),
  /** What was read; etag and lastModified as the target reported them, so the catalog sees a later overwrite. */
  actual: z.object({ size: z.number(), sha256: z.string(), etag: z.string().optional(), lastModified: z.string().optional() }),
  checks: z.array(checkSchema),
  /** For a backup another tool wrote (Velero): when it completed, as it says itself. */
  completedAt: z.string().optional(),
  /** This result and the ones before it, newest first (at most VERIFY_HISTORY). */
  history: z.array(verifyHistoryEntrySchema).optional(),
});
export type VerifyRecord = z.infer<typeof verifyRecordSchema>;

/** drill.json: the result of restoring a backup into a throwaway server and checking it. */
export const drillRecordSchema = z.object({
  format: z.literal('lifeboat.drill/v1'),
  dataset: z.string(),
  backup: z.string(),
  key: z.string(),
  ok: z.boolean(),
  /** How it ran: 'local' or 'kubernetes' (Postgres), 'scratch-prefix' (a mirror), 'temp-dir' (etcd); older records hold only the first two. */
  mode: z.string(),
  where: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number().nonnegative(),
  restoreMs: z.number().nonnegative(),
  checks: z.array(checkSchema),
  /** Kind-specific figures (objects compared, an etcd snapshot's revision and keys). */
  details: z.record(z.string(), z.unknown()).optional(),
});
export type DrillRecord = z.infer<typeof drillRecordSchema>;

export const LIFEBOAT_VERSION = '0.1.0';
