import type { Readable } from 'node:stream';
import { AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { putHeaders, type ObjectHeaders } from '../targets/headers.js';
import type { S3Store } from '../targets/s3.js';
import { wrapForMirror } from './headers.js';

export { SOURCE_ETAG_METADATA } from './headers.js';

export interface CopySpec {
  /** With versionId, that version (a restore from a versioned hub); else exactly the ETag the listing saw. */
  source: { store: S3Store; key: string; etag: string; size: number; versionId?: string };
  destination: { store: S3Store; key: string };
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

function get(spec: CopySpec, range?: { start: number; end: number }) {
  // IfMatch: copy exactly the version the listing saw; if it changed since, the next run picks it up.
  const { store, key, versionId, etag } = spec.source;
  return store.open(key, { ...(versionId ? { versionId } : { ifMatch: etag }), range, signal: spec.signal });
}

/**
 * Copies one object between two S3 servers, streaming: small objects as one PUT of the GET body (so
 * the destination ETag is the same MD5 as the source's), large ones in parts, each part a ranged GET
 * streamed into UploadPart. Every header a client sees (Content-Type, -Encoding, -Disposition,
 * -Language, Cache-Control, Expires) and the user metadata are kept.
 */
export async function copyObject(spec: CopySpec): Promise<void> {
  const { source, destination } = spec;
  const headersFor = (h: ObjectHeaders) => (spec.headers ?? ((sourceHeaders) => wrapForMirror(sourceHeaders, source.etag)))(h);
  const check = (r: { etag: string; headers: ObjectHeaders; body: Readable }) => {
    const reason = spec.refuse?.(r.etag, r.headers);
    if (reason === undefined) return;
    r.body.destroy();
    throw new CopyRefusedError(`${source.key}: ${reason}`);
  };
  if (source.size <= spec.multipartThreshold) {
    const r = await get(spec);
    check(r);
    try {
      await destination.store.putObject(destination.key, r.body, { length: source.size, headers: headersFor(r.headers), signal: spec.signal });
    } finally {
      r.body.destroy();
    }
    return;
  }

  const head = await get(spec, { start: 0, end: 0 });
  check(head);
  head.body.destroy();
  // Multipart control requests are few per object: they stay on the SDK.
  const client = destination.store.client;
  const Bucket = destination.store.bucket;
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: destination.key, ...putHeaders(headersFor(head.headers)) }), { abortSignal: spec.signal });
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
        try {
          const uploaded = await client.send(
            new UploadPartCommand({ Bucket, Key: destination.key, UploadId, PartNumber: index + 1, Body: r.body, ContentLength: end - start + 1 }),
            { abortSignal: spec.signal },
          );
          parts.push({ PartNumber: index + 1, ETag: uploaded.ETag ?? '' });
        } finally {
          r.body.destroy();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(spec.partConcurrency, count) }, worker));
    parts.sort((a, b) => a.PartNumber - b.PartNumber);
    await client.send(new CompleteMultipartUploadCommand({ Bucket, Key: destination.key, UploadId, MultipartUpload: { Parts: parts } }), { abortSignal: spec.signal });
  } catch (err) {
    await client.send(new AbortMultipartUploadCommand({ Bucket, Key: destination.key, UploadId })).catch(() => {});
    throw err;
  }
}
