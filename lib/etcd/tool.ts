import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { capture } from '../postgres/process.js';

/** The binary that restores and inspects snapshot files: etcdutl (etcd 3.5+), else etcdctl (3.4 has no etcdutl). */
export interface SnapshotTool {
  kind: 'etcdutl' | 'etcdctl';
  path: string;
}

/** The configured or PATH binary is not there; retrying after installing it (or fixing the path) can pass. */
export class SnapshotToolMissingError extends Error {
  override name = 'SnapshotToolMissingError';
}

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(() => true, () => false);
}

/** A path as given (with a slash), else the first match on PATH. */
async function locate(command: string, path = process.env.PATH ?? ''): Promise<string | undefined> {
  if (command.includes('/')) return (await executable(command)) ? command : undefined;
  for (const dir of path.split(delimiter).filter(Boolean)) {
    if (await executable(join(dir, command))) return join(dir, command);
  }
  return undefined;
}

/**
 * A configured binary wins (etcdutl first), and must exist; without one, etcdutl on PATH, else etcdctl.
 * `field` is the config path of the binaries ("datasets[id=k3s].drill"), for the error.
 */
export async function findSnapshotTool(configured: { etcdutl?: string; etcdctl?: string }, field: string): Promise<SnapshotTool> {
  for (const kind of ['etcdutl', 'etcdctl'] as const) {
    const wanted = configured[kind];
    if (wanted === undefined) continue;
    const path = await locate(wanted);
    if (!path) throw new SnapshotToolMissingError(`${kind} not found at ${wanted} (${field}.${kind}); install it or fix the path`);
    return { kind, path };
  }
  for (const kind of ['etcdutl', 'etcdctl'] as const) {
    const path = await locate(kind);
    if (path) return { kind, path };
  }
  throw new SnapshotToolMissingError(`neither etcdutl nor etcdctl is on PATH; install etcd's tools (Debian: etcd-client) or set ${field}.etcdutl or ${field}.etcdctl`);
}

// etcdctl 3.4 needs the v3 API named; 3.5 deprecates its snapshot commands in favour of etcdutl.
const toolEnv = (tool: SnapshotTool) => (tool.kind === 'etcdctl' ? { ...process.env, ETCDCTL_API: '3' } : process.env);

/** `snapshot restore` into a new data dir; rejects with the tool's stderr tail (CommandError). It checks the sha256 trailer. */
export async function restoreSnapshot(tool: SnapshotTool, file: string, dataDir: string, signal?: AbortSignal): Promise<void> {
  await capture(tool.path, ['snapshot', 'restore', file, '--data-dir', dataDir], { env: toolEnv(tool), signal });
}

export interface SnapshotStatus {
  hash?: number;
  revision?: number;
  totalKey?: number;
  totalSize?: number;
}

/** `snapshot status -w json` (it does not check the trailer). */
export async function snapshotStatus(tool: SnapshotTool, file: string, signal?: AbortSignal): Promise<SnapshotStatus> {
  const out = await capture(tool.path, ['snapshot', 'status', file, '-w', 'json'], { env: toolEnv(tool), signal });
  const parsed = JSON.parse(out.trim()) as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return { hash: num(parsed.hash), revision: num(parsed.revision), totalKey: num(parsed.totalKey), totalSize: num(parsed.totalSize) };
}
