import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createRequire } from 'node:module';
import yauzl from 'yauzl';
import type { Check } from '../catalog/manifest.js';

// buffer-crc32's types describe a CommonJS export; load it as one.
const crc32 = createRequire(import.meta.url)('buffer-crc32') as typeof import('buffer-crc32');

/** k3s names snapshots etcd-snapshot-<node>-<unix seconds> or on-demand-<node>-<unix seconds>, plus .zip when compressed. */
const SNAPSHOT_NAME = /^(etcd-snapshot|on-demand)-(.+)-(\d{9,11})(\.zip)?$/;

export interface SnapshotName {
  name: string;
  trigger: 'scheduled' | 'on-demand';
  node: string;
  createdAt: Date;
  zip: boolean;
}

export function parseSnapshotName(name: string): SnapshotName | undefined {
  const m = SNAPSHOT_NAME.exec(name);
  if (!m) return undefined;
  return { name, trigger: m[1] === 'on-demand' ? 'on-demand' : 'scheduled', node: m[2]!, createdAt: new Date(Number(m[3]) * 1000), zip: m[4] === '.zip' };
}

const TRAILER = 32;

/**
 * Hashes a raw etcd snapshot: `etcdctl snapshot save` appends the sha256 of everything before it as the
 * last 32 bytes (`snapshot status` does not check it; `snapshot restore` does). Returns the sha256 of the
 * whole file too, for the manifest.
 */
export async function inspectRawSnapshot(stream: AsyncIterable<Buffer>): Promise<{ size: number; sha256: string; check: Check }> {
  const body = createHash('sha256');
  const whole = createHash('sha256');
  let held = Buffer.alloc(0);
  let size = 0;
  for await (const chunk of stream) {
    whole.update(chunk);
    size += chunk.length;
    const joined = held.length ? Buffer.concat([held, chunk]) : chunk;
    if (joined.length > TRAILER) {
      body.update(joined.subarray(0, joined.length - TRAILER));
      held = Buffer.from(joined.subarray(joined.length - TRAILER));
    } else held = Buffer.from(joined);
  }
  const ok = held.length === TRAILER && held.equals(body.digest());
  return {
    size,
    sha256: whole.digest('hex'),
    check: { name: 'snapshot sha256 trailer', ok, detail: ok ? 'the last 32 bytes are the sha256 of the rest' : size < TRAILER ? `only ${size} bytes` : 'the last 32 bytes do not match the sha256 of the rest' },
  };
}

/** Random access to a file or an object: what a zip's central directory needs. */
export interface RangeSource {
  size: number;
  /** Bytes [start, end). */
  read(start: number, end: number): Promise<Readable>;
}

class RangeReader extends yauzl.RandomAccessReader {
  constructor(private readonly source: RangeSource) {
    super();
  }
  override _readStreamForRange(start: number, end: number): Readable {
    const out = new PassThrough();
    this.source.read(start, end).then(
      (stream) => stream.on('error', (err) => out.destroy(err)).pipe(out),
      (err: unknown) => out.destroy(err as Error),
    );
    return out;
  }
}

function openZip(source: RangeSource): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.fromRandomAccessReader(new RangeReader(source), source.size, { lazyEntries: true, autoClose: false }, (err, zip) => (err ? reject(err) : resolve(zip!))),
  );
}

/**
 * Checks a compressed k3s snapshot: every entry inflates with the CRC32 its header promises, and the
 * snapshot inside carries a valid sha256 trailer.
 */
export async function inspectZipSnapshot(source: RangeSource): Promise<Check[]> {
  let zip: yauzl.ZipFile;
  try {
    zip = await openZip(source);
  } catch (err) {
    return [{ name: 'zip', ok: false, detail: `not a readable zip: ${(err as Error).message}` }];
  }
  const checks: Check[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('error', reject);
      zip.on('end', resolve);
      zip.on('entry', (entry: yauzl.Entry) => {
        if (entry.fileName.endsWith('/')) return zip.readEntry();
        zip.openReadStream(entry, (err, stream) => {
          if (err || !stream) {
            checks.push({ name: `zip entry ${entry.fileName}`, ok: false, detail: err?.message ?? 'cannot open' });
            return zip.readEntry();
          }
          let crc = 0;
          const counted = (async function* () {
            for await (const chunk of stream as AsyncIterable<Buffer>) {
              crc = crc32.unsigned(chunk, crc);
              yield chunk;
            }
          })();
          inspectRawSnapshot(counted).then(
            ({ check }) => {
              checks.push({ name: `zip crc32 ${entry.fileName}`, ok: crc === entry.crc32, detail: crc === entry.crc32 ? 'matches' : `computed ${crc.toString(16)}, header says ${entry.crc32.toString(16)}` });
              checks.push({ ...check, name: `${check.name} (${entry.fileName})` });
              zip.readEntry();
            },
            (e: unknown) => {
              checks.push({ name: `zip entry ${entry.fileName}`, ok: false, detail: `inflate failed: ${(e as Error).message}` });
              zip.readEntry();
            },
          );
        });
      });
      zip.readEntry();
    });
  } catch (err) {
    checks.push({ name: 'zip', ok: false, detail: (err as Error).message });
  } finally {
    zip.close();
  }
  if (checks.length === 0) checks.push({ name: 'zip', ok: false, detail: 'no file inside' });
  return checks;
}

/**
 * Writes the snapshot a k3s .zip holds (its one file) to `file`, created 0600. The entry's name is not
 * used as a path, so a hostile zip cannot write elsewhere. Pair it with inspectZipSnapshot for the checks.
 */
export async function extractZipSnapshot(source: RangeSource, file: string): Promise<{ entry: string; size: number }> {
  const zip = await openZip(source);
  try {
    const entry = await new Promise<yauzl.Entry>((resolve, reject) => {
      zip.on('error', reject);
      zip.on('end', () => reject(new Error('the zip holds no file')));
      zip.on('entry', (e: yauzl.Entry) => (e.fileName.endsWith('/') ? zip.readEntry() : resolve(e)));
      zip.readEntry();
    });
    const stream = await new Promise<Readable>((resolve, reject) => zip.openReadStream(entry, (err, s) => (err || !s ? reject(err ?? new Error(`cannot open ${entry.fileName}`)) : resolve(s))));
    let size = 0;
    await pipeline(
      stream,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          size += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(file, { flags: 'wx', mode: 0o600 }),
    );
    return { entry: entry.fileName, size };
  } finally {
    zip.close();
  }
}
