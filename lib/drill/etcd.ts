import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { listBackups } from '../catalog/catalog.js';
import { DRILL_FILE, siblingKey } from '../catalog/layout.js';
import type { Check } from '../catalog/manifest.js';
import type { EtcdDataset } from '../config/schema.js';
import { downloadToFile, snapshotChecks } from '../etcd/download.js';
import { fileRangeSource } from '../etcd/local.js';
import { extractZipSnapshot, parseSnapshotName } from '../etcd/snapshot.js';
import { findSnapshotTool, restoreSnapshot, snapshotStatus, SnapshotToolMissingError, type SnapshotStatus, type SnapshotTool } from '../etcd/tool.js';
import { CommandError } from '../postgres/process.js';
import { errorMessage, PermanentError } from '../../queue/errors.js';
import { drillDecrypter, type Drill } from './types.js';
import { plaintextName } from '../crypto/age.js';

/** What a failed restore's detail quotes of the tool's stderr. */
const STDERR_TAIL = 600;

const exists = (path: string) => stat(path).then(() => true, () => false);
/** The tool's own error lines, without its JSON log lines (etcd logs with zap); else its last line. */
function stderrSummary(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => !l.startsWith('{'));
  const text = errors.length > 0 ? errors.join(' | ') : (lines.at(-1) ?? '');
  return text.length > STDERR_TAIL ? `${text.slice(0, STDERR_TAIL)}…` : text;
}

/**
 * Restores the newest snapshot into a temp dir with etcdutl (or etcdctl) `snapshot restore`, which
 * checks its sha256 trailer and builds a member dir; nothing is started. The temp dir always goes.
 */
export const drillEtcd: Drill<EtcdDataset> = async (dataset, { deps, log, signal, tick }, input) => {
  const store = deps.storeFor(dataset);
  const backups = await listBackups(store, dataset, { signal });
  const entry = input.backup ? backups.find((b) => b.id === input.backup) : backups.find((b) => b.tick.getTime() <= tick.getTime());
  if (!entry) throw new PermanentError(input.backup ? `dataset ${dataset.id} has no snapshot ${input.backup}` : `dataset ${dataset.id} has no snapshot to drill`);
  const { artifact } = entry.manifest;
  // The file name comes from the target: only a real snapshot name, never a path.
  const name = plaintextName(basename(artifact.key));
  const parsed = parseSnapshotName(name);
  if (!parsed) throw new PermanentError(`dataset ${dataset.id} backup ${entry.id}: its artifact ${artifact.key} is not named like a k3s snapshot`);
  const recordKey = siblingKey(artifact.key, DRILL_FILE);
  const opened = drillDecrypter(entry.manifest.artifact.encryption !== undefined, dataset, `drill snapshot ${entry.id}`, { backup: entry.id, key: artifact.key, recordKey, mode: 'temp-dir', where: 'temp dir (not created)' });
  if ('result' in opened) return opened.result;
  const { decrypt } = opened;

  const checks: Check[] = [];
  const details: Record<string, unknown> = { snapshot: name, takenAt: parsed.createdAt.toISOString(), bytes: artifact.size };
  let retryable: unknown;
  let restoreMs = 0;
  let dir: string | undefined;
  try {
    const tool = await findSnapshotTool(dataset.drill, 'drill').catch((err: unknown) => {
      throw err instanceof SnapshotToolMissingError ? new SnapshotToolMissingError(`dataset ${dataset.id}: ${err.message}`) : err;
    });
    details.tool = tool.kind;
    dir = await mkdtemp(join(tmpdir(), 'lifeboat-etcd-drill-'));
    log.info({ backup: entry.id, key: artifact.key, dir, tool: tool.kind }, 'drill starting');
    const downloaded = join(dir, name);
    const got = await downloadToFile(await store.get(artifact.key, { signal }), downloaded, { checkTrailer: !parsed.zip, decrypt });
    const integrity = await snapshotChecks(downloaded, parsed.zip, got, artifact);
    checks.push(...integrity.map((c) => (c.name === 'sha256 (manifest)' ? { ...c, name: 'download', detail: c.ok ? `${got.size} bytes, sha256 matches the manifest` : c.detail } : c)));
    // A zip that cannot be opened has nothing to restore; its checks already say why.
    const file = parsed.zip ? await unzipped(downloaded, got.plaintext?.size ?? got.size, join(dir, name.replace(/\.zip$/, '')), checks) : downloaded;
    if (file) {
      const started = Date.now();
      checks.push(await restoreCheck(tool, file, join(dir, 'restored'), signal));
      restoreMs = Date.now() - started;
      if (checks.at(-1)!.ok) checks.push(await memberCheck(join(dir, 'restored')));
      Object.assign(details, await status(tool, file, signal, log));
    }
  } catch (err) {
    // A missing tool, an unreachable target, a full disk: nothing said about the snapshot; may be retried.
    retryable = err;
    checks.push({ name: checks.some((c) => c.name === 'download') ? 'snapshot restore' : dir ? 'download' : 'snapshot tool', ok: false, detail: errorMessage(err) });
  } finally {
    if (dir) {
      await rm(dir, { recursive: true, force: true }).catch((err: unknown) => log.error({ err: errorMessage(err), dir }, 'drill cleanup failed'));
      const left = await exists(dir);
      checks.push({ name: 'temp dir cleanup', ok: !left, detail: left ? `${dir} could not be removed` : `removed ${dir}` });
    }
  }

  return {
    backup: entry.id,
    key: artifact.key,
    recordKey,
    mode: 'temp-dir',
    where: dir ? `temp dir ${dir}` : 'temp dir (not created)',
    restoreMs,
    checks,
    retryable,
    details,
  };
};

/** The snapshot inside a k3s zip, or undefined (with a failed check) when the zip itself is damaged. */
async function unzipped(zip: string, size: number, file: string, checks: Check[]): Promise<string | undefined> {
  if (checks.some((c) => c.name === 'zip' && !c.ok)) return undefined;
  try {
    const { entry } = await extractZipSnapshot(fileRangeSource(zip, size), file);
    checks.push({ name: 'unzip', ok: true, detail: `extracted ${entry}` });
    return file;
  } catch (err) {
    // The local disk failing says nothing about the snapshot.
    if (['ENOSPC', 'EACCES', 'EROFS', 'EDQUOT'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    checks.push({ name: 'unzip', ok: false, detail: `cannot extract the snapshot: ${errorMessage(err)}` });
    return undefined;
  }
}

/** A non-zero exit is a verdict on the snapshot (bad trailer, not a bolt db): final. */
async function restoreCheck(tool: SnapshotTool, file: string, dataDir: string, signal: AbortSignal): Promise<Check> {
  try {
    await restoreSnapshot(tool, file, dataDir, signal);
    return { name: 'snapshot restore', ok: true, detail: `${tool.kind} snapshot restore exited 0` };
  } catch (err) {
    if (!(err instanceof CommandError) || signal.aborted) throw err;
    const how = err.exitCode === null ? `was killed by ${err.signal}` : `exited ${err.exitCode}`;
    return { name: 'snapshot restore', ok: false, detail: `${tool.kind} snapshot restore ${how}: ${stderrSummary(err.stderr) || 'no stderr'}` };
  }
}

async function memberCheck(dataDir: string): Promise<Check> {
  const wanted = ['member/snap/db', 'member/wal'];
  const missing: string[] = [];
  for (const path of wanted) if (!(await exists(join(dataDir, path)))) missing.push(path);
  return { name: 'member dir', ok: missing.length === 0, detail: missing.length === 0 ? `restored ${wanted.join(' and ')}` : `missing after restore: ${missing.join(', ')}` };
}

/** Revision and key count for the record; a tool without `snapshot status` costs the figures, not the drill. */
async function status(tool: SnapshotTool, file: string, signal: AbortSignal, log: { warn: (o: object, m: string) => void }): Promise<Partial<SnapshotStatus>> {
  try {
    const { revision, totalKey, totalSize } = await snapshotStatus(tool, file, signal);
    return { revision, totalKey, totalSize };
  } catch (err) {
    if (signal.aborted) throw err;
    log.warn({ err: errorMessage(err) }, 'snapshot status unavailable');
    return {};
  }
}
