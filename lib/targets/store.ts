import type { Readable } from 'node:stream';

export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
  lastModified: Date;
}

export interface PutOptions {
  contentType?: string;
  /** User metadata (x-amz-meta-*). */
  metadata?: Record<string, string>;
  signal?: AbortSignal;
  /**
   * Abort unfinished uploads of this exact key first: what a killed earlier attempt at the same
   * (deterministic) key left open. Only for writers that hold the key alone (the dataset lock).
   */
  replaceUnfinished?: boolean;
}

export interface PutResult {
  key: string;
  size: number;
  /** sha256 of the bytes as stored, computed while streaming. */
  sha256: string;
  etag: string;
}

export interface HeadResult extends ObjectInfo {
  contentType?: string;
  metadata: Record<string, string>;
}

/**
 * One bucket on one target. Every implementation guarantees that an object is visible only once it is
 * complete: a failed or aborted put leaves neither the object nor any unfinished upload behind.
 * Only a missing object is "not found" (undefined, ObjectNotFoundError): a missing bucket, refused
 * credentials or an unreachable target throw (see lib/targets/errors.ts), so they never read as an
 * empty catalog.
 */
export interface TargetStore {
  /** "<target>/<bucket>", for logs and errors. */
  readonly label: string;
  readonly target: string;
  readonly bucket: string;
  /** Streams body to key. Rejects (leaving nothing) if body errors or the signal aborts. */
  put(key: string, body: Readable, options?: PutOptions): Promise<PutResult>;
  putJson(key: string, value: unknown, options?: { signal?: AbortSignal }): Promise<PutResult>;
  get(key: string, options?: { signal?: AbortSignal; range?: { start: number; end: number } }): Promise<Readable>;
  getJson<T = unknown>(key: string, options?: { signal?: AbortSignal }): Promise<T | undefined>;
  /** undefined when the object does not exist (and throws when the bucket does not). */
  head(key: string, options?: { signal?: AbortSignal }): Promise<HeadResult | undefined>;
  /** All objects under prefix, in S3 key order (UTF-8 byte order). */
  list(prefix: string, options?: { startAfter?: string; signal?: AbortSignal }): AsyncIterable<ObjectInfo>;
  delete(keys: string[], options?: { signal?: AbortSignal }): Promise<void>;
  /** Uploads that were started and never completed or aborted (a killed process), oldest first. */
  incompleteUploads(options?: { signal?: AbortSignal }): AsyncIterable<IncompleteUpload>;
  abortIncomplete(upload: IncompleteUpload): Promise<void>;
  /** Creates the bucket if it does not exist (tests, demo). */
  ensureBucket(): Promise<void>;
}

export interface IncompleteUpload {
  key: string;
  id: string;
  initiated: Date;
}

/** Thrown by get when the key does not exist (getJson and head return undefined); never for a missing bucket. */
export class ObjectNotFoundError extends Error {
  override name = 'ObjectNotFoundError';
  constructor(readonly label: string, readonly key: string) {
    super(`${label}: object ${key} does not exist`);
  }
}
