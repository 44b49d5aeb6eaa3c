import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { formatIssues } from '../lib/config/issues.js';
import type { Config, Dataset } from '../lib/config/schema.js';
import { DRILL_FILE, MANIFEST_FILE, MIRROR_REPORTS, VERIFY_FILE } from '../lib/layout.js';
import type { MetricsRecorder } from '../lib/metrics/recorder.js';
import { safeEqual } from '../lib/secure.js';
import { verifyDedupeKey } from '../functions/verifyObject.js';
import { dedupeJobId } from '../queue/fanout.js';
import type { QueueSet } from '../queue/queues.js';

/** One record of an S3 event notification: the shape AWS, RGW and MinIO share. */
const recordSchema = z.object({
  eventName: z.string().min(1),
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
}

export type Routed =
  | { verdict: 'verify'; dataset: Dataset; event: ObjectCreated }
  | { verdict: 'ignored'; reason: 'not-created' | 'unknown-bucket' | 'lifeboat-object' | 'mirror' };

const OWN_FILES = new Set([MANIFEST_FILE, VERIFY_FILE, DRILL_FILE]);

/** Event keys arrive URL-encoded, with "+" for spaces. */
export function decodeEventKey(key: string): string {
  return decodeURIComponent(key.replace(/\+/g, ' '));
}

/**
 * What a notification record means for Lifeboat: an object created in a configured dataset's bucket and
 * prefix is verified; everything else is ignored, with a reason.
 */
export function route(record: z.infer<typeof recordSchema>, config: Config): Routed {
  if (!/^(s3:)?ObjectCreated:/.test(record.eventName)) return { verdict: 'ignored', reason: 'not-created' };
  const bucket = record.s3.bucket.name;
  const key = decodeEventKey(record.s3.object.key);
  const candidates = config.datasets.filter((d) => d.target.bucket === bucket && key.startsWith(d.target.prefix));
  if (candidates.length === 0) return { verdict: 'ignored', reason: 'unknown-bucket' };
  const dataset = candidates.sort((a, b) => b.target.prefix.length - a.target.prefix.length)[0]!;
  const name = key.slice(key.lastIndexOf('/') + 1);
  if (OWN_FILES.has(name) || key.startsWith(`${dataset.target.prefix}${MIRROR_REPORTS}`)) return { verdict: 'ignored', reason: 'lifeboat-object' };
  // A mirror's objects are checked by the mirror itself (listing pass and sha256 sample).
  if (dataset.kind === 'bucket') return { verdict: 'ignored', reason: 'mirror' };
  const { size, eTag, versionId } = record.s3.object;
  return { verdict: 'verify', dataset, event: { bucket, key, size, etag: eTag?.replace(/"/g, '') || undefined, versionId: versionId || undefined } };
}

/** The job id verifyObject's own fan-out gives the same object, so one object is verified once. */
export function verifyJobId(target: string, event: ObjectCreated): string {
  return dedupeJobId('verifyObject', verifyDedupeKey({ target, bucket: event.bucket, key: event.key, etag: event.etag, version: event.versionId }));
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
      let routed: Routed[];
      try {
        routed = body.data.Records.map((r) => route(r, config));
      } catch (err) {
        await count('invalid');
        return reply.code(400).send({ error: `bad object key: ${(err as Error).message}` });
      }
      let accepted = 0;
      const ignored: Record<string, number> = {};
      for (const r of routed) {
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
