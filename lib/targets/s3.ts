import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { finished, PassThrough, Readable, pipeline } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  ListMultipartUploadsCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import type { S3TargetConfig } from '../config/schema.js';
import { classifyS3Error, handlerTimeoutPhase, s3ErrorCode, StalledRequestError, TargetError, type TargetLocation, type TargetRequest } from './errors.js';
import { HashingStream } from './hash.js';
import { headersOf, type ObjectHeaders } from './headers.js';
import { uploadStream } from './multipart.js';
import { objectHeadersFor, objectHeadersOf, parseListObjectsV2, responseInfo, S3Http } from './s3http.js';
import { ObjectNotFoundError, type HeadResult, type IncompleteUpload, type ObjectInfo, type PutOptions, type PutResult, type TargetStore } from './store.js';

/** Also the config defaults of an s3 target's connectTimeoutMs and idleTimeoutMs. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

export interface S3Connection {
  endpoint: string;
  region: string;
  forcePathStyle: boolean;
  accessKeyId: string;
  secretAccessKey: string;
  /** A connection attempt is abandoned after this long (default 10 s). */
  connectTimeoutMs?: number;
  /** A request that receives no bytes for this long is aborted, waiting for the first byte included (default 30 s). */
  idleTimeoutMs?: number;
}

interface ClientSettings {
  endpoint: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/** What each client was made with, for the messages of the stores that use it. */
const clientSettings = new WeakMap<S3Client, ClientSettings>();
/** The plain-HTTP path each client's stores take for the per-object requests (lib/targets/s3http.ts). */
const leanClients = new WeakMap<S3Client, S3Http>();
/** Keep-alive sockets per endpoint: at least the most requests a mirror or restore has in flight (concurrency ≤ 64, plus parts). */
const MAX_SOCKETS = 96;

/**
 * An S3 client that works against RGW, MinIO and other non-AWS servers: path-style addressing, and
 * checksums only when required (otherwise streaming PUTs go out aws-chunked and RGW answers 411).
 */
export function createS3Client(connection: S3Connection): S3Client {
  const connectTimeoutMs = connection.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const idleTimeoutMs = connection.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const client = new S3Client({
    endpoint: connection.endpoint,
    region: connection.region,
    forcePathStyle: connection.forcePathStyle,
    credentials: { accessKeyId: connection.accessKeyId, secretAccessKey: connection.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
      connectionTimeout: connectTimeoutMs,
      // A socket idle timeout, not a total one: it covers the wait for the first byte and a response
      // body that stalls mid-stream (the handler destroys the body with a TimeoutError), yet lets a
      // large transfer that keeps moving take as long as it needs.
      socketTimeout: idleTimeoutMs,
    },
  });
  clientSettings.set(client, { endpoint: connection.endpoint, connectTimeoutMs, idleTimeoutMs });
  const lean = new S3Http({ ...connection, connectTimeoutMs, idleTimeoutMs, maxSockets: MAX_SOCKETS });
  leanClients.set(client, lean);
  const destroy = client.destroy.bind(client);
  client.destroy = () => {
    lean.destroy();
    destroy();
  };
  // Upload bodies are not hashed for the signature: we hash every stream ourselves (sha256 in the
  // manifest, re-checked by verifyObject), and hashing each part twice costs CPU the dump needs.
  client.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { method?: string; headers?: Record<string, string> };
      if (request.method === 'PUT' && request.headers) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    },
    { step: 'build', name: 'lifeboatUnsignedPayload' },
  );
  // Inside the SDK's retry loop: a timed-out request is not retried by the SDK (three 30 s waits on a
  // hung hub); the job's own retries, with backoff, take over.
  client.middlewareStack.add(
    (next) => async (args) => {
      try {
        return await next(args);
      } catch (err) {
        const phase = handlerTimeoutPhase(err);
        if (phase) throw new StalledRequestError(phase, phase === 'connect' ? connectTimeoutMs : idleTimeoutMs, err as Error);
        throw err;
      }
    },
    { step: 'deserialize', name: 'lifeboatNoRetryAfterTimeout' },
  );
  return client;
}

export function s3ConnectionFromConfig(config: S3TargetConfig): S3Connection {
  return {
    endpoint: config.endpoint,
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    accessKeyId: config.accessKeyId.reveal(),
    secretAccessKey: config.secretAccessKey.reveal(),
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
  };
}

/**
 * A GET body whose errors (a stalled or reset connection) are named like any other request's. While the
 * consumer holds back (a restore waiting for psql to build an index), the socket's idle timeout is off:
 * a slow consumer is not a stalled target.
 */
function readBody(body: Readable, idleTimeoutMs: number, name: (err: unknown) => Error): Readable {
  const out = new PassThrough();
  let holding = false;
  // The response's socket; null once the response is complete and the socket back in the pool.
  const idleTimer = (on: boolean) => (body as Readable & { socket?: Socket | null }).socket?.setTimeout(on ? idleTimeoutMs : 0);
  body.on('data', (chunk: Buffer) => {
    if (out.write(chunk)) return;
    holding = true;
    body.pause();
    idleTimer(false);
  });
  out.on('drain', () => {
    holding = false;
    idleTimer(true);
    body.resume();
  });
  // For timeouts of 6 s and more the handler arms the socket's timer only 3 s into the request
  // (DEFER_EVENT_LISTENER_TIME), possibly while we hold: switch it off again after that.
  const deferredArming = setTimeout(() => holding && idleTimer(false), 3100);
  deferredArming.unref();
  body.once('end', () => out.end());
  finished(body, (err) => {
    clearTimeout(deferredArming);
    if (err) out.destroy(name(err));
  });
  // A consumer that stops early must still release the connection.
  out.once('close', () => body.destroy());
  return out;
}

export class S3Store implements TargetStore {
  readonly label: string;
  readonly endpoint: string;
  private readonly settings: ClientSettings;
  constructor(
    readonly client: S3Client,
    readonly target: string,
    readonly bucket: string,
    private readonly multipart: { partSizeBytes: number; queueSize: number } = { partSizeBytes: 16 * 1024 * 1024, queueSize: 4 },
  ) {
    this.label = `${target}/${bucket}`;
    this.settings = clientSettings.get(client) ?? { endpoint: 'endpoint unknown', connectTimeoutMs: 0, idleTimeoutMs: 0 };
    this.endpoint = this.settings.endpoint;
    const http = leanClients.get(client);
    if (!http) throw new Error(`${this.label}: an S3Store needs a client from createS3Client`);
    this.http = http;
  }

  /** The plain-HTTP path for the per-object requests. */
  private readonly http: S3Http;

  get location(): TargetLocation {
    return { target: this.target, endpoint: this.endpoint, bucket: this.bucket };
  }

  /** Every error a request of this store throws goes through here. */
  private named(err: unknown, request: TargetRequest): unknown {
    return classifyS3Error(err, this.location, { request, timeouts: this.settings });
  }

  /**
   * A 404 for the key itself. GET says NoSuchKey; a HEAD's 404 has no code, so the bucket is asked:
   * a missing bucket must never read as a missing object (an empty catalog).
   */
  private async isMissingObject(err: unknown, signal: AbortSignal | undefined): Promise<boolean> {
    if (!(err instanceof S3ServiceException) || err.$metadata.httpStatusCode !== 404) return false;
    const code = s3ErrorCode(err);
    if (code === 'NoSuchKey') return true;
    if (code !== 'NotFound') return false;
    try {
      await this.headBucket({ signal });
    } catch (bucketErr) {
      // Keys without s3:ListBucket may not ask; the object's own 404 is all there is to go on.
      if (bucketErr instanceof TargetError && bucketErr.httpStatus === 403) return true;
      throw bucketErr;
    }
    return true;
  }

  /** Resolves if the bucket exists and these keys may see it; else a TargetError (NoSuchBucket for a 404). */
  async headBucket(options: { signal?: AbortSignal } = {}): Promise<void> {
    const request = { operation: 'HeadBucket' };
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: options.signal });
    } catch (err) {
      // HeadBucket's 404 has no body, but it can only mean the bucket.
      if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404) throw new TargetError(this.location, 'NoSuchBucket', 404, request, { cause: err });
      throw this.named(err, request);
    }
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    if (options.replaceUnfinished) await this.abortUnfinished(key, options.signal);
    const hashing = new HashingStream();
    // pipeline() destroys `hashing` with body's error, which fails the upload and aborts it.
    pipeline(body, hashing, () => {});
    const onAbort = () => {
      const reason: unknown = options.signal?.reason;
      hashing.destroy(reason instanceof Error ? reason : new Error('aborted'));
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // destroyOnReturn: false, or an upload that stops reading (a failed part) would destroy `hashing`
      // with an AbortError, which the catch below would then report instead of the real failure.
      await uploadStream(
        this.client,
        { Bucket: this.bucket, Key: key, ContentType: options.contentType, Metadata: options.metadata },
        hashing.iterator({ destroyOnReturn: false }),
        { partSize: this.multipart.partSizeBytes, queueSize: this.multipart.queueSize, signal: options.signal },
      );
    } catch (err) {
      // The body's own error (e.g. "pg_dumpall exited 1") or the abort reason explains more than the
      // SDK's; read it before our own destroy() below, which ends the body.
      const bodyError = hashing.errored;
      hashing.destroy();
      throw bodyError ?? this.named(err, { operation: 'upload', key });
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
    // RGW answers CompleteMultipartUpload with an empty ETag; HEAD gives the real one.
    const head = await this.head(key, { signal: options.signal });
    if (!head) throw new Error(`${this.label}: ${key} is missing right after upload`);
    if (head.size !== hashing.bytes) {
      throw new Error(`${this.label}: ${key} has ${head.size} bytes after upload, expected ${hashing.bytes}`);
    }
    return { key, size: hashing.bytes, sha256: hashing.sha256, etag: head.etag };
  }

  async putJson(key: string, value: unknown, options: { signal?: AbortSignal } = {}): Promise<PutResult> {
    const body = Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
    return this.put(key, Readable.from([body]), { contentType: 'application/json', signal: options.signal });
  }

  async get(key: string, options: { signal?: AbortSignal; range?: { start: number; end: number }; versionId?: string } = {}): Promise<Readable> {
    const request = { operation: 'GetObject', key };
    const { body } = await this.open(key, options);
    return readBody(body, this.settings.idleTimeoutMs, (err) => this.named(err, request) as Error);
  }

  /**
   * A GET whose response headers come first: the object's headers, ETag and size (of the range, if
   * one) and its raw body, which the caller must read or destroy. With ifMatch, a changed object is a
   * PreconditionFailed TargetRequestError. Throws ObjectNotFoundError for a missing key.
   */
  async open(
    key: string,
    options: { signal?: AbortSignal; range?: { start: number; end: number }; versionId?: string; ifMatch?: string } = {},
  ): Promise<{ body: Readable; headers: ObjectHeaders; etag: string; size: number }> {
    let response;
    try {
      response = await this.http.send({
        method: 'GET',
        bucket: this.bucket,
        key,
        ...(options.versionId ? { query: { versionId: options.versionId } } : {}),
        headers: {
          ...(options.range ? { range: `bytes=${options.range.start}-${options.range.end}` } : {}),
          ...(options.ifMatch ? { 'if-match': options.ifMatch } : {}),
        },
        signal: options.signal,
      });
    } catch (err) {
      if (await this.isMissingObject(err, options.signal)) throw new ObjectNotFoundError(this.label, key);
      throw this.named(err, { operation: 'GetObject', key });
    }
    const { etag, size } = responseInfo(response.headers);
    return { body: response, headers: objectHeadersOf(response.headers), etag, size };
  }

  /**
   * One PutObject of a body of known length, streamed (small objects, and a mirror's copies up to its
   * multipart threshold). Resolves with the stored ETag.
   */
  async putObject(key: string, body: Readable | Buffer, options: { length: number; headers?: ObjectHeaders; signal?: AbortSignal }): Promise<string> {
    try {
      const response = await this.http.send({
        method: 'PUT',
        bucket: this.bucket,
        key,
        headers: { 'content-length': String(options.length), ...(options.headers ? objectHeadersFor(options.headers) : {}) },
        body,
        signal: options.signal,
      });
      response.resume();
      return responseInfo(response.headers).etag;
    } catch (err) {
      throw this.named(err, { operation: 'PutObject', key });
    }
  }

  async getJson<T>(key: string, options: { signal?: AbortSignal } = {}): Promise<T | undefined> {
    let text: string;
    try {
      text = (await this.http.text({ method: 'GET', bucket: this.bucket, key, signal: options.signal })).text;
    } catch (err) {
      if (await this.isMissingObject(err, options.signal)) return undefined;
      throw this.named(err, { operation: 'GetObject', key });
    }
    return JSON.parse(text) as T;
  }

  async head(key: string, options: { signal?: AbortSignal } = {}): Promise<(HeadResult & { headers: ObjectHeaders }) | undefined> {
    try {
      const response = await this.http.send({ method: 'HEAD', bucket: this.bucket, key, signal: options.signal });
      response.resume();
      const headers = objectHeadersOf(response.headers);
      return { key, ...responseInfo(response.headers), contentType: headers.contentType, metadata: headers.metadata, headers };
    } catch (err) {
      if (await this.isMissingObject(err, options.signal)) return undefined;
      throw this.named(err, { operation: 'HeadObject', key });
    }
  }

  async *list(prefix: string, options: { startAfter?: string; signal?: AbortSignal } = {}): AsyncIterable<ObjectInfo> {
    let continuationToken: string | undefined;
    const query = (): Record<string, string> => ({
      'list-type': '2',
      // XML cannot carry every key (control characters; some parsers trim whitespace-only ones).
      'encoding-type': 'url',
      'max-keys': '1000',
      ...(prefix ? { prefix } : {}),
      ...(continuationToken ? { 'continuation-token': continuationToken } : options.startAfter ? { 'start-after': options.startAfter } : {}),
    });
    const fetchPage = async () => {
      try {
        return parseListObjectsV2((await this.http.text({ method: 'GET', bucket: this.bucket, query: query(), signal: options.signal })).text);
      } catch (err) {
        throw this.named(err, { operation: 'ListObjectsV2', key: prefix || undefined });
      }
    };
    let page = await fetchPage();
    for (;;) {
      continuationToken = page.truncated ? page.nextContinuationToken : undefined;
      // The next page is asked for while this one is consumed: a listing is a chain of round trips.
      const next = continuationToken ? fetchPage() : undefined;
      next?.catch(() => {});
      const encoded = page.encodingType === 'url';
      for (const o of page.objects) yield encoded ? { ...o, key: decodeListedKey(o.key) } : o;
      if (!next) return;
      page = await next;
    }
  }

  /**
   * Every key's version that was current at `at` (delete markers hide a key), in key order: the state of
   * a versioned bucket at that time. Versions of one key come newest first, so one key is held at a time.
   */
  async *listAt(prefix: string, at: Date, options: { signal?: AbortSignal } = {}): AsyncIterable<ObjectInfo & { versionId: string }> {
    let keyMarker: string | undefined;
    let versionIdMarker: string | undefined;
    let lastKey: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectVersionsCommand({ Bucket: this.bucket, Prefix: prefix || undefined, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker, EncodingType: 'url' }),
          { abortSignal: options.signal },
        );
      } catch (err) {
        throw this.named(err, { operation: 'ListObjectVersions', key: prefix || undefined });
      }
      const decode = (key: string) => (page.EncodingType === 'url' ? decodeListedKey(key) : key);
      // Objects and delete markers come in two lists; merged back by key, newest first within a key.
      const entries = [
        ...(page.Versions ?? []).map((v) => ({ key: decode(v.Key!), marker: false, versionId: v.VersionId ?? 'null', size: v.Size ?? 0, etag: v.ETag ?? '', lastModified: v.LastModified ?? new Date(0) })),
        ...(page.DeleteMarkers ?? []).map((m) => ({ key: decode(m.Key!), marker: true, versionId: m.VersionId ?? 'null', size: 0, etag: '', lastModified: m.LastModified ?? new Date(0) })),
      ].sort((a, b) => (a.key === b.key ? b.lastModified.getTime() - a.lastModified.getTime() : Buffer.compare(Buffer.from(a.key), Buffer.from(b.key))));
      for (const e of entries) {
        if (e.key === lastKey || e.lastModified.getTime() > at.getTime()) continue;
        lastKey = e.key;
        if (!e.marker) yield { key: e.key, size: e.size, etag: e.etag, lastModified: e.lastModified, versionId: e.versionId };
      }
      keyMarker = page.IsTruncated && page.NextKeyMarker !== undefined ? decode(page.NextKeyMarker) : undefined;
      versionIdMarker = page.IsTruncated ? page.NextVersionIdMarker : undefined;
    } while (keyMarker !== undefined);
  }

  async delete(keys: string[], options: { signal?: AbortSignal } = {}): Promise<void> {
    // A DeleteObjects body is XML, which cannot carry every key: those go one by one, in the URL.
    for (const key of keys.filter(notXmlSafe)) {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: options.signal });
      } catch (err) {
        throw this.named(err, { operation: 'DeleteObject', key });
      }
    }
    const safe = keys.filter((k) => !notXmlSafe(k));
    for (let i = 0; i < safe.length; i += 1000) {
      const batch = safe.slice(i, i + 1000);
      let r;
      try {
        r = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
          { abortSignal: options.signal },
        );
      } catch (err) {
        throw this.named(err, { operation: 'DeleteObjects', key: batch[0] });
      }
      if (r.Errors?.length) {
        const first = r.Errors[0]!;
        throw new Error(`${this.label}: ${r.Errors.length} deletes failed, first ${first.Key}: ${first.Code} ${first.Message}`);
      }
    }
  }

  async *incompleteUploads(options: { signal?: AbortSignal } = {}): AsyncIterable<IncompleteUpload> {
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, KeyMarker, UploadIdMarker }), { abortSignal: options.signal });
      } catch (err) {
        throw this.named(err, { operation: 'ListMultipartUploads' });
      }
      for (const u of page.Uploads ?? []) yield { key: u.Key!, id: u.UploadId!, initiated: u.Initiated ?? new Date(0) };
      [KeyMarker, UploadIdMarker] = page.IsTruncated ? [page.NextKeyMarker, page.NextUploadIdMarker] : [undefined, undefined];
    } while (KeyMarker);
  }

  /** Aborts the open uploads of exactly `key`; the listing is by prefix, so longer keys are skipped. */
  private async abortUnfinished(key: string, signal?: AbortSignal): Promise<void> {
    let page;
    try {
      page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key }), { abortSignal: signal });
    } catch (err) {
      throw this.named(err, { operation: 'ListMultipartUploads', key });
    }
    for (const u of page.Uploads ?? []) if (u.Key === key) await this.abortIncomplete({ key, id: u.UploadId!, initiated: u.Initiated ?? new Date(0) });
  }

  async abortIncomplete(upload: IncompleteUpload): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.key, UploadId: upload.id }));
    } catch (err) {
      throw this.named(err, { operation: 'AbortMultipartUpload', key: upload.key });
    }
  }

  async ensureBucket(): Promise<void> {
    try {
      await this.headBucket();
    } catch (err) {
      if (!(err instanceof TargetError && err.code === 'NoSuchBucket')) throw err;
      try {
        await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
      } catch (createErr) {
        throw this.named(createErr, { operation: 'CreateBucket' });
      }
    }
  }
}

/** A key from a listing asked for with EncodingType=url: AWS writes a space as "+", RGW as "%20"; a real "+" is always "%2B". */
export function decodeListedKey(key: string): string {
  return decodeURIComponent(key.replace(/\+/g, ' '));
}

/** Control characters, and whitespace at either end (which XML parsers may trim or fold), do not survive an XML body. */
export function notXmlSafe(key: string): boolean {
  return /[\x00-\x1f\x7f]|^\s|\s$/.test(key);
}
