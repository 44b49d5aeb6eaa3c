import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createGunzip } from 'node:zlib';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { DecryptionError } from '../crypto/age.js';
import { ageHeaderCheck, MAX_HEADER_BYTES } from '../crypto/header.js';
import { inspectRawSnapshot } from '../etcd/snapshot.js';
import type { Check, Manifest } from './manifest.js';
import { TailBuffer } from '../postgres/process.js';
import { DUMPALL_TRAILER, TRAILER_WINDOW, hasDumpallTrailer } from '../postgres/dumpall.js';

export interface Inspection {
  size: number;
  sha256: string;
  /** sha256 of the content after decompression (the same as sha256 when uncompressed); undefined when gzip failed. */
  contentSha256?: string;
  /** Content checks by format; size and sha256 are compared by the caller. */
  checks: Check[];
}

/**
 * Reads an artifact once: sha256 and size of the stored bytes, and (through gunzip, if compressed) the
 * content checks for its format. A gzip error is a finding, not an exception; a read error is thrown,
 * because it says nothing about the object.
 */
export async function inspectArtifact(stream: Readable, artifact: { compression: 'gzip' | 'none'; format: string }, signal?: AbortSignal): Promise<Inspection> {
  const hash = createHash('sha256');
  let size = 0;
  const tail = new TailBuffer(TRAILER_WINDOW);
  const checks: Check[] = [];

  const gunzip = artifact.compression === 'gzip' ? createGunzip() : undefined;
  const content = gunzip ? createHash('sha256') : undefined;
  let gzipError: Error | undefined;
  let gunzipDone: Promise<void> = Promise.resolve();
  if (gunzip) {
    gunzip.on('data', (c: Buffer) => {
      tail.push(c);
      content!.update(c);
    });
    gunzipDone = new Promise((resolve) => {
      gunzip.on('end', resolve);
      gunzip.on('error', (err) => {
        gzipError = err;
        resolve();
      });
    });
  }

  // A raw etcd snapshot is checked by its own sha256 trailer, in the same read.
  let snapshot: Promise<{ check: Check }> | undefined;
  let feedSnapshot: ((chunk: Buffer | null) => void) | undefined;
  if (artifact.format === 'etcd-snapshot') {
    const queue = new PassThrough();
    feedSnapshot = (chunk) => (chunk ? queue.write(chunk) : queue.end());
    snapshot = inspectRawSnapshot(queue);
  }
  // Reports are small JSON documents: keep them whole to read what they say.
  const whole: Buffer[] | undefined = artifact.format === 'mirror-report' ? [] : undefined;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    signal?.throwIfAborted();
    hash.update(chunk);
    size += chunk.length;
    if (whole && size <= 64 * 1024 * 1024) whole.push(chunk);
    feedSnapshot?.(chunk);
    if (!gunzip) tail.push(chunk);
    else if (!gzipError && !gunzip.write(chunk)) await Promise.race([once(gunzip, 'drain'), gunzipDone]);
  }
  if (gunzip) {
    if (!gzipError) gunzip.end();
    await gunzipDone;
    checks.push({ name: 'gzip', ok: !gzipError, detail: gzipError ? `gzip stream is damaged: ${gzipError.message}` : 'gzip stream intact' });
  }
  if (artifact.format === 'pg_dumpall') {
    const ok = !gzipError && hasDumpallTrailer(tail.toBuffer());
    checks.push({
      name: 'pg_dumpall trailer',
      ok,
      detail: ok ? `ends with "${DUMPALL_TRAILER}"` : gzipError ? 'not checked: gzip stream is damaged' : `"${DUMPALL_TRAILER}" missing from the end of the dump`,
    });
  }
  if (whole) checks.push(...mirrorReportChecks(Buffer.concat(whole)));
  if (snapshot) {
    feedSnapshot!(null);
    checks.push((await snapshot).check);
  }
  const sha256 = hash.digest('hex');
  return { size, sha256, contentSha256: content ? (gzipError ? undefined : content.digest('hex')) : sha256, checks };
}

type Artifact = Manifest['artifact'];

/**
 * Reads an age-encrypted artifact once. Without a decrypting stage: the ciphertext's sha256 and size,
 * and its age header. With one: also decrypts, and runs the format's checks on the plaintext
 * (gzip, trailer) plus the plaintext's sha256 against the manifest.
 */
export async function inspectEncryptedArtifact(stream: Readable, artifact: Artifact & { encryption: NonNullable<Artifact['encryption']> }, decrypt: { stage: () => Duplex } | { unavailable: string }, signal?: AbortSignal): Promise<Inspection> {
  const hash = createHash('sha256');
  const head: Buffer[] = [];
  let size = 0;
  // The plaintext side runs beside the read: a decryption failure is a finding, and the ciphertext is still read to the end for its sha256.
  const stage = 'stage' in decrypt ? decrypt.stage() : undefined;
  let decryptError: unknown;
  const stopped = stage && new Promise<void>((resolve) => stage.on('error', (err) => resolve(void (decryptError ??= err))));
  const inner = stage && inspectArtifact(stage, artifact, signal).catch((err: unknown) => void (decryptError ??= err));
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      hash.update(chunk);
      if (size < MAX_HEADER_BYTES) head.push(chunk.subarray(0, MAX_HEADER_BYTES - size));
      size += chunk.length;
      if (stage && decryptError === undefined && !stage.write(chunk)) await Promise.race([once(stage, 'drain'), stopped]);
    }
  } catch (err) {
    stage?.destroy();
    throw err;
  }
  stage?.end();
  const plain = await inner;
  const checks: Check[] = [ageHeaderCheck(Buffer.concat(head), size, artifact.encryption.recipients.length)];
  if (!stage) checks.push({ name: 'decrypt', ok: true, detail: `not decrypted: ${(decrypt as { unavailable: string }).unavailable}; the ciphertext's sha256 and age header were checked` });
  else if (decryptError !== undefined || !plain) {
    if (!(decryptError instanceof DecryptionError)) throw decryptError;
    checks.push({ name: 'decrypt', ok: false, detail: decryptError.message });
  } else {
    const expected = artifact.encryption.plaintext.sha256;
    const matches = plain.contentSha256 === expected;
    checks.push({ name: 'decrypt', ok: true, detail: `decrypted ${plain.size} bytes` }, ...plain.checks, {
      name: 'plaintext sha256',
      ok: matches,
      detail: matches ? 'matches the manifest' : plain.contentSha256 ? `${plain.contentSha256} differs from the manifest's ${expected}` : 'not checked: the content could not be decompressed',
    });
  }
  return { size, sha256: hash.digest('hex'), checks };
}
/** A mirror report vouches for its run: counts equal on both sides and the sha256 sample matched. */
function mirrorReportChecks(content: Buffer): Check[] {
  let report: { failed?: { count?: number }; verification?: { listing?: { ok?: boolean; missing?: number; sizeMismatch?: number; source?: { count?: number }; destination?: { count?: number } }; sample?: { checked?: number; mismatches?: unknown[] } } };
  try {
    report = JSON.parse(content.toString('utf8'));
  } catch {
    return [{ name: 'mirror report', ok: false, detail: 'not valid JSON' }];
  }
  const listing = report.verification?.listing;
  const sample = report.verification?.sample;
  return [
    { name: 'mirror counts', ok: listing?.ok === true, detail: `source ${listing?.source?.count} objects, destination ${listing?.destination?.count}; ${listing?.missing ?? '?'} missing, ${listing?.sizeMismatch ?? '?'} of a different size` },
    { name: 'mirror sample', ok: Array.isArray(sample?.mismatches) && sample.mismatches.length === 0, detail: `${sample?.checked ?? 0} objects compared by sha256, ${sample?.mismatches?.length ?? '?'} differ` },
    { name: 'mirror failures', ok: report.failed?.count === 0, detail: `${report.failed?.count ?? '?'} objects failed` },
  ];
}
