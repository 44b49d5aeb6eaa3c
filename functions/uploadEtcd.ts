import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { pipeline, Readable } from 'node:stream';
import { AGE_SUFFIX, ageEncrypter, through } from '../lib/crypto/age.js';
import { HashingStream } from '../lib/targets/hash.js';
import { z } from 'zod';
import { requireDataset } from '../lib/datasets.js';
import { inspectSnapshotFile, listLocalSnapshots, type LocalSnapshot } from '../lib/etcd/local.js';
import { kubeClient, kubeError } from '../lib/kube/client.js';
import { datasetPrefix, MANIFEST_FILE, serverTokenKey } from '../lib/catalog/layout.js';
import { LIFEBOAT_VERSION, manifestSchema, type Manifest } from '../lib/catalog/manifest.js';
import type { EtcdDataset } from '../lib/config/schema.js';
import type { TargetStore } from '../lib/targets/store.js';
import { cronPerDataset, defineFunction, type Ctx } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';

/** k3s's record of a snapshot (etcdsnapshotfiles.k3s.cattle.io), as much as we read of it. */
interface EtcdSnapshotFile {
  metadata?: { name?: string };
  spec?: { snapshotName?: string; nodeName?: string; location?: string };
}

export const uploadEtcd = defineFunction({
  name: 'uploadEtcd',
  description: 'Uploads every k3s etcd snapshot the hub does not have yet, after checking its sha256 trailer (and zip CRCs).',
  input: z.object({ dataset: z.string().min(1), tick: z.iso.datetime().optional() }),
  triggers: [cronPerDataset('etcd')],
  kinds: ['etcd'],
  lock: 'dataset',
  retries: { attempts: 4, backoffMs: 60_000 },
  concurrency: 1,
  timeoutMs: 2 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset, 'etcd');
    const store = ctx.deps.storeFor(dataset);
    const prefix = datasetPrefix(dataset);
    // Fails closed: a recipient that does not parse stops the run before any snapshot is read or uploaded.
    const age = dataset.encryption ? ageEncrypter(dataset.encryption.recipients, `dataset ${dataset.id}`) : undefined;
    const local = await listLocalSnapshots(dataset.source.snapshotDir).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' || err.code === 'EACCES' ? new PermanentError(`dataset ${dataset.id}: cannot read snapshot directory ${dataset.source.snapshotDir} (${err.code}); run this worker on the k3s server node`) : err;
    });
    const onHub = new Set<string>();
    for await (const o of store.list(prefix, { signal: ctx.signal })) {
      if (o.key.endsWith(`/${MANIFEST_FILE}`)) onHub.add(o.key.slice(prefix.length).split('/')[0]!);
    }

    // k3s compresses straight into the final .zip path, so a young file may be half-written: leave it for the next run.
    const settleMs = dataset.source.settleSeconds * 1000;
    const uploaded: string[] = [];
    const skipped: string[] = [];
    const pending: string[] = [];
    const corrupt: Array<{ file: string; reason: string }> = [];
    for (const snapshot of local) {
      ctx.signal.throwIfAborted();
      if (ctx.deps.clock().getTime() - snapshot.mtimeMs < settleMs) {
        pending.push(snapshot.name);
        continue;
      }
      const dir = `${prefix}${snapshot.name}/`;
      const key = `${dir}${snapshot.name}${age ? AGE_SUFFIX : ''}`;
      const existing = onHub.has(snapshot.name) ? manifestSchema.safeParse(await store.getJson(`${dir}${MANIFEST_FILE}`, { signal: ctx.signal })) : undefined;
      // k3s writes a snapshot once: the same size and mtime as when we uploaded it means the same file,
      // so a re-run does not re-read every snapshot every 15 minutes.
      const recorded = existing?.success ? (existing.data.source as { mtimeMs?: number }) : undefined;
      const onHubFile = existing?.success ? snapshotOf(existing.data) : undefined;
      if (onHubFile && onHubFile.size === snapshot.size && recorded?.mtimeMs === snapshot.mtimeMs) {
        skipped.push(snapshot.name);
        continue;
      }
      // A file that fails to read or changes while read is still being written, not corrupt.
      const inspected = await inspectSnapshotFile(snapshot).catch(async (err: unknown) => {
        if (await changedSinceListing(snapshot).catch(() => false)) return undefined;
        throw err;
      });
      if (!inspected || (await changedSinceListing(snapshot))) {
        pending.push(snapshot.name);
        continue;
      }
      if (onHubFile && onHubFile.sha256 === inspected.sha256 && onHubFile.size === inspected.size) {
        skipped.push(snapshot.name);
        continue;
      }
      const failed = inspected.checks.filter((c) => !c.ok);
      if (failed.length > 0) {
        const reason = failed.map((c) => `${c.name}: ${c.detail}`).join('; ');
        corrupt.push({ file: snapshot.path, reason });
        ctx.log.error({ file: snapshot.path, reason }, 'corrupt snapshot not uploaded');
        await ctx.emit('backup.corrupt', { dataset: dataset.id, kind: dataset.kind, key: snapshot.path, checkedAt: ctx.deps.clock().toISOString(), reason: `local snapshot ${snapshot.name} not uploaded: ${reason}` });
        continue;
      }
      const started = ctx.deps.clock();
      const plaintext = new HashingStream();
      const file = pipeline(createReadStream(snapshot.path), plaintext, () => {});
      const body = age ? through(file, age.stage()) : file;
      const contentType = age ? 'application/octet-stream' : snapshot.zip ? 'application/zip' : 'application/octet-stream';
      const stored = await store.put(key, body, { contentType, metadata: { 'lifeboat-dataset': dataset.id, ...(age && { 'lifeboat-encryption': 'age' }) }, signal: ctx.signal, replaceUnfinished: true });
      if (plaintext.sha256 !== inspected.sha256) throw new Error(`${snapshot.path} changed while it was uploaded; will retry`);
      const finished = ctx.deps.clock();
      const manifest: Manifest = {
        format: 'lifeboat.manifest/v1',
        dataset: dataset.id,
        kind: dataset.kind,
        tick: snapshot.createdAt.toISOString(),
        artifact: {
          key, size: stored.size, sha256: stored.sha256, etag: stored.etag, compression: 'none', contentType, format: snapshot.zip ? 'etcd-snapshot-zip' : 'etcd-snapshot',
          encryption: age && { ...age.encryption, plaintext: { size: plaintext.bytes, sha256: plaintext.sha256 } },
        },
        source: { node: snapshot.node, file: snapshot.path, trigger: snapshot.trigger, takenAt: snapshot.createdAt.toISOString(), mtimeMs: snapshot.mtimeMs, checks: inspected.checks },
        startedAt: started.toISOString(),
        finishedAt: finished.toISOString(),
        durationMs: finished.getTime() - started.getTime(),
        writer: { lifeboat: LIFEBOAT_VERSION, jobId: ctx.jobId, attempt: ctx.attempt },
      };
      await store.putJson(`${dir}${MANIFEST_FILE}`, manifest, { signal: ctx.signal });
      onHub.add(snapshot.name);
      uploaded.push(snapshot.name);
      await ctx.emit('backup.uploaded', {
        dataset: dataset.id, kind: dataset.kind, target: store.target, bucket: store.bucket, key, manifestKey: `${dir}${MANIFEST_FILE}`,
        etag: stored.etag, size: stored.size, sha256: stored.sha256, startedAt: manifest.startedAt, finishedAt: manifest.finishedAt, takenAt: snapshot.createdAt.toISOString(),
      });
    }

    const token: 'uploaded' | 'unchanged' | undefined = dataset.source.uploadToken ? await uploadToken(ctx, dataset, store) : undefined;
    const missing: string[] = dataset.source.listSnapshotFiles ? await unaccounted(ctx, dataset, new Set([...local.map((s) => s.name), ...onHub])) : [];
    if (missing.length > 0) ctx.log.warn({ missing }, 'k3s lists snapshots that are neither on this node nor on the hub');
    if (pending.length > 0) ctx.log.info({ pending: pending.length, files: pending, settleSeconds: dataset.source.settleSeconds }, 'snapshots still being written, left for the next run');
    ctx.log.info({ uploaded: uploaded.length, skipped: skipped.length, corrupt: corrupt.length }, 'etcd snapshots in sync');
    if (corrupt.length > 0) {
      throw new PermanentError(`dataset ${dataset.id}: ${corrupt.length} corrupt snapshot(s) not uploaded: ${corrupt.map((c) => `${c.file} (${c.reason})`).join('; ')}`);
    }
    return { uploaded, skipped, pending, corrupt, missing, token };
  },
});

/** The snapshot file a manifest describes: the plaintext of an encrypted artifact, else the artifact itself. */
function snapshotOf(manifest: Manifest): { size: number; sha256: string } {
  return manifest.artifact.encryption?.plaintext ?? manifest.artifact;
}

/** Whether the file is gone, or its size or mtime differ from the listing: k3s is still writing or replacing it. */
async function changedSinceListing(snapshot: LocalSnapshot): Promise<boolean> {
  const now = await stat(snapshot.path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  return !now || now.size !== snapshot.size || now.mtimeMs !== snapshot.mtimeMs;
}

/** The server token goes to its own prefix (token/<dataset>/), so a bucket policy can fence it off. */
async function uploadToken(ctx: Ctx, dataset: EtcdDataset, store: TargetStore): Promise<'uploaded' | 'unchanged'> {
  const content = await readFile(dataset.source.tokenFile).catch((err: NodeJS.ErrnoException) => {
    throw new PermanentError(`dataset ${dataset.id}: cannot read the k3s server token ${dataset.source.tokenFile} (${err.code})`);
  });
  const sha256 = createHash('sha256').update(content).digest('hex');
  const key = serverTokenKey(dataset);
  const existing = await store.head(key, { signal: ctx.signal });
  if (existing?.metadata['lifeboat-sha256'] === sha256) return 'unchanged';
  await store.put(key, Readable.from([content]), { contentType: 'text/plain', metadata: { 'lifeboat-sha256': sha256 }, signal: ctx.signal });
  ctx.log.info({ key }, 'server token uploaded');
  return 'uploaded';
}

/** Snapshots k3s has a record of (ETCDSnapshotFile) that exist neither on this node nor on the hub. */
async function unaccounted(ctx: Ctx, dataset: EtcdDataset, known: Set<string>): Promise<string[]> {
  const api = ctx.deps.kube(dataset.source.kubeconfig).makeApiClient(kubeClient().CustomObjectsApi);
  const list = (await api.listClusterCustomObject({ group: 'k3s.cattle.io', version: 'v1', plural: 'etcdsnapshotfiles' }).catch((err: unknown) => {
    throw kubeError(err, 'etcdsnapshotfiles.k3s.cattle.io');
  })) as { items?: EtcdSnapshotFile[] };
  return (list.items ?? [])
    .filter((item) => !item.spec?.location?.startsWith('s3://')) // k3s's own S3 copies are not expected on the node
    .map((item) => item.spec?.snapshotName ?? item.metadata?.name ?? '')
    .filter((name) => name !== '' && !known.has(name));
}
