import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { headersOf, putHeaders, type ObjectHeaders } from '../targets/headers.js';
import { wrapForMirror } from './headers.js';

export { SOURCE_ETAG_METADATA } from './headers.js';

export interface CopySpec {
  /** With versionId, that version (a restore from a versioned hub); else exactly the ETag the listing saw. */
  source: { client: S3Client; bucket: string; key: string; etag: string; size: number; versionId?: string };
  destination: { client: S3Client; bucket: string; key: string };
  /** The destination's headers from the source's; default: the source's, with the source ETag and a headers fingerprint recorded. */
  headers?: (source: ObjectHeaders) => ObjectHeaders;
  /** Looks at the source's ETag and headers before anything is written; a reason returned refuses the copy. */
  refuse?: (etag: string, source: ObjectHeaders) => string | undefined;
  multipartThreshold: number;
  partSize: number;
  /** Parts of one object in flight at once. */
  partConcurrency: number;
  signal?: AbortSignal;
}

/** The source object is not what the caller will copy (see CopySpec.refuse); nothing was written. */
export class CopyRefusedError extends Error {
  override name = 'CopyRefusedError';
}

async function get(spec: CopySpec, range?: { start: number; end: number }) {
  // IfMatch: copy exactly the version the listing saw; if it changed since, the next run picks it up.
  return spec.source.client.send(
    new GetObjectCommand({
      Bucket: spec.source.bucket,
      Key: spec.source.key,
      ...(spec.source.versionId ? { VersionId: spec.source.versionId } : { IfMatch: spec.source.etag }),
      Range: range ? `bytes=${range.start}-${range.end}` : undefined,
    }),
    { abortSignal: spec.signal },
  );
}

/**
 * Copies one object between two S3 servers, streaming: small objects as one PUT of the GET body (so
 * the destination ETag is the same MD5 as the source's), large ones in parts, each part a ranged GET
 * streamed into UploadPart. Every header a client sees (Content-Type, -Encoding, -Disposition,
 * -Language, Cache-Control, Expires) and the user metadata are kept.
 */
export async function copyObject(spec: CopySpec): Promise<void> {
  const { source, destination } = spec;
  const headers = (r: Parameters<typeof headersOf>[0]) => putHeaders((spec.headers ?? ((h) => wrapForMirror(h, source.etag)))(headersOf(r)));
  const check = (r: Parameters<typeof headersOf>[0] & { ETag?: string; Body?: unknown }) => {
    const reason = spec.refuse?.(r.ETag ?? '', headersOf(r));
    if (reason === undefined) return;
    (r.Body as Readable | undefined)?.destroy();
    throw new CopyRefusedError(`${source.key}: ${reason}`);
  };
  if (source.size <= spec.multipartThreshold) {
    const r = await get(spec);
    check(r);
    await destination.client.send(
      new PutObjectCommand({
        Bucket: destination.bucket,
        Key: destination.key,
        Body: r.Body as Readable,
        ContentLength: source.size,
        ...headers(r),
      }),
      { abortSignal: spec.signal },
    );
    return;
  }

  const head = await get(spec, { start: 0, end: 0 });
  check(head);
  (head.Body as Readable).destroy();
  const { UploadId } = await destination.client.send(
    new CreateMultipartUploadCommand({ Bucket: destination.bucket, Key: destination.key, ...headers(head) }),
    { abortSignal: spec.signal },
  );
  const count = Math.ceil(source.size / spec.partSize);
  const parts: Array<{ PartNumber: number; ETag: string }> = [];
  try {
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const index = next++;
        const start = index * spec.partSize;
        const end = Math.min(source.size, start + spec.partSize) - 1;
        const r = await get(spec, { start, end });
        const uploaded = await destination.client.send(
          new UploadPartCommand({ Bucket: destination.bucket, Key: destination.key, UploadId, PartNumber: index + 1, Body: r.Body as Readable, ContentLength: end - start + 1 }),
          { abortSignal: spec.signal },
        );
        parts.push({ PartNumber: index + 1, ETag: uploaded.ETag ?? '' });
      }
    };
    await Promise.all(Array.from({ length: Math.min(spec.partConcurrency, count) }, worker));
    parts.sort((a, b) => a.PartNumber - b.PartNumber);
    await destination.client.send(new CompleteMultipartUploadCommand({ Bucket: destination.bucket, Key: destination.key, UploadId, MultipartUpload: { Parts: parts } }), { abortSignal: spec.signal });
  } catch (err) {
    await destination.client.send(new AbortMultipartUploadCommand({ Bucket: destination.bucket, Key: destination.key, UploadId })).catch(() => {});
    throw err;
  }
}
