import { Transform, type Duplex, type Readable, type TransformCallback } from 'node:stream';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3ServiceException, type S3Client } from '@aws-sdk/client-s3';
import { ageEncrypter, DecryptionError, EncryptionSetupError } from '../crypto/age.js';
import { headersOf, putHeaders, type ObjectHeaders } from '../targets/headers.js';
import { uploadStream, type StreamUploadParams } from '../targets/multipart.js';
import { unwrapMirrored, wrapForMirror } from './headers.js';

/**
 * Per-object age encryption of a bucket mirror. The hub keeps each object under its own key as the age
 * ciphertext of the source's bytes; what a restore needs besides the identity lives in the object's
 * metadata: the marker, the recipients' fingerprints, the source's ETag, size and sha256, and the
 * source's headers (the ciphertext itself is served as application/octet-stream).
 */
export const ENCRYPTION_METADATA = 'lifeboat-encryption';
export const RECIPIENTS_METADATA = 'lifeboat-recipients';
export const SOURCE_SIZE_METADATA = 'lifeboat-source-size';
export const PLAINTEXT_SHA256_METADATA = 'lifeboat-plaintext-sha256';
/** The source's Content-Type, -Encoding, … as base64url JSON: a header value must stay ASCII. */
export const ORIGINAL_HEADERS_METADATA = 'lifeboat-source-headers-json';

const TAG_BYTES = 16;
const NONCE_BYTES = 16;
const CHUNK = 64 * 1024;
const PLAIN_MD5 = /^"?[0-9a-f]{32}"?$/;
/** S3's limit for one PutObject. */
const MAX_SINGLE_PUT = 5 * 1024 * 1024 * 1024;

/** An encrypted copy failed a check of its own (the source's bytes changed between reads, a length off). Nothing was written. */
export class EncryptedCopyError extends Error {
  override name = 'EncryptedCopyError';
}

/** A decrypted hub object is not the object the mirror copied (its sha256 or size differs from the record). */
export class PlaintextMismatchError extends DecryptionError {
  override name = 'PlaintextMismatchError';
}

export interface MirrorEncryption {
  stage(): Duplex;
  /** recipientFingerprint of each recipient. */
  fingerprints: string[];
  /** The age header's length for these recipients: fixed for a given recipient list. */
  headerBytes: number;
  /** The exact ciphertext length of a plaintext of this many bytes. */
  ciphertextSize(plaintextBytes: number): number;
}

/** age's STREAM: a nonce, then the payload in 64 KiB chunks each followed by a 16-byte tag (an empty payload is one empty chunk). */
export function ageCiphertextSize(headerBytes: number, plaintextBytes: number): number {
  return headerBytes + NONCE_BYTES + plaintextBytes + TAG_BYTES * Math.max(1, Math.ceil(plaintextBytes / CHUNK));
}

async function drain(stream: Duplex, input: Buffer): Promise<number> {
  stream.end(input);
  let n = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) n += chunk.length;
  return n;
}

/**
 * The mirror's encryption, built before anything is listed or copied: a recipient that does not parse
 * fails here (fail closed). The header length is measured, twice, with the same stage the copies use,
 * so the no-change rule's ciphertext size is the library's own, not a guess.
 */
export async function mirrorEncryption(recipients: readonly string[], what: string): Promise<MirrorEncryption> {
  const age = ageEncrypter(recipients, what);
  const [a, b] = await Promise.all([drain(age.stage(), Buffer.alloc(0)), drain(age.stage(), Buffer.alloc(0))]);
  if (a !== b) throw new EncryptionSetupError(`${what}: the age header length varies between encryptions (${a}, ${b} bytes), so a mirror cannot tell an unchanged copy by its size`);
  const headerBytes = a - NONCE_BYTES - TAG_BYTES;
  return { stage: age.stage, fingerprints: age.encryption.recipients, headerBytes, ciphertextSize: (n) => ageCiphertextSize(headerBytes, n) };
}

/** Whether a hub object's metadata marks it as an encrypted mirror copy. */
export function isEncryptedCopy(metadata: Record<string, string> | undefined): boolean {
  return metadata?.[ENCRYPTION_METADATA] === 'age';
}

type Standard = Omit<ObjectHeaders, 'metadata'>;

function encodeHeaders(h: ObjectHeaders): string {
  const { metadata: _, ...standard } = h;
  return Buffer.from(JSON.stringify(standard)).toString('base64url');
}

/** The source's headers as they were: the recorded standard headers and the user metadata, Lifeboat's records dropped. */
export function originalHeaders(metadata: Record<string, string>): ObjectHeaders {
  let standard: Standard = {};
  const recorded = metadata[ORIGINAL_HEADERS_METADATA];
  if (recorded) {
    try {
      standard = JSON.parse(Buffer.from(recorded, 'base64url').toString('utf8')) as Standard;
    } catch {
      throw new DecryptionError(`the recorded source headers (${ORIGINAL_HEADERS_METADATA}) are not readable`);
    }
  }
  return { ...standard, metadata: unwrapMirrored({ metadata }).metadata };
}

/** Counts and hashes; with `expect`, fails before passing on its end when the bytes are not those (so an upload of them never completes). */
class Checked extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;
  sha256 = '';
  constructor(private readonly expect: { size?: number; sha256?: string; error: (why: string) => Error }) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    if (this.expect.size !== undefined && this.bytes > this.expect.size) return cb(this.expect.error(`more than the expected ${this.expect.size} bytes`));
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.sha256 = this.#hash.digest('hex');
    if (this.expect.size !== undefined && this.bytes !== this.expect.size) return cb(this.expect.error(`${this.bytes} bytes, expected ${this.expect.size}`));
    if (this.expect.sha256 !== undefined && this.sha256 !== this.expect.sha256) return cb(this.expect.error(`sha256 ${this.sha256}, expected ${this.expect.sha256}`));
    cb();
  }
}

/**
 * The one place here that buffers: a multipart upload of a stream holds two parts (one uploading, one
 * filling). A restore runs 32 objects at once, so at most this many such copies run in a process, and
 * memory stays at 2 × partSize × this whatever the concurrency; single PUTs stream unbuffered. Taken
 * before the source is read, so no GET sits open while it waits.
 */
const BUFFERED_UPLOADS = 2;
const bufferedUploads = (() => {
  let running = 0;
  const waiting: Array<() => void> = [];
  return {
    async run<T>(task: () => Promise<T>): Promise<T> {
      while (running >= BUFFERED_UPLOADS) await new Promise<void>((resolve) => waiting.push(resolve));
      running += 1;
      try {
        return await task();
      } finally {
        running -= 1;
        waiting.shift()?.();
      }
    },
  };
})();

interface Put {
  client: S3Client;
  bucket: string;
  key: string;
  headers: ObjectHeaders;
  length: number;
  multipartThreshold: number;
  partSize: number;
  signal?: AbortSignal;
}

/**
 * Uploads a stream whose exact length is known: one PUT with that Content-Length (RGW refuses a
 * streamed PUT without one), or above the threshold a multipart upload through the target's own
 * bounded-buffer uploader. Any stage's error fails the upload before it completes.
 */
async function putKnownLength(body: Readable, stages: Array<{ errored: Error | null }>, p: Put): Promise<void> {
  const sdk = putHeaders(p.headers);
  const firstError = () => stages.find((s) => s.errored)?.errored ?? body.errored;
  // A PUT whose body fails would otherwise wait for the server to time out the missing bytes.
  const abort = new AbortController();
  const signal = p.signal ? AbortSignal.any([p.signal, abort.signal]) : abort.signal;
  body.once('error', (err) => abort.abort(err));
  try {
    if (p.length <= p.multipartThreshold) {
      await p.client.send(new PutObjectCommand({ Bucket: p.bucket, Key: p.key, Body: body, ContentLength: p.length, ...sdk }), { abortSignal: signal });
    } else {
      // uploadStream passes its params to CreateMultipartUpload whole, so every header rides along.
      const params = { Bucket: p.bucket, Key: p.key, ...sdk } as StreamUploadParams;
      await uploadStream(p.client, params, body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>, { partSize: p.partSize, queueSize: 1, signal });
    }
  } catch (err) {
    // A stage's own failure (a changed source, a failed tag) explains more than the SDK's "aborted".
    throw firstError() ?? err;
  } finally {
    body.destroy();
  }
  const failed = firstError();
  if (failed) throw failed;
}

function chain(first: Readable, ...rest: Duplex[]): Readable {
  return pipeline([first, ...rest] as unknown as [Readable, Duplex], () => {}) as unknown as Readable;
}

export interface EncryptedCopySpec {
  source: { client: S3Client; bucket: string; key: string; etag: string; size: number };
  destination: { client: S3Client; bucket: string; key: string };
  encryption: MirrorEncryption;
  multipartThreshold: number;
  partSize: number;
  signal?: AbortSignal;
}

/**
 * Copies one source object to the hub as age ciphertext under the same key. Two reads of exactly the
 * listed version (IfMatch): the first hashes the plaintext, because metadata goes out before the
 * bytes and must already carry the sha256; the second streams through age into the upload and is
 * hashed again, so a source that changed in between fails the copy instead of recording a wrong hash.
 */
export async function copyEncrypted(spec: EncryptedCopySpec): Promise<{ sha256: string; ciphertextBytes: number }> {
  const { source, destination, encryption } = spec;
  const get = () => source.client.send(new GetObjectCommand({ Bucket: source.bucket, Key: source.key, IfMatch: source.etag }), { abortSignal: spec.signal });
  const changed = (why: string) => new EncryptedCopyError(`the source object read ${why}; it changed during the copy, nothing was written`);

  const first = await get();
  const hashing = new Checked({ size: source.size, error: changed });
  await new Promise<void>((resolve, reject) => pipeline(first.Body as Readable, hashing, (err) => (err ? reject(err) : resolve())).resume());
  const sha256 = hashing.sha256;

  const h = wrapForMirror(headersOf(first), source.etag);
  const metadata = {
    ...h.metadata,
    [ENCRYPTION_METADATA]: 'age',
    [RECIPIENTS_METADATA]: encryption.fingerprints.join(','),
    [SOURCE_SIZE_METADATA]: String(source.size),
    [PLAINTEXT_SHA256_METADATA]: sha256,
    [ORIGINAL_HEADERS_METADATA]: encodeHeaders(h),
  };
  const length = encryption.ciphertextSize(source.size);
  const upload = async () => {
    const second = await get();
    const plain = new Checked({ size: source.size, sha256, error: changed });
    const age = encryption.stage();
    const cipher = new Checked({ size: length, error: (why) => new EncryptedCopyError(`the ciphertext came out as ${why}; nothing was written`) });
    await putKnownLength(chain(second.Body as Readable, plain, age, cipher), [plain, age, cipher], {
      client: destination.client, bucket: destination.bucket, key: destination.key,
      headers: { contentType: 'application/octet-stream', metadata }, length,
      multipartThreshold: spec.multipartThreshold, partSize: spec.partSize, signal: spec.signal,
    });
  };
  await (length > spec.multipartThreshold ? bufferedUploads.run(upload) : upload());
  return { sha256, ciphertextBytes: length };
}

/** The parts of a hub object's record a check needs, or why it is not an encrypted copy. */
export interface EncryptedRecord {
  size: number;
  sha256: string;
  sourceEtag?: string;
}

export function encryptedRecord(metadata: Record<string, string>): EncryptedRecord | undefined {
  if (!isEncryptedCopy(metadata)) return undefined;
  const size = Number(metadata[SOURCE_SIZE_METADATA]);
  const sha256 = metadata[PLAINTEXT_SHA256_METADATA] ?? '';
  if (!Number.isSafeInteger(size) || size < 0 || !/^[0-9a-f]{64}$/.test(sha256)) return undefined;
  return { size, sha256, sourceEtag: metadata['lifeboat-source-etag'] };
}

/** HEAD of a hub object (a version of it, when given): its size and metadata, undefined when gone. */
export async function headVersion(client: S3Client, bucket: string, key: string, versionId: string | undefined, signal?: AbortSignal): Promise<{ size: number; metadata: Record<string, string> } | undefined> {
  try {
    const r = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }), { abortSignal: signal });
    return { size: r.ContentLength ?? 0, metadata: r.Metadata ?? {} };
  } catch (err) {
    if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404) return undefined;
    throw err;
  }
}

export interface DecryptedCopySpec {
  /** size: the hub object's (the ciphertext's). */
  source: { client: S3Client; bucket: string; key: string; etag: string; size: number; versionId?: string };
  destination: { client: S3Client; bucket: string; key: string };
  decrypt: () => Duplex;
  multipartThreshold: number;
  partSize: number;
  signal?: AbortSignal;
}

/**
 * Copies an encrypted hub object back out as its plaintext, with the source's headers. The decrypted
 * bytes must match the recorded size and sha256 before the upload completes; a damaged or swapped
 * ciphertext fails with a DecryptionError and writes nothing. `undefined`: the object carries no
 * marker (a plaintext copy), and nothing was written; the caller copies it as it is.
 */
export async function copyDecrypted(spec: DecryptedCopySpec): Promise<{ sha256: string; size: number } | undefined> {
  // The plaintext is shorter than the ciphertext: this may be a multipart upload.
  return spec.source.size > spec.multipartThreshold ? bufferedUploads.run(() => decryptNow(spec)) : decryptNow(spec);
}

async function decryptNow(spec: DecryptedCopySpec): Promise<{ sha256: string; size: number } | undefined> {
  const { source, destination } = spec;
  const r = await source.client.send(
    new GetObjectCommand({ Bucket: source.bucket, Key: source.key, ...(source.versionId ? { VersionId: source.versionId } : { IfMatch: source.etag }) }),
    { abortSignal: spec.signal },
  );
  const metadata = r.Metadata ?? {};
  if (!isEncryptedCopy(metadata)) {
    (r.Body as Readable).destroy();
    return undefined;
  }
  const record = encryptedRecord(metadata);
  if (!record) {
    (r.Body as Readable).destroy();
    throw new DecryptionError(`its encryption record (${SOURCE_SIZE_METADATA}, ${PLAINTEXT_SHA256_METADATA}) is missing or malformed`);
  }
  const headers = originalHeaders(metadata);
  // A source ETag that is a plain MD5 comes back as one PUT (up to S3's 5 GiB), so the restored object
  // has that same ETag and a later restore sees it as already there.
  const singlePut = PLAIN_MD5.test(record.sourceEtag ?? '') ? Math.max(spec.multipartThreshold, MAX_SINGLE_PUT) : spec.multipartThreshold;
  const decrypt = spec.decrypt();
  const plain = new Checked({ size: record.size, sha256: record.sha256, error: (why) => new PlaintextMismatchError(`decrypted to ${why} (the mirror recorded the source's); the hub's ciphertext was replaced or belongs to another object`) });
  await putKnownLength(chain(r.Body as Readable, decrypt, plain), [decrypt, plain], {
    client: destination.client, bucket: destination.bucket, key: destination.key, headers, length: record.size,
    multipartThreshold: singlePut, partSize: spec.partSize, signal: spec.signal,
  });
  return { sha256: record.sha256, size: record.size };
}

/** Decrypts a hub object and hashes the plaintext (for sample checks): nothing is written anywhere. */
export async function decryptedHash(client: S3Client, bucket: string, key: string, decrypt: () => Duplex, signal?: AbortSignal): Promise<{ sha256: string; size: number; record?: EncryptedRecord }> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
  const record = encryptedRecord(r.Metadata ?? {});
  if (!record) {
    (r.Body as Readable).destroy();
    throw new DecryptionError(`the hub's copy has no ${ENCRYPTION_METADATA} marker: it is a plaintext copy`);
  }
  const counted = new Checked({ error: (why) => new Error(why) });
  const out = chain(r.Body as Readable, decrypt(), counted);
  for await (const _ of out) {
    // drained: Checked hashes as it passes
  }
  return { sha256: counted.sha256, size: counted.bytes, record };
}
