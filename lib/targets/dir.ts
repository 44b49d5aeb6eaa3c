import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HashingStream } from './hash.js';
import { ObjectNotFoundError, type HeadResult, type IncompleteUpload, type ObjectInfo, type PutOptions, type PutResult, type TargetStore } from './store.js';

/** Unfinished writes live here, outside the key space, until renamed into place. */
const TMP_DIR = '.lifeboat-tmp';

function etagOf(size: number, mtimeMs: number): string {
  return `"${size.toString(16)}-${Math.round(mtimeMs).toString(16)}"`;
}

/** S3 orders keys by UTF-8 bytes; a directory sorts as its name plus "/". */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * A bucket as a local directory: <path>/<bucket>/<key>. Writes go to a temp file, are fsynced, then
 * renamed, so a reader never sees a partial object.
 */
export class DirStore implements TargetStore {
  readonly label: string;
  readonly root: string;
  constructor(
    path: string,
    readonly target: string,
    readonly bucket: string,
  ) {
    this.root = join(path, bucket);
    this.label = `${target}/${bucket}`;
  }

  #file(key: string): string {
    if (key === '' || key.startsWith('/') || key.endsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..') || key.startsWith(TMP_DIR)) {
      throw new Error(`${this.label}: key ${JSON.stringify(key)} cannot be stored in a directory target`);
    }
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const file = this.#file(key);
    const tmpDir = join(this.root, TMP_DIR);
    await mkdir(tmpDir, { recursive: true });
    const tmp = join(tmpDir, randomUUID());
    const hashing = new HashingStream();
    try {
      await pipeline(body, hashing, createWriteStream(tmp, { flags: 'wx' }), { signal: options.signal });
      const handle = await open(tmp, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await mkdir(dirname(file), { recursive: true });
      await rename(tmp, file);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    const s = await stat(file);
    return { key, size: hashing.bytes, sha256: hashing.sha256, etag: etagOf(s.size, s.mtimeMs) };
  }

  async putJson(key: string, value: unknown, options: { signal?: AbortSignal } = {}): Promise<PutResult> {
    return this.put(key, Readable.from([Buffer.from(`${JSON.stringify(value, null, 2)}\n`)]), { contentType: 'application/json', signal: options.signal });
  }

  async get(key: string, options: { signal?: AbortSignal; range?: { start: number; end: number } } = {}): Promise<Readable> {
    const file = this.#file(key);
    const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' || err.code === 'EISDIR' ? new ObjectNotFoundError(this.label, key) : err;
    });
    return createReadStream('', { fd: handle, start: options.range?.start, end: options.range?.end, signal: options.signal });
  }

  async getJson<T>(key: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(this.#file(key), 'utf8')) as T;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR') return undefined;
      throw err;
    }
  }

  async head(key: string): Promise<HeadResult | undefined> {
    try {
      const s = await stat(this.#file(key));
      if (!s.isFile()) return undefined;
      return { key, size: s.size, etag: etagOf(s.size, s.mtimeMs), lastModified: s.mtime, metadata: {} };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async *list(prefix: string, options: { startAfter?: string } = {}): AsyncIterable<ObjectInfo> {
    const startAfter = options.startAfter ?? '';
    const self = this;
    async function* walk(dir: string, keyPrefix: string): AsyncIterable<ObjectInfo> {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      const named = entries
        .filter((e) => !(keyPrefix === '' && e.name === TMP_DIR))
        .map((e) => ({ entry: e, sortKey: e.isDirectory() ? `${e.name}/` : e.name }))
        .sort((a, b) => byteOrder(a.sortKey, b.sortKey));
      for (const { entry, sortKey } of named) {
        const key = keyPrefix + sortKey;
        if (entry.isDirectory()) {
          // Descend only where keys can both match the prefix and come after startAfter.
          if (!(key.startsWith(prefix) || prefix.startsWith(key))) continue;
          if (startAfter && !startAfter.startsWith(key) && byteOrder(key, startAfter) < 0) continue;
          yield* walk(join(dir, entry.name), key);
        } else if (entry.isFile() && key.startsWith(prefix) && byteOrder(key, startAfter) > 0) {
          const s = await stat(join(dir, entry.name));
          yield { key, size: s.size, etag: etagOf(s.size, s.mtimeMs), lastModified: s.mtime };
        }
      }
    }
    yield* walk(self.root, '');
  }

  async delete(keys: string[]): Promise<void> {
    for (const key of keys) {
      await rm(this.#file(key), { force: true });
      // Remove directories the delete left empty, as S3 has no directories to leave behind.
      let dir = dirname(this.#file(key));
      while (dir.startsWith(this.root + sep)) {
        try {
          await rmdir(dir);
        } catch {
          break;
        }
        dir = dirname(dir);
      }
    }
  }

  /** A dir target's unfinished writes are the temp files a killed process left behind. */
  async *incompleteUploads(): AsyncIterable<IncompleteUpload> {
    const dir = join(this.root, TMP_DIR);
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      const s = await stat(join(dir, name)).catch(() => undefined);
      if (s) yield { key: `${TMP_DIR}/${name}`, id: name, initiated: s.mtime };
    }
  }

  async abortIncomplete(upload: IncompleteUpload): Promise<void> {
    await rm(join(this.root, TMP_DIR, upload.id), { force: true });
  }

  async ensureBucket(): Promise<void> {
    await mkdir(this.root, { recursive: true });
  }
}
