import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { formatIssues } from '../lib/config/issues.js';
import type { Config, Dataset } from '../lib/config/schema.js';
import { DRILL_FILE, MANIFEST_FILE, LIFEBOAT_RECORDS, VERIFY_FILE } from '../lib/catalog/layout.js';
import type { MetricsRecorder } from '../lib/metrics/recorder.js';
import { safeEqual } from '../lib/plumbing/secure.js';
import { verifyDedupeKey } from '../functions/verifyObject.js';
import { dedupeJobId } from '../queue/fanout.js';
import type { QueueSet } from '../queue/queues.js';

/** One record of an S3 event notification: the shape AWS, RGW and MinIO share. */
const recordSchema = z.object({
  eventName: z.string().min(1),
  /** Who sent it: "minio:s3" and "aws:s3" URL-encode the key, "ceph:s3" (RGW) sends it raw. */
  eventSource: z.string().optional(),
  eventTime: z.string().optional(),
  s3: z.object({
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({
      key: z.string().min(1),
      size: z.number().int().nonnegative().optional(),
      eTag: z.string().optional(),
      versionId: z.string().optional(),
    }),
  }),
});

/** MinIO adds EventName and Key around the records; AWS and RGW send only Records. */
export const notificationSchema = z.object({
  EventName: z.string().optional(),
  Key: z.string().optional(),
  Records: z.array(recordSchema).min(1).max(1000),
});

export interface ObjectCreated {
  bucket: string;
  key: string;
  size?: number;
  etag?: string;
  versionId?: string;
  /** When the sender saw the write (ISO 8601), if it said. */
  eventTime?: string;
}

export type NotificationRecord = z.infer<typeof recordSchema>;

export type Routed =
  | { verdict: 'verify'; dataset: Dataset; event: ObjectCreated }
  | { verdict: 'ignored'; reason: 'not-created' | 'unsafe-key' | 'unknown-bucket' | 'lifeboat-object' | 'mirror' }
  | { verdict: 'invalid'; error: string };

const OWN_FILES = new Set([MANIFEST_FILE, VERIFY_FILE, DRILL_FILE]);

/** S3 refuses longer keys; anything longer did not come from a real write. */
const MAX_KEY_BYTES = 1024;

/** Senders that query-escape the key ("+" for space, %XX). RGW (ceph:s3) copies it raw (rgw_notify.cc). */
const ENCODING_SOURCE = /^(aws|minio):/;

/**
 * The object key a record names. Decoded only for senders that encode it: decoding a raw RGW key would
 * turn "c++" into "c  " and throw on "100%". Throws URIError on a key its sender encoded badly.
 */
export function eventKey(record: Pick<NotificationRecord, 'eventSource' | 's3'>): string {
  const key = record.s3.object.key;
  return ENCODING_SOURCE.test(record.eventSource ?? '') ? decodeURIComponent(key.replace(/\+/g, ' ')) : key;
}

/** A key that climbs out of its folder, names a folder, or is too long never becomes a job (a dir target refuses it anyway). */
export function isUnsafeKey(key: string): boolean {
  return Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES || key.split('/').some((segment) => segment === '' || segment === '.' || segment === '..');
}

/**
 * What a notification record means for Lifeboat: an object created in a configured dataset's bucket and
 * prefix is verified; everything else is ignored, with a reason, or invalid. Never throws.
 */
export function route(record: NotificationRecord, config: Config): Routed {
  if (!/^(s3:)?ObjectCreated:/.test(record.eventName)) return { verdict: 'ignored', reason: 'not-created' };
  const bucket = record.s3.bucket.name;
  let key: string;
  try {
    key = eventKey(record);
  } catch (err) {
    return { verdict: 'invalid', error: `bad object key ${JSON.stringify(record.s3.object.key)} from ${record.eventSource ?? 'an unknown sender'}: ${(err as Error).message}` };
  }
  if (isUnsafeKey(key)) return { verdict: 'ignored', reason: 'unsafe-key' };
  if (key.startsWith(LIFEBOAT_RECORDS)) return { verdict: 'ignored', reason: 'lifeboat-object' };
  // The config check refuses overlapping prefixes; longest match still picks the most specific dataset.
  const candidates = config.datasets.filter((d) => d.target.bucket === bucket && key.startsWith(d.target.prefix));
  if (candidates.length === 0) return { verdict: 'ignored', reason: 'unknown-bucket' };
  const dataset = candidates.sort((a, b) => b.target.prefix.length - a.target.prefix.length)[0]!;
  const name = key.slice(key.lastIndexOf('/') + 1);
  if (OWN_FILES.has(name) || key.startsWith(`${dataset.target.prefix}${LIFEBOAT_RECORDS}`)) return { verdict: 'ignored', reason: 'lifeboat-object' };
  // A mirror's objects are checked by the mirror itself (listing pass and sha256 sample).
  if (dataset.kind === 'bucket') return { verdict: 'ignored', reason: 'mirror' };
  const { size, eTag, versionId } = record.s3.object;
  return {
    verdict: 'verify',
    dataset,
    event: { bucket, key, size, etag: eTag?.replace(/"/g, '') || undefined, versionId: versionId || undefined, eventTime: record.eventTime || undefined },
  };
}

/**
 * The job id verifyObject's own fan-out gives the same object, so one object version is verified once per
 * dedupe window. The window is the sender's eventTime (a redelivered event keeps it), else now.
 */
export function verifyJobId(target: string, event: ObjectCreated, now: Date = new Date()): string {
  const at = event.eventTime && !Number.isNaN(Date.parse(event.eventTime)) ? event.eventTime : now;
  return dedupeJobId('verifyObject', verifyDedupeKey({ target, bucket: event.bucket, key: event.key, etag: event.etag, version: event.versionId, at }));
}

/**
 * POST <path>: bucket notifications become verifyObject jobs. HEAD <path> answers 200 (MinIO probes it).
 * Bad input gets 4xx and creates nothing; auth is a bearer token compared in constant time.
 */
export async function registerWebhook(app: FastifyInstance, options: { config: Config; queues: QueueSet; recorder: MetricsRecorder }): Promise<void> {
  const { config, queues, recorder } = options;
  const hook = config.server.webhook;
  if (!hook.enabled) return;
  const expected = hook.token ? `Bearer ${hook.token.reveal()}` : undefined;
  const count = (result: string, by = 1) => recorder.count('lifeboat_webhook_events_total', { result }, by).catch(() => {});

  await app.register(async (scope) => {
    // Any content type (MinIO and RGW differ); the body is parsed here so that bad JSON is a clear 400.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string', bodyLimit: hook.maxBodyBytes }, (_req, body, done) => done(null, body));

    scope.head(hook.path, async (_req, reply) => reply.code(200).send());
    scope.post(hook.path, async (request, reply) => {
      if (expected && !safeEqual(request.headers.authorization ?? '', expected)) {
        await count('unauthorized');
        return reply.code(401).send({ error: 'missing or wrong bearer token' });
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(String(request.body ?? ''));
      } catch (err) {
        await count('invalid');
        return reply.code(400).send({ error: `body is not JSON: ${(err as Error).message}` });
      }
      const body = notificationSchema.safeParse(parsed);
      if (!body.success) {
        await count('invalid');
        return reply.code(400).send({ error: 'not an S3 event notification', problems: formatIssues(body.error) });
      }
      const routed = body.data.Records.map((r) => route(r, config));
      const invalid = routed.flatMap((r, i) => (r.verdict === 'invalid' ? [{ error: r.error, problem: `Records[${i}]: ${r.error}` }] : []));
      if (invalid.length) {
        // The whole body is refused, as for a wrong shape, so no record of it becomes a job.
        await count('invalid');
        return reply.code(400).send({ error: invalid[0]!.error, problems: invalid.map((i) => i.problem) });
      }
      let accepted = 0;
      const ignored: Record<string, number> = {};
      for (const r of routed) {
        if (r.verdict === 'invalid') continue;
        if (r.verdict === 'ignored') {
          ignored[r.reason] = (ignored[r.reason] ?? 0) + 1;
          continue;
        }
        const { dataset, event } = r;
        await queues.enqueue('verifyObject', { dataset: dataset.id, key: event.key, etag: event.etag, size: event.size, external: true }, { jobId: verifyJobId(dataset.target.name, event) });
        accepted += 1;
      }
      if (accepted) await count('accepted', accepted);
      for (const [reason, n] of Object.entries(ignored)) await count(`ignored-${reason}`, n);
      return reply.code(202).send({ accepted, ignored });
    });
  });
}
