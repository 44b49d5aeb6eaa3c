import { pipeline } from 'node:stream';
import type { Logger } from 'pino';
import type { EventName, EventPayload } from '../../queue/events.js';
import type { Dataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { objectRangeSource } from '../etcd/local.js';
import { inspectZipSnapshot } from '../etcd/snapshot.js';
import { inspectForeignObject } from './foreign.js';
import { inspectArtifact, inspectEncryptedArtifact } from './inspect.js';
import { datasetDecrypter } from '../crypto/identity.js';
import { MANIFEST_FILE, LIFEBOAT_RECORDS, siblingKey, VERIFY_FILE } from './layout.js';
import { manifestSchema, VERIFY_HISTORY, verifyRecordSchema, type Check, type VerifyRecord, type VerifyTrigger } from './manifest.js';
import { ObjectNotFoundError, type TargetStore } from '../targets/store.js';
import type { Progress } from '../../queue/define.js';
import { progressTap } from '../targets/progress.js';

/** What a verification needs from the job running it: the verifyObject handler, the scrub, pruneCheck. */
export interface VerifyScope {
  deps: Deps;
  emit<E extends EventName>(event: E, payload: EventPayload<E>): Promise<void>;
  signal: AbortSignal;
  log: Logger;
  /** A job's ctx.progress: how far the re-read is. */
  progress?: (progress: Progress) => void;
}

/** Where the result for an object Lifeboat did not write goes: under _lifeboat/, never beside the other tool's files. */
export function foreignVerifyKey(dataset: { target: { prefix: string } }, key: string): string {
  return `${foreignVerifyPrefix(dataset)}${key}.json`;
}

export function foreignVerifyPrefix(dataset: { target: { prefix: string } }): string {
  return `${dataset.target.prefix}${LIFEBOAT_RECORDS}verify/`;
}

/**
 * Re-reads one of Lifeboat's artifacts: size and sha256 against its manifest, then the content checks of
 * its format. Writes verify.json (newest result first in its history) and emits backup.verified or
 * backup.corrupt. A finding is returned, never thrown; a read error other than "not found" is thrown
 * (it says nothing about the object, so it is retried).
 */
export async function verifyArtifact(scope: VerifyScope, dataset: Dataset, key: string, trigger: VerifyTrigger): Promise<VerifyRecord> {
  const store = scope.deps.storeFor(dataset);
  const started = scope.deps.clock();
  const checks: Check[] = [];
  let actual: VerifyRecord['actual'] = { size: -1, sha256: '' };
  let expected = { size: -1, sha256: '' };

  // Both at once: on a hub a round trip costs more than a small object's bytes (the scrub reads thousands).
  const [rawManifest, head] = await Promise.all([
    store.getJson(siblingKey(key, MANIFEST_FILE), { signal: scope.signal }).catch((err: unknown) => {
      if (err instanceof SyntaxError) return null;
      throw err;
    }),
    // Its error counts only once the manifest says there is something to read.
    store.head(key, { signal: scope.signal }).then((found) => ({ found }), (err: unknown) => ({ err })),
  ]);
  const manifest = manifestSchema.safeParse(rawManifest);
  if (rawManifest === undefined) checks.push({ name: 'manifest', ok: false, detail: `no ${MANIFEST_FILE} beside the object` });
  else if (!manifest.success) checks.push({ name: 'manifest', ok: false, detail: `${MANIFEST_FILE} is not a valid manifest` });
  else if (manifest.data.artifact.key !== key) checks.push({ name: 'manifest', ok: false, detail: `${MANIFEST_FILE} describes ${manifest.data.artifact.key}` });
  else {
    const artifact = manifest.data.artifact;
    expected = { size: artifact.size, sha256: artifact.sha256 };
    checks.push({ name: 'manifest', ok: true, detail: `written ${manifest.data.finishedAt}` });
    if ('err' in head) throw head.err;
    try {
      if (!head.found) throw new ObjectNotFoundError(store.label, key);
      let body = await store.get(key, { signal: scope.signal });
      // Through pipeline(), so a read error reaches the inspection instead of stalling it.
      if (scope.progress) body = pipeline(body, progressTap((bytes) => scope.progress!({ phase: 'verifying', bytes, total: artifact.size })), () => {});
      const { encryption } = artifact;
      const inspection = encryption
        ? await inspectEncryptedArtifact(body, { ...artifact, encryption }, datasetDecrypter(dataset), scope.signal)
        : await inspectArtifact(body, artifact, scope.signal);
      actual = { size: inspection.size, sha256: inspection.sha256, etag: head.found.etag.replace(/"/g, ''), lastModified: head.found.lastModified.toISOString() };
      checks.push({ name: 'size', ok: actual.size === expected.size, detail: `${actual.size} bytes, manifest says ${expected.size}` });
      checks.push({ name: 'sha256', ok: actual.sha256 === expected.sha256, detail: actual.sha256 === expected.sha256 ? 'matches the manifest' : `${actual.sha256} differs from the manifest's ${expected.sha256}` });
      checks.push(...inspection.checks);
      // An encrypted zip cannot be read by range; its plaintext sha256 stands for the zip checked at upload.
      if (artifact.format === 'etcd-snapshot-zip' && !encryption) checks.push(...(await inspectZipSnapshot(objectRangeSource(store, key, inspection.size, scope.signal))));
    } catch (err) {
      if (!(err instanceof ObjectNotFoundError)) throw err;
      checks.push({ name: 'object', ok: false, detail: 'the object does not exist' });
    }
  }
  return recordVerdict(scope, { dataset, store, key, resultKey: siblingKey(key, VERIFY_FILE), started, expected, actual, checks, trigger });
}

/**
 * Checks an object another tool wrote (Velero, k3s's own S3 upload). undefined when the object does not
 * exist: deleted since the notification, or never there. That is not a verdict on anything we hold.
 */
export async function verifyForeignObject(scope: VerifyScope, dataset: Dataset, key: string, size: number | undefined, trigger: VerifyTrigger): Promise<VerifyRecord | undefined> {
  const store = scope.deps.storeFor(dataset);
  const started = scope.deps.clock();
  const head = await store.head(key, { signal: scope.signal });
  if (!head) return undefined;
  const inspected = await inspectForeignObject(store, dataset, key, size, scope.signal).catch((err: unknown) => {
    if (err instanceof ObjectNotFoundError) return undefined;
    throw err;
  });
  if (!inspected) return undefined;
  const record = await recordVerdict(scope, {
    dataset, store, key, resultKey: foreignVerifyKey(dataset, key), started, trigger,
    expected: { size: size ?? -1, sha256: '' },
    actual: { size: inspected.size, sha256: inspected.sha256, etag: head.etag.replace(/"/g, ''), lastModified: head.lastModified.toISOString() },
    checks: inspected.checks, completedAt: inspected.completedAt,
  });
  if (inspected.completedAt && record.ok) await scope.emit('backup.observed', { dataset: dataset.id, kind: dataset.kind, key, finishedAt: inspected.completedAt });
  return record;
}

/** The failed checks of a record, as one line. */
export function failureReason(record: Pick<VerifyRecord, 'checks'>): string {
  return record.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ');
}

/** Writes the result (keeping the history of earlier results for the same bytes), then emits its event. */
async function recordVerdict(
  scope: VerifyScope,
  v: { dataset: Dataset; store: TargetStore; key: string; resultKey: string; started: Date; expected: VerifyRecord['expected']; actual: VerifyRecord['actual']; checks: Check[]; completedAt?: string; trigger: VerifyTrigger },
): Promise<VerifyRecord> {
  const finished = scope.deps.clock();
  const ok = v.checks.every((c) => c.ok);
  const reason = ok ? undefined : failureReason({ checks: v.checks });
  const previous = verifyRecordSchema.safeParse(await v.store.getJson(v.resultKey, { signal: scope.signal }).catch(() => undefined));
  // History belongs to one upload: a re-run of the tick (a new sha256 in the manifest) starts afresh.
  const earlier = previous.success && previous.data.expected.sha256 === v.expected.sha256
    ? (previous.data.history ?? [{ checkedAt: previous.data.checkedAt, ok: previous.data.ok, trigger: previous.data.trigger }])
    : [];
  const record: VerifyRecord = {
    format: 'lifeboat.verify/v1',
    dataset: v.dataset.id,
    key: v.key,
    ok,
    checkedAt: finished.toISOString(),
    durationMs: finished.getTime() - v.started.getTime(),
    trigger: v.trigger,
    expected: v.expected,
    actual: v.actual,
    checks: v.checks,
    completedAt: v.completedAt,
    history: [{ checkedAt: finished.toISOString(), ok, trigger: v.trigger, reason }, ...earlier].slice(0, VERIFY_HISTORY),
  };
  await v.store.putJson(v.resultKey, record, { signal: scope.signal });
  if (ok) {
    await scope.emit('backup.verified', { dataset: v.dataset.id, kind: v.dataset.kind, key: v.key, size: v.actual.size, checkedAt: record.checkedAt });
    scope.log.info({ key: v.key, size: v.actual.size, trigger: v.trigger }, 'verified');
  } else {
    await scope.emit('backup.corrupt', { dataset: v.dataset.id, kind: v.dataset.kind, key: v.key, checkedAt: record.checkedAt, reason: reason! });
    scope.log.error({ key: v.key, reason, trigger: v.trigger }, 'corrupt');
  }
  return record;
}
