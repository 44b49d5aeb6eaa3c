import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetBucketLifecycleConfigurationCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { LIFEBOAT_RECORDS } from '../catalog/layout.js';
import type { Config, DirTargetConfig, S3TargetConfig } from '../config/schema.js';
import { DirStore } from '../targets/dir.js';
import { datasetBuckets, datasetIds, type DatasetBucket } from './buckets.js';
import { checkClient, codeOf, describeFailure, noAnswer, statusOf, timed } from './s3.js';
import { fail, messageOf, ok, warn, type CheckLine } from './types.js';

const HUB_INIT_FIX = 'lifeboat hub init (creates the bucket, turns versioning on and sets the lifecycle rules)';
const PROBE_BODY = 'lifeboat check probe: safe to delete\n';

/** Where the probe goes: beside the records of the bucket's first dataset that keeps them under its prefix. */
function probeKey(b: DatasetBucket): string {
  const owner = b.datasets.find((d) => d.kind !== 'bucket');
  return `${owner?.target.prefix ?? ''}${LIFEBOAT_RECORDS}probe/${randomUUID()}`;
}

/** Why deletes are needed on this bucket, for the fix of a denied delete. */
function deleteReason(b: DatasetBucket): string {
  return b.datasets.some((d) => d.kind !== 'velero') ? "pruneCheck's retention needs it" : 'verifyObject removes the records of Velero backups that are gone';
}

/** Every target (reachable, credentials accepted), then per bucket: exists, versioning, put/get/list/delete. */
export async function checkTargets(config: Config): Promise<CheckLine[]> {
  const buckets = datasetBuckets(config);
  const perTarget = await Promise.all(
    Object.entries(config.targets).map(async ([name, target]) => {
      const own = buckets.filter((b) => b.target === name);
      return target.kind === 's3' ? checkS3Target(name, target, own) : checkDirTarget(name, target, own);
    }),
  );
  return perTarget.flat();
}

// --- s3 ---

async function checkS3Target(name: string, target: S3TargetConfig, buckets: DatasetBucket[]): Promise<CheckLine[]> {
  const client = checkClient(target);
  try {
    const reach = await reachS3(name, target, client);
    const skipped = buckets.length ? `; bucket checks skipped (${buckets.map((b) => b.bucket).join(', ')})` : '';
    if (reach.result === 'fail') return [{ ...reach, detail: reach.detail + skipped }];
    const perBucket = await Promise.all(buckets.map((b) => checkS3Bucket(b, client)));
    return [reach, ...perBucket.flat()];
  } finally {
    client.destroy();
  }
}

/** ListBuckets: any answer that is not a refusal of the keys themselves means the hub is there and knows them. */
async function reachS3(name: string, target: S3TargetConfig, client: S3Client): Promise<CheckLine> {
  const check = `target ${name}`;
  const started = Date.now();
  const where = `${target.endpoint}`;
  try {
    await client.send(new ListBucketsCommand({}), timed());
    return ok(check, `reachable at ${where}, credentials accepted (${Date.now() - started} ms)`);
  } catch (err) {
    const code = codeOf(err);
    if (code === 'AccessDenied') return ok(check, `reachable at ${where}, credentials accepted (${Date.now() - started} ms; ListBuckets not permitted, which a least-privilege key need not be)`);
    if (code === 'SignatureDoesNotMatch') return fail(check, `${where} rejected the secret key of target ${name}: ${describeFailure(err)}`, `check targets.${name}.secretAccessKey (from ${target.secretAccessKey.source})`);
    if (code === 'InvalidAccessKeyId') return fail(check, `${where} does not know the access key of target ${name}: ${describeFailure(err)}`, `check targets.${name}.accessKeyId (from ${target.accessKeyId.source})`);
    if (noAnswer(err)) return fail(check, `cannot reach target ${name} at ${where}: ${describeFailure(err)}`, `check targets.${name}.endpoint, and that the S3 server runs and is reachable from here`);
    return fail(check, `target ${name} at ${where}: ${describeFailure(err)}`, `check targets.${name}`);
  }
}

async function checkS3Bucket(b: DatasetBucket, client: S3Client): Promise<CheckLine[]> {
  const place = `${b.target}/${b.bucket}`;
  try {
    await client.send(new HeadBucketCommand({ Bucket: b.bucket }), timed());
  } catch (err) {
    const check = `bucket ${place}`;
    const status = statusOf(err);
    if (status === 404) return [fail(check, `bucket ${b.bucket} does not exist on target ${b.target} (datasets: ${datasetIds(b)})`, HUB_INIT_FIX)];
    if (status === 403) return [fail(check, `the keys of target ${b.target} may not access bucket ${b.bucket}: ${describeFailure(err)} (datasets: ${datasetIds(b)})`, `grant the key of targets.${b.target} s3:ListBucket (and object access) on bucket ${b.bucket}`)];
    return [fail(check, `bucket ${b.bucket} on target ${b.target}: ${describeFailure(err)}`)];
  }
  const [versioning, access] = await Promise.all([checkVersioning(b, client), probeS3(b, client)]);
  return [ok(`bucket ${place}`, `exists (datasets: ${datasetIds(b)})`), versioning, access];
}

/** Versioning on, and noncurrent versions expiring: a warning at worst, never a failure. */
async function checkVersioning(b: DatasetBucket, client: S3Client): Promise<CheckLine> {
  const check = `versioning ${b.target}/${b.bucket}`;
  let status: string | undefined;
  try {
    status = (await client.send(new GetBucketVersioningCommand({ Bucket: b.bucket }), timed())).Status;
  } catch (err) {
    return warn(check, `cannot read the versioning state: ${describeFailure(err)}`, `grant s3:GetBucketVersioning, or check versioning on the hub by hand`);
  }
  if (status !== 'Enabled') {
    return warn(check, `versioning is ${status === 'Suspended' ? 'suspended' : 'off'}: an overwritten object or a mirror's deletion cannot be undone`, HUB_INIT_FIX);
  }
  try {
    const rules = (await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: b.bucket }), timed())).Rules ?? [];
    const days = rules.filter((r) => r.Status === 'Enabled').map((r) => r.NoncurrentVersionExpiration?.NoncurrentDays).find((d) => d !== undefined);
    if (days !== undefined) return ok(check, `Enabled; noncurrent versions expire after ${days} days`);
    return warn(check, 'Enabled, but noncurrent versions never expire: the hub keeps every overwritten and deleted version until its disk is full', HUB_INIT_FIX);
  } catch (err) {
    if (codeOf(err) === 'NoSuchLifecycleConfiguration') {
      return warn(check, 'Enabled, but no lifecycle rules: noncurrent versions never expire and the hub keeps every overwritten and deleted version until its disk is full', HUB_INIT_FIX);
    }
    return ok(check, `Enabled (lifecycle rules not readable with these keys: ${describeFailure(err)})`);
  }
}

interface Step {
  op: 'put' | 'get' | 'list' | 'delete';
  error?: string;
}

/** Put, get, list and delete one small object: what the datasets' jobs do, with the target's own keys. */
async function probeS3(b: DatasetBucket, client: S3Client): Promise<CheckLine> {
  const check = `access ${b.target}/${b.bucket}`;
  const key = probeKey(b);
  const Bucket = b.bucket;
  const steps: Step[] = [];
  const step = async (op: Step['op'], run: () => Promise<void>) => {
    try {
      await run();
      steps.push({ op });
      return true;
    } catch (err) {
      steps.push({ op, error: describeFailure(err) });
      return false;
    }
  };
  let versionId: string | undefined;
  const put = await step('put', async () => {
    const r = await client.send(new PutObjectCommand({ Bucket, Key: key, Body: Buffer.from(PROBE_BODY), ContentType: 'text/plain' }), timed());
    versionId = r.VersionId;
  });
  if (put) {
    await step('get', async () => {
      const r = await client.send(new GetObjectCommand({ Bucket, Key: key }), timed());
      const text = await r.Body!.transformToString('utf8');
      if (text !== PROBE_BODY) throw new Error(`read back ${text.length} bytes that differ from the ${PROBE_BODY.length} written`);
    });
  }
  await step('list', async () => {
    const r = await client.send(new ListObjectsV2Command({ Bucket, Prefix: key }), timed());
    if (put && !(r.Contents ?? []).some((o) => o.Key === key)) throw new Error('the probe is missing from the listing');
  });
  let leftover = '';
  if (put) {
    const deleted = await step('delete', async () => {
      const r = await client.send(new DeleteObjectCommand({ Bucket, Key: key }), timed());
      // A versioned bucket keeps the probe as a noncurrent version behind a delete marker: remove both
      // where the keys may (s3:DeleteObjectVersion); otherwise the lifecycle rule expires them.
      if (versionId && versionId !== 'null') {
        const markers = [versionId, r.VersionId].filter((v): v is string => v !== undefined && v !== 'null');
        const removed = await Promise.all(markers.map((VersionId) => client.send(new DeleteObjectCommand({ Bucket, Key: key, VersionId }), timed()).then(() => true, () => false)));
        if (!removed.every(Boolean)) leftover = `; its noncurrent version stays until the lifecycle rule expires it`;
      }
    });
    if (!deleted) leftover = `; the probe ${key} remains (delete it by hand)`;
  }
  const failed = steps.filter((s) => s.error);
  if (!failed.length) return ok(check, `put, get, list and delete work under ${key.slice(0, key.lastIndexOf('/') + 1)}${leftover}`);
  const detail = `${failed.map((s) => `${s.op} failed: ${s.error}`).join('; ')}${steps.some((s) => !s.error) ? ` (${steps.filter((s) => !s.error).map((s) => s.op).join(', ')} ok)` : ''}${leftover}`;
  const fixes = failed.map((s) =>
    s.op === 'delete' ? `grant s3:DeleteObject (${deleteReason(b)})` : s.op === 'put' ? 'grant s3:PutObject' : s.op === 'get' ? 'grant s3:GetObject' : 'grant s3:ListBucket',
  );
  return fail(check, `with the keys of target ${b.target}: ${detail}`, `${[...new Set(fixes)].join('; ')} on bucket ${b.bucket} to the key of targets.${b.target}`);
}

// --- dir ---

async function nearestExisting(path: string): Promise<string> {
  for (let p = path; ; p = dirname(p)) {
    if (await stat(p).then(() => true, () => false)) return p;
    if (dirname(p) === p) return p;
  }
}

async function writable(path: string): Promise<boolean> {
  return access(path, constants.W_OK | constants.X_OK).then(() => true, () => false);
}

async function checkDirTarget(name: string, target: DirTargetConfig, buckets: DatasetBucket[]): Promise<CheckLine[]> {
  const check = `target ${name}`;
  const exists = await stat(target.path).then((s) => (s.isDirectory() ? 'dir' : 'other'), () => undefined);
  if (exists === 'other') return [fail(check, `${target.path} is not a directory`, `set targets.${name}.path to a directory`)];
  if (!exists) {
    const parent = await nearestExisting(target.path);
    if (!(await writable(parent))) return [fail(check, `${target.path} does not exist, and ${parent} is not writable by this user`, `create ${target.path} for the user Lifeboat runs as`)];
    return [warn(check, `${target.path} does not exist yet (it is created on the first write)`, 'lifeboat hub init (creates it)')];
  }
  if (!(await writable(target.path))) return [fail(check, `${target.path} is not writable by this user`, `give the user Lifeboat runs as write access to ${target.path}`)];
  const lines = [ok(check, `${target.path} is writable`)];
  for (const b of buckets) lines.push(...(await checkDirBucket(b, target)));
  return lines;
}

async function checkDirBucket(b: DatasetBucket, target: DirTargetConfig): Promise<CheckLine[]> {
  const place = `${b.target}/${b.bucket}`;
  const root = join(target.path, b.bucket);
  if (!(await stat(root).then((s) => s.isDirectory(), () => false))) {
    return [warn(`bucket ${place}`, `${root} does not exist yet (it is created on the first write; datasets: ${datasetIds(b)})`, 'lifeboat hub init (creates it)')];
  }
  const store = new DirStore(target.path, b.target, b.bucket);
  const key = probeKey(b);
  try {
    await store.put(key, Readable.from([Buffer.from(PROBE_BODY)]));
    const chunks: Buffer[] = [];
    for await (const c of await store.get(key)) chunks.push(c as Buffer);
    if (Buffer.concat(chunks).toString('utf8') !== PROBE_BODY) throw new Error('the probe read back differs from what was written');
    let listed = false;
    for await (const o of store.list(key.slice(0, key.lastIndexOf('/') + 1))) listed ||= o.key === key;
    if (!listed) throw new Error('the probe is missing from the listing');
  } catch (err) {
    await store.delete([key]).catch(() => {});
    return [ok(`bucket ${place}`, `${root} exists (datasets: ${datasetIds(b)})`), fail(`access ${place}`, `${root}: ${messageOf(err)}`, `give the user Lifeboat runs as read and write access to ${root}`)];
  }
  try {
    await store.delete([key]);
  } catch (err) {
    return [ok(`bucket ${place}`, `${root} exists (datasets: ${datasetIds(b)})`), fail(`access ${place}`, `delete failed: ${messageOf(err)}; the probe ${key} remains`, `give the user Lifeboat runs as write access to ${root} (${deleteReason(b)})`)];
  }
  return [ok(`bucket ${place}`, `${root} exists (datasets: ${datasetIds(b)})`), ok(`access ${place}`, `put, get, list and delete work under ${key.slice(0, key.lastIndexOf('/') + 1)}`)];
}
