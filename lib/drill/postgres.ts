import { listBackups } from '../catalog/catalog.js';
import { DRILL_FILE, siblingKey } from '../catalog/layout.js';
import type { Check } from '../catalog/manifest.js';
import type { PostgresDataset } from '../config/schema.js';
import { drillChecks } from '../postgres/checks.js';
import type { DatabaseStats } from '../postgres/connection.js';
import { restoreDump } from '../postgres/restore.js';
import { kubernetesScratch, localScratch, type ScratchServer } from '../postgres/scratch.js';
import { ObjectNotFoundError } from '../targets/store.js';
import { errorMessage, PermanentError } from '../../queue/errors.js';
import { DecryptionError } from '../crypto/age.js';
import { drillDecrypter, type Drill } from './types.js';

/** A read error that is a verdict on the backup (gone, or not a valid gzip stream), as a failed check; undefined for any other. */
function readFinding(err: unknown, compression: string): Check | undefined {
  if (err instanceof ObjectNotFoundError) return { name: 'object', ok: false, detail: 'the backup artifact does not exist' };
  if (err instanceof DecryptionError) return { name: 'decrypt', ok: false, detail: err.message };
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) return { name: compression === 'gzip' ? 'gzip' : 'decompress', ok: false, detail: `cannot be decompressed: ${(err as Error).message}` };
  return undefined;
}

/** Restores the newest verified pg_dumpall into a throwaway server (local initdb or a scratch namespace) and checks it. */
export const drillPostgres: Drill<PostgresDataset> = async (dataset, { deps, log, signal, tick }, input) => {
  const store = deps.storeFor(dataset);
  const backups = await listBackups(store, dataset, { signal });
  // Without a named backup: the newest verified one of this run's tick or before, so a retry drills the same one.
  const entry = input.backup ? backups.find((b) => b.id === input.backup) : backups.find((b) => b.status === 'verified' && b.tick.getTime() <= tick.getTime());
  if (!entry) {
    throw new PermanentError(input.backup ? `dataset ${dataset.id} has no backup ${input.backup}` : `dataset ${dataset.id} has no verified backup to drill`);
  }
  const { manifest } = entry;
  const source = manifest.source as { serverVersionNum?: number; databases?: string[]; stats?: Record<string, DatabaseStats> };
  const major = Math.floor((source.serverVersionNum ?? 0) / 10000);
  if (!major || !source.databases) throw new PermanentError(`manifest of ${manifest.artifact.key} lacks the server version or database list`);

  const drill = dataset.drill;
  const recordKey = siblingKey(manifest.artifact.key, DRILL_FILE);
  const opened = drillDecrypter(manifest.artifact.encryption !== undefined, dataset, `drill backup ${entry.id}`, { backup: entry.id, key: manifest.artifact.key, recordKey, mode: drill.mode, where: 'not started' });
  if ('result' in opened) return opened.result;
  const { decrypt } = opened;
  log.info({ backup: entry.id, key: manifest.artifact.key, mode: drill.mode }, 'drill starting');
  const checks: Check[] = [];
  let restoreMs = 0;
  let where = drill.mode === 'local' ? 'local cluster (not started)' : 'scratch namespace (not created)';
  // A failure that says the backup is bad (unreadable, damaged) is final; anything else may be retried.
  let retryable: unknown;
  let scratch: ScratchServer | undefined;
  try {
    scratch =
      drill.mode === 'local'
        ? await localScratch({ major, binDir: drill.binDir })
        : await kubernetesScratch(deps.kube(drill.kubernetes.kubeconfig), {
            image: drill.kubernetes.image ?? `postgres:${major}`,
            namespacePrefix: drill.kubernetes.namespacePrefix,
            readyTimeoutSeconds: drill.kubernetes.readyTimeoutSeconds,
            dataset: dataset.id,
            signal,
          });
    where = scratch.where;
    const restored = await restoreDump(store, manifest, scratch.runner, { signal, decrypt }).catch((err: unknown) => {
      const finding = readFinding(err, manifest.artifact.compression);
      if (!finding) throw err;
      checks.push(finding);
      return undefined;
    });
    if (restored) {
      restoreMs = restored.durationMs;
      const sameHash = restored.sha256 === manifest.artifact.sha256;
      checks.push({ name: 'sha256', ok: sameHash, detail: sameHash ? 'the restored bytes match the manifest' : `read ${restored.sha256}, manifest says ${manifest.artifact.sha256}` });
      const { encryption } = manifest.artifact;
      if (encryption) {
        const plainOk = restored.plaintextSha256 === encryption.plaintext.sha256;
        checks.push({ name: 'decrypt', ok: plainOk, detail: plainOk ? 'decrypted with the identity; the plaintext sha256 matches the manifest' : `decrypted plaintext sha256 ${restored.plaintextSha256} differs from the manifest's ${encryption.plaintext.sha256}` });
      }
      checks.push({ name: 'restore', ok: restored.errors.length === 0, detail: restored.errors.length === 0 ? `psql loaded ${restored.bytes} bytes without errors` : `${restored.errors.length} errors, first: ${restored.errors[0]}` });
      checks.push(...(await drillChecks(scratch.runner, { databases: source.databases, stats: source.stats }, { tableTolerancePercent: drill.tableTolerancePercent, assertions: drill.assertions, signal })));
    }
  } catch (err) {
    retryable = err;
    checks.push({ name: scratch ? 'restore' : 'scratch server', ok: false, detail: errorMessage(err) });
  } finally {
    await scratch?.stop().catch((err: unknown) => log.error({ err: (err as Error).message, where }, 'drill cleanup failed'));
  }

  return {
    backup: entry.id,
    key: manifest.artifact.key,
    recordKey,
    mode: drill.mode,
    where,
    restoreMs,
    checks,
    retryable,
  };
};
