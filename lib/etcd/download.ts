import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Check } from '../catalog/manifest.js';
import { fileRangeSource } from './local.js';
import { inspectRawSnapshot, inspectZipSnapshot } from './snapshot.js';

export interface Downloaded {
  size: number;
  sha256: string;
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
export async function downloadToFile(stream: Readable, file: string, options: { checkTrailer: boolean; onProgress?: (bytes: number) => void }): Promise<Downloaded> {
  const whole = createHash('sha256');
  let size = 0;
  const tap = options.checkTrailer ? new PassThrough() : undefined;
  const trailer = tap ? inspectRawSnapshot(tap) : undefined;
  trailer?.catch(() => {}); // awaited below; a broken download rejects the pipeline first
  try {
    await pipeline(
      stream,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          whole.update(chunk);
          size += chunk.length;
          options.onProgress?.(size);
          if (tap && !tap.write(chunk)) await once(tap, 'drain');
          yield chunk;
        }
        tap?.end();
      },
      createWriteStream(file, { flags: 'wx', mode: 0o600 }),
    );
    await fsyncPath(file);
    return { size, sha256: whole.digest('hex'), trailer: trailer ? (await trailer).check : undefined };
  } catch (err) {
    tap?.destroy();
    await unlink(file).catch(() => {});
    throw err;
  }
}

/** The integrity checks of a downloaded snapshot: the manifest's sha256 and size, then the snapshot's own (zip CRCs and inner trailer, or the raw trailer). */
export async function snapshotChecks(file: string, zip: boolean, got: Downloaded, expected: { sha256: string; size: number }): Promise<Check[]> {
  const manifestOk = got.sha256 === expected.sha256 && got.size === expected.size;
  const checks: Check[] = [{ name: 'sha256 (manifest)', ok: manifestOk, detail: manifestOk ? 'matches the manifest' : `sha256 ${got.sha256}, ${got.size} bytes; manifest ${expected.sha256}, ${expected.size} bytes` }];
  if (zip) checks.push(...(await inspectZipSnapshot(fileRangeSource(file, got.size))));
  else if (got.trailer) checks.push(got.trailer);
  return checks;
}
