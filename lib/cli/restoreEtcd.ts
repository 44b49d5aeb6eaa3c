import { randomBytes } from 'node:crypto';
import { link, lstat, mkdir, rename, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { listBackups } from '../catalog/catalog.js';
import { serverTokenKey } from '../catalog/layout.js';
import type { Config, EtcdDataset } from '../config/schema.js';
import { downloadToFile, fsyncPath, snapshotChecks } from '../etcd/download.js';
import { parseSnapshotName } from '../etcd/snapshot.js';
import { DecryptionError, plaintextName } from '../crypto/age.js';
import { decrypterFor } from '../crypto/identity.js';
import { openLocal } from '../plumbing/deps.js';
import { ObjectNotFoundError, type TargetStore } from '../targets/store.js';
import { CliError, EXIT, inlineRetries } from './exit.js';
import { formatBytes } from './format.js';
import { cliDataset, pickBackup, progressPrinter, readStep } from './steps.js';

export const ETCD_RUNBOOK = 'docs/runbooks/restore-etcd.md';
const TOKEN_FILE = 'token';

export interface RestoreEtcdOptions {
  dataset: string;
  /** `latest` or a snapshot name (the backup id). */
  backup: string;
  toDir: string;
  force?: boolean;
  retries?: number;
  /** The age identity file, instead of the dataset's encryption.identityFile. */
  identity?: string;
}



/**
 * What `lifeboat restore` runs for a dataset of any kind: etcd restores into `--to-dir`, postgres into
 * `--to`. The wrong option for the kind is a usage error, before anything is read.
 */

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
}

/** A temp name in the same directory (so the rename is atomic) that no snapshot name can collide with. */
function tempPath(dir: string, name: string): string {
  return join(dir, `.${name}.lifeboat-${randomBytes(6).toString('hex')}.partial`);
}

/** Moves a checked temp file to its final name: replacing only with force, so a race never clobbers a file. */
async function publish(tmp: string, final: string, force: boolean): Promise<void> {
  try {
    if (force) await rename(tmp, final);
    else {
      await link(tmp, final).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST' ? new CliError(`${final} already exists; not overwriting it without --force`, EXIT.failed) : err;
      });
      await unlink(tmp);
    }
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

type TokenOutcome = { state: 'written'; path: string } | { state: 'absent'; key: string } | { state: 'not uploaded' };

/**
 * `lifeboat restore <etcd dataset> --to-dir DIR`: downloads a k3s snapshot (and the server token) from
 * the target, checks it end to end, and prints the k3s commands that restore it. Needs only the target.
 */
/** What `restore --json` prints for an etcd restore. */
export interface EtcdRestoreResult {
  ok: true;
  dataset: string;
  backup: string;
  key: string;
  snapshot: string;
  bytes: number;
  sha256: string;
  token: { state: 'written'; path: string } | { state: 'absent' | 'not uploaded' };
  /** The k3s commands that restore the cluster from it. */
  commands: string[];
}

export async function restoreEtcdCommand(config: Config, log: Logger, opts: RestoreEtcdOptions): Promise<EtcdRestoreResult> {
  const dataset = cliDataset(config, opts.dataset, 'etcd');
  if (!opts.toDir) throw new CliError(`dataset ${dataset.id} is an etcd dataset: --to-dir DIR is required (where the snapshot and the token are written)`, EXIT.usage);
  const dir = resolve(opts.toDir);
  const force = opts.force ?? false;
  const out = (line: string) => process.stderr.write(`${line}\n`);
  const policy = inlineRetries(opts.retries);
  const deps = openLocal(config, log);
  try {
    const store = deps.storeFor(dataset);
    const entry = pickBackup(await readStep(`listing ${store.label}`, policy, () => listBackups(store, dataset)), dataset.id, opts.backup, 'snapshot');
    const { artifact } = entry.manifest;
    // The file name comes from the target: accept only a real snapshot name, never a path.
    const name = plaintextName(basename(artifact.key));
    const parsed = parseSnapshotName(name);
    let decrypt;
    try {
      decrypt = decrypterFor(dataset, entry.manifest, `restore snapshot ${entry.id}`, opts.identity);
    } catch (err) {
      throw err instanceof DecryptionError ? new CliError(err.message, EXIT.failed) : err;
    }
    if (!parsed || name !== entry.id) throw new CliError(`backup ${entry.id} of ${dataset.id}: its artifact ${artifact.key} is not named like a k3s snapshot; refusing to write it`, EXIT.failed);
    out(`snapshot ${name} of ${dataset.id}: taken ${parsed.createdAt.toISOString()} on ${parsed.node}, ${formatBytes(artifact.size)}, ${entry.status}`);

    await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`--to-dir ${dir}: ${err.code ?? err.message}`, EXIT.failed);
    });
    const snapshotPath = join(dir, name);
    const tokenPath = join(dir, TOKEN_FILE);
    if (!force) {
      for (const path of [snapshotPath, ...(dataset.source.uploadToken ? [tokenPath] : [])]) {
        if (await exists(path)) throw new CliError(`${path} already exists; not overwriting it without --force`, EXIT.failed);
      }
    }

    const progress = progressPrinter('downloading', { bytes: artifact.size });
    const tmp = tempPath(dir, name);
    const got = await readStep(`downloading ${artifact.key}`, policy, async () => downloadToFile(await store.get(artifact.key), tmp, { checkTrailer: !parsed.zip, onProgress: progress, decrypt }));
    if (progress) process.stderr.write('\n');
    const failed = (await snapshotChecks(tmp, parsed.zip, got, artifact).catch(async (err: unknown) => {
      await unlink(tmp).catch(() => {});
      throw err;
    })).filter((c) => !c.ok);
    if (failed.length > 0) {
      await unlink(tmp).catch(() => {});
      throw new CliError(`refusing snapshot ${name}: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}; the download was removed`, EXIT.failed);
    }
    await publish(tmp, snapshotPath, force);
    await fsyncPath(dir);
    out(`wrote ${snapshotPath} (${formatBytes(got.plaintext?.size ?? got.size)}; sha256 matches the manifest${got.plaintext ? ', decrypted' : ''}, ${parsed.zip ? 'zip CRCs and the inner sha256 trailer check out' : 'the sha256 trailer checks out'})`);

    const token = dataset.source.uploadToken ? await restoreToken(store, dataset, dir, tokenPath, force, policy) : ({ state: 'not uploaded' } as TokenOutcome);
    if (token.state === 'written') out(`wrote ${token.path} (mode 0600): the k3s server token, a cluster credential; delete it when done`);
    else if (token.state === 'absent') out(`no server token on ${store.label} at ${token.key}: a restore onto a new host needs the old server's token (/var/lib/rancher/k3s/server/token)`);
    else out(`dataset ${dataset.id} does not upload the server token (source.uploadToken): a restore onto a new host needs the old server's token (/var/lib/rancher/k3s/server/token)`);

    const tokenArg = token.state === 'written' ? ` --token "$(cat ${token.path})"` : ' --token <the old server token>';
    const commands = ['systemctl stop k3s', `k3s server --cluster-reset --cluster-reset-restore-path=${snapshotPath}${tokenArg}`, 'systemctl start k3s'];
    out('');
    out('To restore (same k3s version as the cluster had, k3s stopped):');
    for (const c of commands) out(`  ${c}`);
    if (parsed.zip) out(`k3s accepts the .zip directly; if your version refuses it, unzip it and pass the inner file ${name.replace(/\.zip$/, '')}.`);
    out(`Then check the cluster, and on HA servers rejoin the others: see ${ETCD_RUNBOOK}.`);
    return {
      ok: true, dataset: dataset.id, backup: entry.id, key: artifact.key, snapshot: snapshotPath, bytes: got.plaintext?.size ?? got.size, sha256: got.plaintext?.sha256 ?? got.sha256,
      token: token.state === 'written' ? { state: 'written', path: token.path } : { state: token.state }, commands,
    };
  } finally {
    await deps.close();
  }
}

async function restoreToken(store: TargetStore, dataset: EtcdDataset, dir: string, tokenPath: string, force: boolean, policy: ReturnType<typeof inlineRetries>): Promise<TokenOutcome> {
  const key = serverTokenKey(dataset);
  const head = await readStep(`reading ${key}`, policy, () => store.head(key));
  if (!head) return { state: 'absent', key };
  const tmp = tempPath(dir, TOKEN_FILE);
  const got = await readStep(`downloading ${key}`, policy, async () => {
    const stream = await store.get(key).catch((err: unknown) => {
      if (err instanceof ObjectNotFoundError) return undefined;
      throw err;
    });
    return stream ? downloadToFile(stream, tmp, { checkTrailer: false }) : undefined;
  });
  if (!got) return { state: 'absent', key };
  // uploadEtcd records the token's sha256 in its metadata (an s3 target; a dir target keeps none).
  const recorded = head.metadata['lifeboat-sha256'];
  if (recorded !== undefined && recorded !== got.sha256) {
    await unlink(tmp).catch(() => {});
    throw new CliError(`refusing the server token ${key}: sha256 ${got.sha256}, its metadata says ${recorded} (changed while read? run again); the download was removed`, EXIT.failed);
  }
  await publish(tmp, tokenPath, force);
  await fsyncPath(dir);
  return { state: 'written', path: tokenPath };
}
