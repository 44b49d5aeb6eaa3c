import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Check } from '../catalog/manifest.js';
import { hashStream } from '../targets/hash.js';
import type { TargetStore } from '../targets/store.js';
import { inspectRawSnapshot, inspectZipSnapshot, parseSnapshotName, type RangeSource, type SnapshotName } from './snapshot.js';

export interface LocalSnapshot extends SnapshotName {
  path: string;
  size: number;
  mtimeMs: number;
}

/** The k3s snapshots in a directory, oldest first; other files (metadata, temp files) are ignored. */
export async function listLocalSnapshots(dir: string): Promise<LocalSnapshot[]> {
  const out: LocalSnapshot[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const parsed = entry.isFile() ? parseSnapshotName(entry.name) : undefined;
    if (!parsed) continue;
    const s = await stat(join(dir, entry.name));
    out.push({ ...parsed, path: join(dir, entry.name), size: s.size, mtimeMs: s.mtimeMs });
  }
  return out.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.name.localeCompare(b.name));
}

export function fileRangeSource(path: string, size: number): RangeSource {
  return { size, read: async (start, end) => createReadStream(path, { start, end: end - 1 }) };
}

export function objectRangeSource(store: TargetStore, key: string, size: number, signal?: AbortSignal): RangeSource {
  return { size, read: (start, end) => store.get(key, { range: { start, end: end - 1 }, signal }) };
}

/** sha256 of the file and its integrity checks: the trailer of a raw snapshot, or CRCs and the inner trailer of a zip. */
export async function inspectSnapshotFile(snapshot: LocalSnapshot): Promise<{ sha256: string; size: number; checks: Check[] }> {
  if (!snapshot.zip) {
    const { sha256, size, check } = await inspectRawSnapshot(createReadStream(snapshot.path));
    return { sha256, size, checks: [check] };
  }
  const { sha256, size } = await hashStream(createReadStream(snapshot.path));
  return { sha256, size, checks: await inspectZipSnapshot(fileRangeSource(snapshot.path, size)) };
}
