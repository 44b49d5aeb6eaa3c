import { createHash, createHmac, type BinaryLike } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { S3ServiceException } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import { StalledRequestError } from './errors.js';
import { putHeaders, type ObjectHeaders } from './headers.js';

/**
 * The requests a mirror or a verify makes per object (GET, PUT, HEAD, ListObjectsV2), as plain node:http
 * requests signed with @smithy/signature-v4: the SDK's middleware stack and XML deserialiser cost about
 * three times the CPU per request (bench/requests.ts). Failures come out as S3ServiceException with the
 * same code and status the SDK gives, so lib/targets/errors.ts names them the same way.
 */

export interface S3HttpConnection {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Keep-alive sockets to the endpoint, at least the requests one run has in flight. */
  maxSockets: number;
}

export interface S3HttpRequest {
  method: 'GET' | 'PUT' | 'HEAD' | 'DELETE' | 'POST';
  bucket: string;
  key?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** A Buffer, or a stream with a content-length header. */
  body?: Buffer | Readable;
  signal?: AbortSignal;
}

/** A request's payload is not hashed into the signature: every stream is hashed by us already (sha256 in the manifest). */
const UNSIGNED = 'UNSIGNED-PAYLOAD';
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: SourceData): BinaryLike => (typeof d === 'string' ? d : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength));

/** node:crypto behind the interface SignatureV4 expects (an HMAC when given a secret). */
class NodeSha256 {
  #hash;
  constructor(secret?: SourceData) {
    this.#hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: SourceData): void {
    this.#hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return this.#hash.digest();
  }
}

/** S3's key escaping: every byte but unreserved characters and the slashes between segments. */
export function encodeKey(key: string): string {
  return encodeURIComponent(key).replace(/%2F/g, '/').replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

const STATUS_NAMES: Record<number, string> = { 301: 'PermanentRedirect', 304: 'NotModified', 400: 'BadRequest', 403: 'Forbidden', 404: 'NotFound', 412: 'PreconditionFailed', 416: 'InvalidRange' };

export class S3Http {
  readonly #signer: SignatureV4;
  readonly #url: URL;
  readonly #agent: HttpAgent;
  readonly #request: typeof httpRequest;
  readonly #timeouts: { connectTimeoutMs: number; idleTimeoutMs: number };

  constructor(connection: S3HttpConnection) {
    this.#url = new URL(connection.endpoint);
    const https = this.#url.protocol === 'https:';
    this.#agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: connection.maxSockets }) : new HttpAgent({ keepAlive: true, maxSockets: connection.maxSockets });
    this.#request = https ? httpsRequest : httpRequest;
    this.#timeouts = { connectTimeoutMs: connection.connectTimeoutMs, idleTimeoutMs: connection.idleTimeoutMs };
    this.#signer = new SignatureV4({
      service: 's3',
      region: connection.region,
      credentials: { accessKeyId: connection.accessKeyId, secretAccessKey: connection.secretAccessKey },
      sha256: NodeSha256,
      uriEscapePath: false,
    });
  }

  /**
   * Sends one request; resolves with the response once its headers arrived and the status is 2xx, else
   * rejects with an S3ServiceException (its body read for the code). The body is the caller's to read or destroy.
   */
  async send(req: S3HttpRequest): Promise<IncomingMessage> {
    const base = this.#url.pathname.replace(/\/$/, '');
    const path = `${base}/${req.bucket}${req.key === undefined ? '' : `/${encodeKey(req.key)}`}`;
    const signed = await this.#signer.sign({
      method: req.method,
      protocol: this.#url.protocol,
      hostname: this.#url.hostname,
      port: this.#url.port ? Number(this.#url.port) : undefined,
      path,
      query: req.query ?? {},
      headers: { host: this.#url.host, 'x-amz-content-sha256': req.body ? UNSIGNED : EMPTY_SHA256, ...req.headers },
    });
    const query = req.query ? new URLSearchParams(req.query).toString().replace(/\+/g, '%20') : '';
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const r = this.#request({
        agent: this.#agent,
        protocol: this.#url.protocol,
        hostname: this.#url.hostname,
        port: this.#url.port,
        method: req.method,
        path: query ? `${path}?${query}` : path,
        headers: signed.headers,
      });
      // The signal is handled here, not by http.request: that one destroys the response with a generic
      // "aborted" (read as an unreachable target) and can leave an AbortError with no listener.
      const signal = req.signal;
      if (signal) {
        const onAbort = () => {
          const err = signal.reason instanceof Error ? signal.reason : new Error('aborted');
          (r as unknown as { res?: IncomingMessage }).res?.destroy(err);
          r.destroy(err);
        };
        if (signal.aborted) onAbort();
        else {
          signal.addEventListener('abort', onAbort, { once: true });
          r.once('close', () => signal.removeEventListener('abort', onAbort));
        }
      }
      const stall = (phase: 'connect' | 'idle', ms: number) => {
        const err = new StalledRequestError(phase, ms, new Error(phase === 'connect' ? `could not establish a connection within ${ms} ms` : `no data for ${ms} ms`));
        // A body being read fails with the timeout, not with the "aborted" its torn-down socket would give.
        (r as unknown as { res?: IncomingMessage }).res?.destroy(err);
        r.destroy(err);
      };
      r.once('socket', (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(() => stall('connect', this.#timeouts.connectTimeoutMs), this.#timeouts.connectTimeoutMs);
        socket.once('connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      // An idle timeout, not a total one: a large transfer that keeps moving takes as long as it needs.
      r.setTimeout(this.#timeouts.idleTimeoutMs, () => stall('idle', this.#timeouts.idleTimeoutMs));
      // on, not once: an abort can emit a second error after the first (the socket's), which must not go uncaught.
      r.on('error', reject);
      r.once('response', resolve);
      const body = req.body;
      if (body === undefined) r.end();
      else if (Buffer.isBuffer(body)) r.end(body);
      else {
        body.on('error', (err) => r.destroy(err));
        body.pipe(r);
      }
    });
    if (response.statusCode! < 300) return response;
    throw await responseError(response, req.method === 'HEAD');
  }

  /** Sends and reads the whole (small) body. */
  async text(req: S3HttpRequest): Promise<{ headers: IncomingHttpHeaders; text: string }> {
    const response = await this.send(req);
    const chunks: Buffer[] = [];
    for await (const chunk of response) chunks.push(chunk as Buffer);
    return { headers: response.headers, text: Buffer.concat(chunks).toString('utf8') };
  }

  destroy(): void {
    this.#agent.destroy();
  }
}

async function responseError(response: IncomingMessage, head: boolean): Promise<S3ServiceException> {
  const status = response.statusCode!;
  let text = '';
  if (!head) for await (const chunk of response) text += chunk;
  else response.resume();
  const code = xmlText(text, 'Code');
  const message = xmlText(text, 'Message');
  const err = new S3ServiceException({
    name: code ?? STATUS_NAMES[status] ?? (status >= 500 ? 'UnknownError' : 'Unknown'),
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status, requestId: headerValue(response.headers, 'x-amz-request-id') },
    message: message ?? code ?? 'UnknownError',
  });
  if (code) Object.assign(err, { Code: code });
  return err;
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** XML character data with its five entities and numeric references decoded. */
export function xmlDecode(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_, e: string) =>
    e[0] === '#' ? String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)) : ENTITIES[e]!,
  );
}

/** The text of the first <tag> in xml, decoded; undefined when absent. */
export function xmlText(xml: string, tag: string, from = 0, to = xml.length): string | undefined {
  const open = xml.indexOf(`<${tag}>`, from);
  if (open < 0 || open >= to) {
    // <Tag/> is an empty value.
    const empty = xml.indexOf(`<${tag}/>`, from);
    return empty >= 0 && empty < to ? '' : undefined;
  }
  const start = open + tag.length + 2;
  const end = xml.indexOf(`</${tag}>`, start);
  return end < 0 ? undefined : xmlDecode(xml.slice(start, end));
}

export interface ListedObject {
  key: string;
  size: number;
  etag: string;
  lastModified: Date;
}

export interface ListPage {
  objects: ListedObject[];
  truncated: boolean;
  nextContinuationToken?: string;
  /** "url" when keys came URL-encoded (EncodingType=url). */
  encodingType?: string;
}

/**
 * A ListObjectsV2 result: a flat document of <Contents> entries, read by scanning for its few tags
 * rather than building a tree (the SDK's parser was the largest single cost of a no-change run).
 */
export function parseListObjectsV2(xml: string): ListPage {
  const objects: ListedObject[] = [];
  let at = 0;
  for (;;) {
    const open = xml.indexOf('<Contents>', at);
    if (open < 0) break;
    const close = xml.indexOf('</Contents>', open);
    if (close < 0) throw new Error('ListObjectsV2: a <Contents> entry is not closed (truncated response)');
    const key = xmlText(xml, 'Key', open, close);
    if (key === undefined) throw new Error('ListObjectsV2: a <Contents> entry has no <Key>');
    objects.push({
      key,
      size: Number(xmlText(xml, 'Size', open, close) ?? 0),
      etag: xmlText(xml, 'ETag', open, close) ?? '',
      lastModified: new Date(xmlText(xml, 'LastModified', open, close) ?? 0),
    });
    at = close + 11;
  }
  // The trailer (IsTruncated, NextContinuationToken) may come before or after the entries.
  const head = (tag: string) => {
    const before = xmlText(xml, tag, 0, xml.indexOf('<Contents>') < 0 ? xml.length : xml.indexOf('<Contents>'));
    return before ?? xmlText(xml, tag, at);
  };
  return { objects, truncated: head('IsTruncated') === 'true', nextContinuationToken: head('NextContinuationToken'), encodingType: head('EncodingType') };
}

/** What a GET or HEAD response says of the object, as lib/targets/headers.ts keeps it. */
export function objectHeadersOf(headers: IncomingHttpHeaders): ObjectHeaders {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith('x-amz-meta-') && value !== undefined) metadata[name.slice(11)] = Array.isArray(value) ? value.join(', ') : value;
  }
  return {
    contentType: headerValue(headers, 'content-type'),
    cacheControl: headerValue(headers, 'cache-control'),
    contentDisposition: headerValue(headers, 'content-disposition'),
    contentEncoding: headerValue(headers, 'content-encoding'),
    contentLanguage: headerValue(headers, 'content-language'),
    expires: headerValue(headers, 'expires'),
    metadata,
  };
}

/** The request headers that give an object these headers (PutObject): putHeaders' rules, as HTTP headers. */
export function objectHeadersFor(h: ObjectHeaders): Record<string, string> {
  const p = putHeaders(h);
  const out: Record<string, string> = {};
  const set = (name: string, value: string | undefined) => value !== undefined && (out[name] = value);
  set('content-type', p.ContentType);
  set('cache-control', p.CacheControl);
  set('content-disposition', p.ContentDisposition);
  set('content-encoding', p.ContentEncoding);
  set('content-language', p.ContentLanguage);
  set('expires', p.Expires?.toUTCString());
  for (const [k, v] of Object.entries(p.Metadata)) out[`x-amz-meta-${k.toLowerCase()}`] = v;
  return out;
}

export function responseInfo(headers: IncomingHttpHeaders): { size: number; etag: string; lastModified: Date } {
  return {
    size: Number(headerValue(headers, 'content-length') ?? 0),
    etag: headerValue(headers, 'etag') ?? '',
    lastModified: new Date(headerValue(headers, 'last-modified') ?? 0),
  };
}
