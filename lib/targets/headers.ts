import { createHash } from 'node:crypto';

/** What an S3 object carries besides its bytes, as a GET or HEAD returns it. */
export interface ObjectHeaders {
  contentType?: string;
  cacheControl?: string;
  contentDisposition?: string;
  contentEncoding?: string;
  contentLanguage?: string;
  /** As the server sent it: an Expires that is not a date is still kept. */
  expires?: string;
  metadata: Record<string, string>;
}

interface SdkHeaders {
  ContentType?: string;
  CacheControl?: string;
  ContentDisposition?: string;
  ContentEncoding?: string;
  ContentLanguage?: string;
  Expires?: Date;
  ExpiresString?: string;
  Metadata?: Record<string, string>;
}

export function headersOf(r: SdkHeaders): ObjectHeaders {
  return {
    contentType: r.ContentType,
    cacheControl: r.CacheControl,
    contentDisposition: r.ContentDisposition,
    contentEncoding: r.ContentEncoding,
    contentLanguage: r.ContentLanguage,
    expires: r.ExpiresString ?? r.Expires?.toUTCString(),
    metadata: r.Metadata ?? {},
  };
}

/** The headers for a PutObject or CreateMultipartUpload. */
export function putHeaders(h: ObjectHeaders) {
  const expires = h.expires === undefined ? undefined : new Date(h.expires);
  return {
    ContentType: h.contentType,
    CacheControl: h.cacheControl,
    ContentDisposition: h.contentDisposition,
    ContentEncoding: h.contentEncoding,
    ContentLanguage: h.contentLanguage,
    Expires: expires && !Number.isNaN(expires.getTime()) ? expires : undefined,
    Metadata: h.metadata,
  };
}

/** A short, order-independent digest of everything but the bytes. */
export function headersFingerprint(h: ObjectHeaders): string {
  const metadata = Object.keys(h.metadata).sort().map((k) => [k.toLowerCase(), h.metadata[k]]);
  const canonical = JSON.stringify([h.contentType ?? null, h.cacheControl ?? null, h.contentDisposition ?? null, h.contentEncoding ?? null, h.contentLanguage ?? null, h.expires ?? null, metadata]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 32);
}
