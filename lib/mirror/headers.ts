import { headersFingerprint, type ObjectHeaders } from '../targets/headers.js';

/** Destination metadata that remembers which source version an object was copied from. */
export const SOURCE_ETAG_METADATA = 'lifeboat-source-etag';
/** Destination metadata holding a fingerprint of the source's headers: a metadata-only change keeps size and ETag. */
export const SOURCE_HEADERS_METADATA = 'lifeboat-source-headers';

const OWN = 'lifeboat-';

/**
 * The headers a mirrored copy gets: the source's own, plus what Lifeboat records. A source key that
 * already starts with "lifeboat-" (the source is itself a mirror) gets one more "lifeboat-" in front,
 * so it can never be mistaken for, or overwritten by, Lifeboat's own; unwrapMirrored reverses it.
 */
export function wrapForMirror(h: ObjectHeaders, sourceEtag: string): ObjectHeaders {
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(h.metadata)) metadata[k.toLowerCase().startsWith(OWN) ? OWN + k : k] = v;
  metadata[SOURCE_ETAG_METADATA] = sourceEtag;
  metadata[SOURCE_HEADERS_METADATA] = headersFingerprint(h);
  return { ...h, metadata };
}

/** A mirrored copy's headers as the source had them: Lifeboat's records dropped, escaped keys restored. */
export function unwrapMirrored(h: ObjectHeaders): ObjectHeaders {
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(h.metadata)) {
    const lower = k.toLowerCase();
    if (lower.startsWith(OWN + OWN)) metadata[k.slice(OWN.length)] = v;
    else if (!lower.startsWith(OWN)) metadata[k] = v;
  }
  return { ...h, metadata };
}
