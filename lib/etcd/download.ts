import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { once } from 'node:events';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Check } from '../catalog/manifest.js';
import { fileRangeSource } from './local.js';
import { inspectRawSnapshot, inspectZipSnapshot } from './snapshot.js';

export interface Downloaded {
  /** Of the object as stored (the ciphertext, when encrypted). */
  size: number;
  sha256: string;
  /** Of the file written, when it was decrypted on the way. */
  plaintext?: { size: number; sha256: string };
  /** The raw snapshot's trailer, checked while streaming. */
  trailer?: Check;
}

export async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Streams an object into a new file created 0600 (a snapshot and a token are both cluster secrets),
 * hashing it on the way (and checking a raw snapshot's sha256 trailer), then fsyncs. On failure the
 * file is removed.
 */
export async function downloadToFile(stream: Readable, file: string, options: { checkTrailer: boolean; onProgress?: (bytes: number) => void; decrypt?: () => Duplex }): Promise<Downloaded> {
  const stored = createHash('sha256');
  const written = createHash('sha256');
  let size = 0;
  let plainSize = 0;
  const tap = options.checkTrailer ? new PassThrough() : undefined;
  const trailer = tap ? inspectRawSnapshot(tap) : undefined;
  trailer?.catch(() => {}); // awaited below; a broken download rejects the pipeline first
  const counted = async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      stored.update(chunk);
      size += chunk.length;
      options.onProgress?.(size);
      yield chunk;
    }
  };
  const checked = async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      written.update(chunk);
      plainSize += chunk.length;
      if (tap && !tap.write(chunk)) await once(tap, 'drain');
      yield chunk;
    }
    tap?.end();
  };
  try {
    const sink = createWriteStream(file, { flags: 'wx', mode: 0o600 });
    await (options.decrypt ? pipeline(stream, counted, options.decrypt(), checked, sink) : pipeline(stream, counted, checked, sink));
    await fsyncPath(file);
    const sha256 = stored.digest('hex');
    const plaintext = options.decrypt ? { size: plainSize, sha256: written.digest('hex') } : undefined;
    return { size, sha256, plaintext, trailer: trailer ? (await trailer).check : undefined };
  } catch (err) {
    tap?.destroy();
    await unlink(file).catch(() => {});
    throw err;
  }
}

/** The integrity checks of a downloaded snapshot: the manifest's sha256 and size, then the snapshot's own (zip CRCs and inner trailer, or the raw trailer). */
export async function snapshotChecks(file: string, zip: boolean, got: Downloaded, expected: { sha256: string; size: number; encryption?: { plaintext: { sha256: string; size: number } } }): Promise<Check[]> {
  const manifestOk = got.sha256 === expected.sha256 && got.size === expected.size;
  const checks: Check[] = [{ name: 'sha256 (manifest)', ok: manifestOk, detail: manifestOk ? 'matches the manifest' : `sha256 ${got.sha256}, ${got.size} bytes; manifest ${expected.sha256}, ${expected.size} bytes` }];
  const plain = expected.encryption?.plaintext;
  if (plain) {
    const ok = got.plaintext?.sha256 === plain.sha256 && got.plaintext.size === plain.size;
    checks.push({ name: 'decrypt', ok, detail: ok ? 'decrypted; the snapshot matches the manifest\'s plaintext sha256' : `decrypted to sha256 ${got.plaintext?.sha256}, ${got.plaintext?.size} bytes; manifest ${plain.sha256}, ${plain.size} bytes` });
  }
  if (zip) checks.push(...(await inspectZipSnapshot(fileRangeSource(file, got.plaintext?.size ?? got.size))));
  else if (got.trailer) checks.push(got.trailer);
  return checks;
}
