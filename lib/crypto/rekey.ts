import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { PassThrough, Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { identityToRecipient } from 'age-encryption';
import { listBackups, type BackupEntry } from '../catalog/catalog.js';
import { DRILL_FILE, MANIFEST_FILE, siblingKey, VERIFY_FILE } from '../catalog/layout.js';
import { manifestSchema, verifyRecordSchema, type Manifest, type VerifyRecord } from '../catalog/manifest.js';
import { failureReason, verifyArtifact, type VerifyScope } from '../catalog/verify.js';
import type { Dataset } from '../config/schema.js';
import { DeferredSecret } from '../config/secret.js';
import type { Deps } from '../plumbing/deps.js';
import { progressTap } from '../targets/progress.js';
import { ObjectNotFoundError, type TargetStore } from '../targets/store.js';
import { retrying, type AttemptFailure, type InlineRetries } from '../../queue/inline.js';
import { PermanentError } from '../../queue/errors.js';
import { AGE_SUFFIX, ageDecrypter, ageEncrypter, DecryptionError, parseIdentityFile, plaintextName, through } from './age.js';
import { recipientFingerprint } from './recipients.js';

/** Rekey refused before anything was written (no such backup), or one backup could not be rekeyed for good. */
export class RekeyError extends PermanentError {
  override name = 'RekeyError';
}

/** The dataset cannot be rekeyed at all (no encryption configured, a kind without manifests): a usage error. */
export class RekeyUsageError extends RekeyError {
  override name = 'RekeyUsageError';
}

/** No old identity, or one that opens none of the backups to re-encrypt: refused before anything is written. */
export class RekeyIdentityError extends DecryptionError {
  override name = 'RekeyIdentityError';
}

/** The decrypted bytes are not the plaintext the manifest vouches for: that backup is left as it was. */
export class PlaintextMismatchError extends PermanentError {
  override name = 'PlaintextMismatchError';
}

export type RekeyOutcome = 're-encrypted' | 'current' | 'plaintext' | 'failed' | 'would re-encrypt';

export interface RekeyedBackup {
  id: string;
  outcome: RekeyOutcome;
  /** The artifact the manifest named before. */
  key: string;
  /** Where the re-encrypted artifact is (re-encrypted, would re-encrypt). */
  newKey?: string;
  /** Recipient fingerprints before and after. */
  from?: string[];
  to?: string[];
  /** Ciphertext bytes written. */
  size?: number;
  /** Objects deleted (the old artifact, leftovers of an earlier, interrupted run); with --dry-run, those that would be. */
  removed: string[];
  /** The verification of the artifact the manifest now names; decrypted: whether it could be opened here. */
  verified?: { ok: boolean; decrypted: boolean; detail: string };
  error?: string;
}

export interface RekeyResult {
  ok: boolean;
  dataset: string;
  dryRun: boolean;
  /** Fingerprints of the dataset's current encryption.recipients. */
  recipients: string[];
  backups: RekeyedBackup[];
  counts: { reencrypted: number; current: number; plaintext: number; failed: number; removed: number };
  /** Things the operator should act on (an identityFile that opens none of the current recipients). */
  warnings: string[];
}

export interface RekeyOptions {
  /** The old identity: a ${file:}/${env:} reference or an absolute path; default the dataset's encryption.identityFile. */
  identity?: string;
  /** One backup id; default every retained backup. */
  backup?: string;
  dryRun?: boolean;
  signal?: AbortSignal;
  retries?: InlineRetries;
  onAttemptFailed?: (failure: AttemptFailure) => void;
  /** Each backup's outcome, as it happens. */
  onBackup?: (backup: RekeyedBackup) => void;
  /** Ciphertext bytes read of the backup being re-encrypted. */
  onProgress?: (id: string, bytes: number, total: number) => void;
}

/** Fingerprints as a set: order in the config or the manifest does not matter. */
function sameRecipients(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return set.size === new Set(b).size && b.every((f) => set.has(f));
}

/** 8 hex digits naming a recipient set, so a re-run for the same set writes the same key. */
export function recipientSetHash(fingerprints: readonly string[]): string {
  return createHash('sha256').update([...new Set(fingerprints)].sort().join('\n')).digest('hex').slice(0, 8);
}

/** "<dir>pg_dumpall.sql.gz.age" → "<dir>pg_dumpall.sql.gz.<8 hex>.age" (any artifact: an etcd snapshot too). */
export function rekeyedKey(key: string, fingerprints: readonly string[]): string {
  const dir = key.slice(0, key.lastIndexOf('/') + 1);
  return `${dir}${plaintextName(basename(key))}.${recipientSetHash(fingerprints)}${AGE_SUFFIX}`;
}

const RECORDS = new Set([MANIFEST_FILE, VERIFY_FILE, DRILL_FILE]);

/**
 * Objects in a backup folder that the manifest does not name and that are encryptions of the same
 * artifact (the old one, or a rekey's interrupted output): "x.age" or "x.<8 hex>.age". Anything else in
 * the folder (records, a plaintext file, files other tools put there) is never touched.
 */
export function leftoverArtifacts(folderKeys: readonly string[], artifactKey: string): string[] {
  const dir = artifactKey.slice(0, artifactKey.lastIndexOf('/') + 1);
  const base = plaintextName(basename(artifactKey));
  return folderKeys.filter((key) => {
    if (key === artifactKey || !key.startsWith(dir)) return false;
    const name = key.slice(dir.length);
    return !name.includes('/') && !RECORDS.has(name) && name.endsWith(AGE_SUFFIX) && plaintextName(name) === base;
  });
}

interface Identities {
  /** Where they came from, for messages: "--identity" or "encryption.identityFile". */
  field: string;
  reference: string;
  keys: string[];
  /** Fingerprints of their recipients; undefined when one cannot be derived (then only trying tells). */
  fingerprints?: Set<string>;
}

/** Reads an identity file and derives its recipients' fingerprints (public values), never logging a key. */
async function loadIdentities(reference: string, field: string): Promise<Identities | string> {
  let content: string;
  try {
    content = new DeferredSecret(reference, field).resolve().reveal();
  } catch (err) {
    return (err as Error).message;
  }
  const keys = parseIdentityFile(content);
  if (keys.length === 0) return `${field}: the file holds no age identity`;
  const fingerprints = new Set<string>();
  for (const [index, key] of keys.entries()) {
    try {
      fingerprints.add(recipientFingerprint(await identityToRecipient(key)));
    } catch {
      // The parser's message may quote the key: name the entry only.
      if (!/^AGE-(PLUGIN|SECRET)-/i.test(key)) return `${field}: identity ${index + 1} in the file is not a valid age identity (AGE-SECRET-KEY-1…)`;
      return { field, reference, keys };
    }
  }
  return { field, reference, keys, fingerprints };
}

function opens(identities: Identities, recipients: readonly string[]): boolean {
  return !identities.fingerprints || recipients.some((f) => identities.fingerprints!.has(f));
}

/**
 * `lifeboat rekey`: re-encrypts a dataset's retained backups to its current encryption.recipients,
 * one backup at a time. Per backup: GET → decrypt (old identity) → re-encrypt → PUT to a new key,
 * the plaintext hashed on the way and compared with the manifest (a mismatch aborts the upload);
 * then manifest.json (the commit point, one PUT), a verification, and only then the old artifact is
 * deleted. Killed anywhere, the folder is a valid backup, and a re-run finishes the job.
 */
export async function rekeyDataset(deps: Deps, dataset: Dataset, options: RekeyOptions = {}): Promise<RekeyResult> {
  if (dataset.kind !== 'postgres' && dataset.kind !== 'etcd') {
    throw new RekeyUsageError(`dataset ${dataset.id} is a ${dataset.kind} dataset: rekey re-encrypts postgres dumps and etcd snapshots`);
  }
  if (!dataset.encryption) throw new RekeyUsageError(`dataset ${dataset.id} has no encryption configured: set encryption.recipients (age1…) first; rekey re-encrypts backups to them`);
  const what = `dataset ${dataset.id}`;
  // Fails closed, before anything is read: a recipient that does not parse.
  const age = ageEncrypter(dataset.encryption.recipients, what);
  const current = age.encryption.recipients;
  const signal = options.signal;
  const policy = options.retries ?? { attempts: 1, backoffMs: 0 };
  const retry = <T>(label: string, step: () => Promise<T>) =>
    retrying(label, step, { attempts: policy.attempts, delayMs: () => policy.backoffMs, signal, onAttemptFailed: options.onAttemptFailed });

  const store = deps.storeFor(dataset);
  let entries = await retry(`listing ${store.label}`, () => listBackups(store, dataset, { signal }));
  if (options.backup !== undefined) {
    const one = entries.filter((e) => e.id === options.backup);
    if (one.length === 0) throw new RekeyError(`dataset ${dataset.id} has no backup ${options.backup} (have: ${entries.slice(0, 5).map((e) => e.id).join(', ') || 'none'}${entries.length > 5 ? ', …' : ''})`);
    entries = one;
  }

  const stale = entries.filter((e) => e.manifest.artifact.encryption && !sameRecipients(e.manifest.artifact.encryption.recipients, current));
  // The old identity is needed only if something is to be re-encrypted; without one that opens
  // anything, nothing is written (a dry run still shows its plan, each of those backups failed).
  let old: Identities | undefined;
  let identityProblem: string | undefined;
  if (stale.length > 0) {
    const loaded = await oldIdentities(dataset, stale, options.identity);
    if (typeof loaded === 'string') {
      if (!options.dryRun) throw new RekeyIdentityError(loaded);
      identityProblem = loaded;
    } else old = loaded;
  }

  // Which identity (if any) here opens a set of recipients, so each verification decrypts when it can
  // and never fails a good artifact for lack of the right key.
  const candidates: Identities[] = [];
  if (old) candidates.push(old);
  const configured = dataset.encryption.identityFile ? await loadIdentities(dataset.encryption.identityFile, `dataset ${dataset.id}: encryption.identityFile`) : undefined;
  if (configured && typeof configured !== 'string' && configured.reference !== old?.reference) candidates.unshift(configured);
  const viewFor = (recipients: readonly string[]): { dataset: Dataset; decrypts: boolean } => {
    const opener = candidates.find((c) => c.fingerprints && recipients.some((f) => c.fingerprints!.has(f)));
    return { dataset: { ...dataset, encryption: { ...dataset.encryption!, identityFile: opener?.reference } } as Dataset, decrypts: opener !== undefined };
  };
  const warnings: string[] = [];
  if (!configured) warnings.push(`dataset ${dataset.id} has no encryption.identityFile: set it to the identity of the current recipients, so the scrub's deep check, drills and restores can decrypt`);
  else if (typeof configured === 'string') warnings.push(`${configured}: the scrub's deep check, drills and restores need it`);
  else if (configured.fingerprints && !current.some((f) => configured.fingerprints!.has(f))) {
    warnings.push(`dataset ${dataset.id}: encryption.identityFile opens none of the current recipients (${current.join(', ')}): point it at the new identity, or the scrub's deep check, drills and restores of re-encrypted backups fail`);
  }

  const scope: VerifyScope = { deps, signal: signal ?? new AbortController().signal, log: deps.logger, emit: async () => {} };
  const backups: RekeyedBackup[] = [];
  const report = (b: RekeyedBackup) => {
    backups.push(b);
    options.onBackup?.(b);
  };

  for (const entry of entries) {
    signal?.throwIfAborted();
    const { artifact } = entry.manifest;
    const base = { id: entry.id, key: artifact.key, removed: [] as string[] };
    if (!artifact.encryption) {
      report({ ...base, outcome: 'plaintext' });
      continue;
    }
    const from = artifact.encryption.recipients;
    if (identityProblem && !sameRecipients(from, current)) {
      report({ ...base, outcome: 'failed', from, to: current, error: 'no old identity here opens it (see the warning)' });
      continue;
    }
    if (options.dryRun) {
      if (sameRecipients(from, current)) report({ ...base, outcome: 'current', removed: leftoverArtifacts(entry.keys, artifact.key) });
      else if (old && !opens(old, from)) report({ ...base, outcome: 'failed', from, to: current, error: `the identity in ${old.field} does not open it (encrypted to ${from.join(', ')})` });
      else report({ ...base, outcome: 'would re-encrypt', from, to: current, newKey: rekeyedKey(artifact.key, current), removed: [artifact.key, ...leftoverArtifacts(entry.keys, rekeyedKey(artifact.key, current)).filter((k) => k !== artifact.key)] });
      continue;
    }
    if (!sameRecipients(from, current) && old && !opens(old, from)) {
      report({ ...base, outcome: 'failed', from, to: current, error: `the identity in ${old.field} does not open it (encrypted to ${from.join(', ')}); pass --identity with the identity of those recipients` });
      continue;
    }
    try {
      // Each attempt starts from what the folder holds now: a retry after the commit only finishes it.
      report(await retry(`rekey of backup ${entry.id}`, () => rekeyBackup({ deps, store, dataset, entry, age, current, old, viewFor, scope, onProgress: options.onProgress })));
    } catch (err) {
      if (signal?.aborted) throw err;
      report({ ...base, outcome: 'failed', from, to: current, error: (err as Error).message });
    }
  }

  const count = (o: RekeyOutcome) => backups.filter((b) => b.outcome === o).length;
  const counts = {
    reencrypted: count('re-encrypted') + count('would re-encrypt'),
    current: count('current'),
    plaintext: count('plaintext'),
    failed: count('failed'),
    removed: backups.reduce((n, b) => n + b.removed.length, 0),
  };
  if (identityProblem) warnings.unshift(identityProblem);
  return { ok: counts.failed === 0, dataset: dataset.id, dryRun: options.dryRun ?? false, recipients: current, backups, counts, warnings };
}

/** The old identities, or why there are none that can open the backups to re-encrypt (naming the flag and the config field). */
async function oldIdentities(dataset: Extract<Dataset, { kind: 'postgres' | 'etcd' }>, stale: BackupEntry[], override?: string): Promise<Identities | string> {
  const what = `dataset ${dataset.id}`;
  const reference = override ?? dataset.encryption?.identityFile;
  const field = override ? '--identity' : `dataset ${dataset.id}: encryption.identityFile`;
  if (!reference) return `cannot rekey ${what}: ${stale.length} backup(s) need the old age identity to decrypt, and none is given: pass --identity <file> (the old identity), or set encryption.identityFile; nothing was changed`;
  const loaded = await loadIdentities(reference, field);
  if (typeof loaded === 'string') return `cannot rekey ${what}: ${loaded}; pass --identity <file> (the old identity) or fix encryption.identityFile; nothing was changed`;
  if (stale.some((e) => opens(loaded, e.manifest.artifact.encryption!.recipients))) return loaded;
  const wanted = [...new Set(stale.flatMap((e) => e.manifest.artifact.encryption!.recipients))];
  return `cannot rekey ${what}: the identity in ${field} opens none of the ${stale.length} backup(s) to re-encrypt (they are encrypted to ${wanted.join(', ')}; it is for ${[...loaded.fingerprints!].join(', ')}); pass --identity <file> with the old identity; nothing was changed`;
}

interface BackupJob {
  deps: Deps;
  store: TargetStore;
  dataset: Dataset;
  entry: BackupEntry;
  age: ReturnType<typeof ageEncrypter>;
  current: string[];
  old?: Identities;
  viewFor: (recipients: readonly string[]) => { dataset: Dataset; decrypts: boolean };
  scope: VerifyScope;
  onProgress?: RekeyOptions['onProgress'];
}

async function folderKeys(store: TargetStore, dir: string, signal?: AbortSignal): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(dir, { signal })) keys.push(o.key);
  return keys;
}

function verdict(record: VerifyRecord, decrypts: boolean): { ok: boolean; decrypted: boolean; detail: string } {
  if (!record.ok) return { ok: false, decrypted: decrypts, detail: failureReason(record) };
  const plaintext = record.checks.find((c) => c.name === 'plaintext sha256');
  return plaintext
    ? { ok: true, decrypted: true, detail: 'decrypted, plaintext sha256 matches' }
    : { ok: true, decrypted: false, detail: "ciphertext sha256 and age header (no identity of the new recipients here to decrypt with)" };
}

/** One backup, from whatever state its folder is in. */
async function rekeyBackup(job: BackupJob): Promise<RekeyedBackup> {
  const { store, entry, current, scope } = job;
  const signal = scope.signal;
  const manifestKey = siblingKey(entry.manifest.artifact.key, MANIFEST_FILE);
  const parsed = manifestSchema.safeParse(await store.getJson(manifestKey, { signal }));
  if (!parsed.success) throw new RekeyError(`backup ${entry.id}: ${MANIFEST_FILE} is gone or no longer valid; left as it is`);
  const manifest = parsed.data;
  const { artifact } = manifest;
  const dir = artifact.key.slice(0, artifact.key.lastIndexOf('/') + 1);
  const encryption = artifact.encryption;
  if (!encryption) throw new RekeyError(`backup ${entry.id}: its manifest now describes a plaintext artifact; left as it is`);
  const keys = await folderKeys(store, dir, signal);

  if (sameRecipients(encryption.recipients, current)) return finishCommitted(job, manifest, keys);

  if (!job.old) throw new RekeyError(`backup ${entry.id}: no old identity`);
  const newKey = rekeyedKey(artifact.key, current);
  if (newKey === artifact.key) throw new RekeyError(`backup ${entry.id}: the re-encrypted key would be the artifact's own (${newKey}); left as it is`);

  const stored = await reencrypt(job, artifact.key, newKey, manifest);
  const rekeyed: Manifest = {
    ...manifest,
    artifact: {
      ...artifact,
      key: newKey,
      size: stored.size,
      sha256: stored.sha256,
      etag: stored.etag,
      encryption: { ...encryption, recipients: current, rekeyedAt: job.deps.clock().toISOString() },
    },
  };
  // The commit point: one PUT. Until here the old manifest and artifact are the backup.
  signal.throwIfAborted();
  await store.putJson(manifestKey, manifestSchema.parse(rekeyed), { signal });

  const view = job.viewFor(current);
  const record = await verifyArtifact(scope, view.dataset, newKey, 'rekey');
  if (!record.ok) {
    // Roll back to the old artifact, which is still there, and record that it verifies again.
    await store.putJson(manifestKey, manifest, { signal });
    await verifyArtifact(scope, job.viewFor(encryption.recipients).dataset, artifact.key, 'rekey');
    await store.delete([newKey], { signal });
    throw new RekeyError(`backup ${entry.id}: the re-encrypted artifact failed verification (${failureReason(record)}); the backup was rolled back to ${artifact.key}`);
  }
  const removed = [artifact.key, ...leftoverArtifacts(keys, newKey).filter((k) => k !== artifact.key)];
  await store.delete(removed, { signal });
  return { id: entry.id, outcome: 're-encrypted', key: artifact.key, newKey, from: encryption.recipients, to: current, size: stored.size, removed, verified: verdict(record, view.decrypts) };
}

/**
 * The manifest is already on the current recipients (a second run, or one killed after its commit):
 * only leftovers are removed, once a verification vouches for the artifact the manifest names.
 */
async function finishCommitted(job: BackupJob, manifest: Manifest, keys: string[]): Promise<RekeyedBackup> {
  const { store, entry, scope } = job;
  const { artifact } = manifest;
  const leftovers = leftoverArtifacts(keys, artifact.key);
  const base: RekeyedBackup = { id: entry.id, outcome: 'current', key: artifact.key, removed: [] };
  if (leftovers.length === 0) return base;
  const raw = await store.getJson(siblingKey(artifact.key, VERIFY_FILE), { signal: scope.signal }).catch(() => undefined);
  const record = verifyRecordSchema.safeParse(raw);
  const vouched = record.success && record.data.ok && record.data.key === artifact.key && record.data.expected.sha256 === artifact.sha256;
  let verified: RekeyedBackup['verified'];
  if (!vouched) {
    const view = job.viewFor(artifact.encryption!.recipients);
    const fresh = await verifyArtifact(scope, view.dataset, artifact.key, 'rekey');
    verified = verdict(fresh, view.decrypts);
    if (!fresh.ok) throw new RekeyError(`backup ${entry.id}: ${artifact.key} failed verification (${verified.detail}); kept ${leftovers.join(', ')}`);
  }
  await store.delete(leftovers, { signal: scope.signal });
  return { ...base, removed: leftovers, verified };
}

/**
 * GET → decrypt → (plaintext check) → encrypt → PUT, streaming end to end. The decrypted bytes go two
 * ways: through gunzip (if compressed) and sha256, and to the encrypter through a gate that holds the
 * end of the upload until the plaintext matched the manifest, so a mismatch leaves no new object.
 */
async function reencrypt(job: BackupJob, fromKey: string, toKey: string, manifest: Manifest): Promise<{ size: number; sha256: string; etag: string }> {
  const { store, entry, scope } = job;
  const signal = scope.signal;
  const { artifact } = manifest;
  const expected = artifact.encryption!.plaintext;
  const what = `dataset ${job.dataset.id}`;
  const body = await store.get(fromKey, { signal }).catch((err: unknown) => {
    throw err instanceof ObjectNotFoundError ? new RekeyError(`backup ${entry.id}: ${fromKey}, named by its manifest, does not exist; left as it is`) : err;
  });
  const read: Readable = job.onProgress ? through(body, progressTap((bytes) => job.onProgress!(entry.id, bytes, artifact.size))) : body;
  const plain = through(read, ageDecrypter(job.old!.keys, what)());

  const hash = createHash('sha256');
  let plainBytes = 0;
  const checkIn = artifact.compression === 'gzip' ? createGunzip() : new PassThrough();
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      plainBytes += chunk.length;
      callback();
    },
  });
  let mismatch: string | undefined;
  // Set when the check branch is stopped from outside (a read error, an abort, a failed upload): its
  // "premature close" then says nothing about the plaintext.
  let stopped = false;
  const checked = pipeline(checkIn, sink).then(
    () => {
      const sha256 = hash.digest('hex');
      if (sha256 !== expected.sha256 || plainBytes !== expected.size) {
        mismatch = `the decrypted content is ${plainBytes} bytes with sha256 ${sha256}, the manifest says ${expected.size} bytes, ${expected.sha256}`;
      }
    },
    (err: unknown) => {
      if (stopped) return;
      mismatch ??= artifact.compression === 'gzip' ? `the decrypted content is no intact gzip stream (${(err as Error).message})` : `the plaintext check failed (${(err as Error).message})`;
    },
  );
  const gate = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      void checked.then(() => callback(mismatch ? new PlaintextMismatchError(mismatch) : null));
    },
  });
  // A damaged gzip stream stops the upload at once instead of at its end.
  void checked.then(() => {
    if (mismatch) gate.destroy(new PlaintextMismatchError(mismatch));
  });
  plain.on('error', (err) => {
    stopped = true;
    checkIn.destroy(err);
    gate.destroy(err);
  });
  plain.pipe(checkIn);
  plain.pipe(gate);
  // A gate destroyed after its flush began (the plaintext check failing) does not reach the age stage's
  // reader through the pipeline, so an error fails the upload's own body.
  const cipher = new PassThrough();
  // Once the upload took the last byte, a late error here (the check failing after it) has no reader
  // left; the mismatch is thrown below after `await checked`, so it must not go uncaught.
  cipher.on('error', () => {});
  const encrypted = through(gate, job.age.stage());
  gate.on('error', (err) => cipher.destroy(err));
  encrypted.on('error', (err) => cipher.destroy(err));
  encrypted.pipe(cipher);

  try {
    const stored = await store.put(toKey, cipher, {
      contentType: artifact.contentType,
      metadata: { 'lifeboat-dataset': job.dataset.id, 'lifeboat-encryption': 'age' },
      signal,
      // The key is this rekey's own; what a killed earlier run left unfinished there is abandoned.
      replaceUnfinished: true,
    });
    await checked;
    if (mismatch) throw new PlaintextMismatchError(mismatch);
    return stored;
  } catch (err) {
    stopped = true;
    body.destroy();
    plain.destroy();
    checkIn.destroy();
    await checked;
    // Whatever an earlier attempt left at the new key is not the backup either (after an abort, the re-run overwrites it).
    if (!signal.aborted) await store.delete([toKey], { signal }).catch(() => {});
    if (mismatch) throw new PlaintextMismatchError(`backup ${entry.id}: ${mismatch}; nothing was changed, ${fromKey} is still the backup`);
    throw err;
  }
}
