import { pipeline, type Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { z } from 'zod';
import { requireDataset } from '../lib/datasets.js';
import { backupDir, MANIFEST_FILE } from '../lib/catalog/layout.js';
import { LIFEBOAT_VERSION, type Manifest } from '../lib/catalog/manifest.js';
import { databaseStats, isPermanentConnectionFailure, serverInfo, toolVersion } from '../lib/postgres/connection.js';
import { requireDumpallTrailer } from '../lib/postgres/dumpall.js';
import { CommandError } from '../lib/postgres/process.js';
import { progressTap } from '../lib/targets/progress.js';
import { HashingStream } from '../lib/targets/hash.js';
import { ageEncrypter, AGE_SUFFIX } from '../lib/crypto/age.js';
import { cronPerDataset, defineFunction } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';

/** Connection failures that retrying cannot fix become permanent; the rest retry. */
function classify(err: unknown, what: string): unknown {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new PermanentError(`${what}: command not found (${(err as Error).message})`);
  if (err instanceof CommandError && isPermanentConnectionFailure(err.stderr)) return new PermanentError(`${what}: ${err.message}`, { cause: err });
  return err;
}

export const dumpPostgres = defineFunction({
  name: 'dumpPostgres',
  description: 'Streams pg_dumpall through sha256, optional gzip and optional age encryption to the target, then writes manifest.json beside it.',
  input: z.object({
    dataset: z.string().min(1),
    /** The scheduled tick; keys derive from it. */
    tick: z.iso.datetime().optional(),
  }),
  triggers: [cronPerDataset('postgres')],
  kinds: ['postgres'],
  lock: 'dataset',
  retries: { attempts: 4, backoffMs: 60_000 },
  concurrency: 1,
  timeoutMs: 6 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset, 'postgres');
    const source = dataset.source;
    const runner = await ctx.deps.postgres(dataset);
    const startedAt = ctx.deps.clock();

    const server = await serverInfo(runner, ctx.signal).catch((err: unknown) => {
      throw classify(err, `cannot reach the server of dataset ${dataset.id}`);
    });
    const client = await toolVersion(runner, 'pg_dumpall', ctx.signal).catch((err: unknown) => {
      throw classify(err, `cannot run pg_dumpall (${runner.label})`);
    });
    if (client.major < server.major) {
      throw new PermanentError(
        `pg_dumpall (${runner.label}) is version ${client.major} but the server of dataset ${dataset.id} runs ${server.version}; ` +
          `an older pg_dumpall cannot dump a newer server reliably. Install the PostgreSQL ${server.major} client or set source.pgDumpall.`,
      );
    }
    // Dump-time figures for the restore drill to compare against.
    const stats = await databaseStats(runner, server.databases, ctx.signal).catch((err: unknown) => {
      throw classify(err, `cannot read table statistics of dataset ${dataset.id}`);
    });

    const gzip = dataset.compression === 'gzip';
    // Fails closed: a recipient that does not parse stops the job here, before pg_dumpall starts.
    const age = dataset.encryption ? ageEncrypter(dataset.encryption.recipients, `dataset ${dataset.id}`) : undefined;
    const dir = backupDir(dataset, ctx.tick);
    const key = `${dir}pg_dumpall.sql${gzip ? '.gz' : ''}${age ? AGE_SUFFIX : ''}`;
    const store = ctx.deps.storeFor(dataset);
    ctx.log.info({ key, server: server.version, client: client.text, databases: server.databases.length }, 'dumping');

    // The dump's text weighs about what its tables do on disk: an estimate, so an ETA can be shown.
    const estimate = Object.values(stats).reduce((sum, s) => sum + s.tableBytes, 0);
    const counted = progressTap((bytes) => ctx.progress({ phase: 'dumping', bytes, total: Math.max(estimate, bytes) }));
    // pipeline() passes any stage's error to the last stream, so the upload fails and leaves nothing.
    // The SQL's own sha256 is only needed when the stored bytes are ciphertext; else the store's hash is it.
    const plaintext = age ? new HashingStream() : undefined;
    const stages: NodeJS.ReadWriteStream[] = [requireDumpallTrailer(), counted, ...(plaintext ? [plaintext] : [])];
    if (gzip) stages.push(createGzip({ level: dataset.compressionLevel }));
    if (age) stages.push(age.stage());
    const body = pipeline([runner.stream('pg_dumpall', [], { signal: ctx.signal }), ...stages] as unknown as [Readable, ...NodeJS.ReadWriteStream[]], () => {}) as unknown as Readable;
    const contentType = age ? 'application/octet-stream' : gzip ? 'application/gzip' : 'application/sql';
    const stored = await store.put(key, body, { contentType, metadata: { 'lifeboat-dataset': dataset.id, ...(age && { 'lifeboat-encryption': 'age' }) }, signal: ctx.signal, replaceUnfinished: true }).catch((err: unknown) => {
      throw classify(err, `pg_dumpall of dataset ${dataset.id} failed`);
    });

    const finishedAt = ctx.deps.clock();
    const manifest: Manifest = {
      format: 'lifeboat.manifest/v1',
      dataset: dataset.id,
      kind: dataset.kind,
      tick: ctx.tick.toISOString(),
      artifact: {
        key, size: stored.size, sha256: stored.sha256, etag: stored.etag, compression: dataset.compression, contentType, format: 'pg_dumpall',
        encryption: age && plaintext && { ...age.encryption, plaintext: { size: plaintext.bytes, sha256: plaintext.sha256 } },
      },
      source: {
        mode: source.mode,
        at: runner.label,
        serverVersion: server.version,
        serverVersionNum: server.versionNum,
        clientVersion: client.text,
        databases: server.databases,
        stats,
      },
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      writer: { lifeboat: LIFEBOAT_VERSION, jobId: ctx.jobId, attempt: ctx.attempt },
    };
    const manifestKey = `${dir}${MANIFEST_FILE}`;
    await store.putJson(manifestKey, manifest, { signal: ctx.signal });
    ctx.log.info({ key, size: stored.size, sha256: stored.sha256 }, 'dump stored');

    await ctx.emit('backup.uploaded', {
      dataset: dataset.id,
      kind: dataset.kind,
      target: store.target,
      bucket: store.bucket,
      key,
      manifestKey,
      etag: stored.etag,
      size: stored.size,
      sha256: stored.sha256,
      startedAt: manifest.startedAt,
      finishedAt: manifest.finishedAt,
    });
    return { key, size: stored.size, sha256: stored.sha256, databases: server.databases };
  },
});
