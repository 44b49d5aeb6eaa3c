import type { ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { drillRecordSchema, type DrillRecord } from '../lib/catalog/manifest.js';
import type { Config } from '../lib/config/schema.js';
import { targetEvents } from '../lib/metrics/rebuild.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { etcdctl, startEtcd, zipSnapshot } from './etcd.js';
import { createBucket, logger, removeBucket, s3Client, testConfig } from './helpers.js';

// Real etcd (Debian's etcd-server) makes real snapshots; real Ceph RGW holds them; the drill restores
// them with the real etcdctl 3.4 (this machine has no etcdutl).
let etcd: ChildProcess | undefined;
let work: string;
let client: S3Client;
let bucket: string;
const T1 = 1795651200; // 2026-11-26T00:00:00Z
const RAW = `etcd-snapshot-node1-${T1}`;
const ZIP = `etcd-snapshot-node1-${T1 + 3600}.zip`;
const KEYS = 150;
const DRILL_TICK = '2026-11-29T05:00:00Z';

const exists = (path: string) => access(path).then(() => true, () => false);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-drill-etcd-'));
  const started = await startEtcd(join(work, 'data'));
  etcd = started.process;
  for (let i = 0; i < KEYS; i++) etcdctl('--endpoints', started.endpoint, 'put', `/registry/things/${i}`, `value-${i}-${'x'.repeat(100)}`);
  const source = join(work, 'source');
  await mkdir(source);
  etcdctl('--endpoints', started.endpoint, 'snapshot', 'save', join(source, RAW));
  etcdctl('--endpoints', started.endpoint, 'put', '/registry/things/extra', 'one more');
  const inner = ZIP.replace(/\.zip$/, '');
  etcdctl('--endpoints', started.endpoint, 'snapshot', 'save', join(source, inner));
  zipSnapshot(join(source, inner), inner);
  // Kept out of the snapshot dir, for the expected status figures.
  await mkdir(join(work, 'inner'));
  await rename(join(source, inner), join(work, 'inner', inner));
  // The snapshots are all we need from etcd.
  etcd.kill('SIGKILL');
  etcd = undefined;
  client = s3Client();
  bucket = await createBucket(client);
}, 60_000);

afterAll(async () => {
  etcd?.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
  if (client) {
    await removeBucket(client, bucket);
    client.destroy();
  }
});

function config(id: string, drill: Record<string, unknown> = {}): Config {
  return testConfig({
    datasets: [{ id, kind: 'etcd', target: { name: 'hub', bucket, prefix: `${id}/` }, source: { snapshotDir: join(work, 'source'), settleSeconds: 0 }, drill }],
  });
}

interface Outcome {
  ok: boolean;
  value?: any;
  error?: Error & { record?: unknown };
  events: Array<{ event: string; payload: any }>;
}

async function run(cfg: Config, fn: AnyFunction, data: Record<string, unknown>, attempt = { attempt: 1, maxAttempts: 1 }): Promise<Outcome> {
  const deps = openLocal(cfg, logger());
  const events: Outcome['events'] = [];
  try {
    const value = await runFunction(fn, { dataset: cfg.datasets[0]!.id, ...data }, { jobId: 't', ...attempt, createdAt: Date.now() }, { deps, emit: async (event, payload) => void events.push({ event, payload }) });
    return { ok: true, value, events };
  } catch (error) {
    return { ok: false, error: error as Error, events };
  } finally {
    await deps.close();
  }
}

async function uploaded(id: string, drill: Record<string, unknown> = {}): Promise<Config> {
  const cfg = config(id, drill);
  const upload = await run(cfg, uploadEtcd, {});
  expect(upload.error).toBeUndefined();
  expect(upload.value).toMatchObject({ uploaded: [RAW, ZIP] });
  return cfg;
}

/** `snapshot status` of a local snapshot, as the test's own reference. */
const statusOf = (file: string) => JSON.parse(etcdctl('snapshot', 'status', file, '-w', 'json')) as { revision: number; totalKey: number };
const tempDirOf = (record: DrillRecord) => /^temp dir (\/.+)$/.exec(record.where)?.[1];
const readJson = async (key: string) => JSON.parse(Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray()).toString());

describe('drillRestore of etcd snapshots, real etcd and RGW', () => {
  let cfg: Config;
  beforeAll(async () => {
    cfg = await uploaded('k3s');
  });

  it('restores the newest snapshot (a k3s zip) with etcdctl into a temp dir, records revision and keys, and removes the dir', async () => {
    const result = await run(cfg, drillRestore, { tick: DRILL_TICK });
    expect(result.error?.message).toBeUndefined();
    const record = drillRecordSchema.parse(result.value);
    const inner = ZIP.replace(/\.zip$/, '');
    expect(record).toMatchObject({ ok: true, mode: 'temp-dir', backup: ZIP, key: `k3s/k3s/${ZIP}/${ZIP}` });
    expect(record.checks.map((c) => [c.name, c.ok])).toEqual([
      ['download', true], [`zip crc32 ${inner}`, true], [`snapshot sha256 trailer (${inner})`, true], ['unzip', true],
      ['snapshot restore', true], ['member dir', true], ['temp dir cleanup', true],
    ]);
    const expected = statusOf(join(work, 'inner', inner));
    expect(expected.totalKey).toBeGreaterThan(KEYS);
    expect(record.details).toMatchObject({ snapshot: ZIP, tool: 'etcdctl', revision: expected.revision, totalKey: expected.totalKey });
    expect(tempDirOf(record)).toMatch(/lifeboat-etcd-drill-/);
    expect(await exists(tempDirOf(record)!)).toBe(false);

    // drill.json beside the snapshot, where the catalog finds it, so metrics rebuild from the hub.
    expect(drillRecordSchema.parse(await readJson(`k3s/k3s/${ZIP}/drill.json`)).ok).toBe(true);
    expect(result.events.map((e) => [e.event, e.payload.kind, e.payload.ok])).toEqual([['drill.completed', 'etcd', true]]);
    const deps = openLocal(cfg, logger());
    try {
      expect((await targetEvents(deps, cfg.datasets[0]!)).find((e) => e.event === 'drill.completed')?.payload).toMatchObject({ kind: 'etcd', ok: true, key: record.key });
    } finally {
      await deps.close();
    }
  });

  it('restores a named raw snapshot, and the restore holds the same revision as the original', async () => {
    const result = await run(cfg, drillRestore, { backup: RAW, tick: DRILL_TICK });
    expect(result.error?.message).toBeUndefined();
    const record = drillRecordSchema.parse(result.value);
    expect(record.checks.map((c) => [c.name, c.ok])).toEqual([['download', true], ['snapshot sha256 trailer', true], ['snapshot restore', true], ['member dir', true], ['temp dir cleanup', true]]);
    const expected = statusOf(join(work, 'source', RAW));
    expect(record.details).toMatchObject({ revision: expected.revision, totalKey: expected.totalKey });
    expect(await exists(tempDirOf(record)!)).toBe(false);
  });

  it('fails for good on a snapshot with a byte flipped on the hub: download, trailer and etcdctl restore all say so', async () => {
    const flip = await uploaded('flip');
    const bytes = await readFile(join(work, 'source', RAW));
    bytes[Math.floor(bytes.length / 2)] = bytes[Math.floor(bytes.length / 2)]! ^ 0xff;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `flip/flip/${RAW}/${RAW}`, Body: bytes }));
    // Attempt 1 of 2: a corrupt snapshot is final, not retried.
    const result = await run(flip, drillRestore, { backup: RAW, tick: DRILL_TICK }, { attempt: 1, maxAttempts: 2 });
    expect(result.error).toMatchObject({ name: 'DrillFailedError' });
    const record = drillRecordSchema.parse(result.error!.record);
    const byName = Object.fromEntries(record.checks.map((c) => [c.name, c]));
    expect(byName['download']).toMatchObject({ ok: false, detail: expect.stringContaining('manifest') });
    expect(byName['snapshot sha256 trailer']).toMatchObject({ ok: false });
    expect(byName['snapshot restore']).toMatchObject({ ok: false, detail: expect.stringMatching(/^etcdctl snapshot restore exited 1: Error: expected sha256 \[/) });
    expect(byName['temp dir cleanup']).toMatchObject({ ok: true });
    expect(drillRecordSchema.parse(await readJson(`flip/flip/${RAW}/drill.json`)).ok).toBe(false);
    expect(result.events.map((e) => [e.event, e.payload.ok])).toEqual([['drill.completed', false]]);
    expect(await exists(tempDirOf(record)!)).toBe(false);
  });

  it('fails for good on a k3s zip damaged on the hub', async () => {
    const damaged = await uploaded('zipflip');
    const bytes = await readFile(join(work, 'source', ZIP));
    bytes[Math.floor(bytes.length / 2)] = bytes[Math.floor(bytes.length / 2)]! ^ 0xff;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `zipflip/zipflip/${ZIP}/${ZIP}`, Body: bytes }));
    const result = await run(damaged, drillRestore, { tick: DRILL_TICK }, { attempt: 1, maxAttempts: 2 });
    expect(result.error).toMatchObject({ name: 'DrillFailedError' });
    const record = drillRecordSchema.parse(result.error!.record);
    expect(record.checks.find((c) => c.name === 'download')).toMatchObject({ ok: false });
    // Either inflating fails or the CRC and then etcdctl's own hash check do; never a restored member dir.
    expect(record.checks.filter((c) => !c.ok).length).toBeGreaterThanOrEqual(2);
    expect(record.checks.find((c) => c.name === 'member dir')).toBeUndefined();
    expect(await exists(tempDirOf(record)!)).toBe(false);
  });

  it('uses a configured etcdutl over etcdctl', async () => {
    // etcdutl (3.5+) takes the same snapshot arguments; this one hands them to the real etcdctl and leaves a trace.
    const wrapper = join(work, 'etcdutl');
    await writeFile(wrapper, `#!/bin/sh\necho "$1 $2" >> ${join(work, 'etcdutl.calls')}\nETCDCTL_API=3 exec etcdctl "$@"\n`, { mode: 0o755 });
    const result = await run(config('k3s', { etcdutl: wrapper }), drillRestore, { backup: RAW, tick: DRILL_TICK });
    expect(result.error?.message).toBeUndefined();
    expect(drillRecordSchema.parse(result.value)).toMatchObject({ ok: true, details: { tool: 'etcdutl' } });
    expect((await readFile(join(work, 'etcdutl.calls'), 'utf8')).trim().split('\n')).toEqual(['snapshot restore', 'snapshot status']);
  });

  it.each(['etcdctl', 'etcdutl'])('retries a drill whose configured %s does not exist, naming the binary and the config field', async (field) => {
    const missing = `/nonexistent/bin/${field}`;
    const nobin = config('k3s', { [field]: missing });
    const first = await run(nobin, drillRestore, { tick: DRILL_TICK }, { attempt: 1, maxAttempts: 2 });
    expect(first.error?.name).toBe('Error');
    expect(first.error?.message).toContain(`dataset k3s: ${field} not found at ${missing} (drill.${field})`);
    expect(first.events).toEqual([]); // a retry follows: no verdict yet
    const last = await run(nobin, drillRestore, { tick: DRILL_TICK }, { attempt: 2, maxAttempts: 2 });
    expect(last.error).toMatchObject({ name: 'DrillFailedError', message: expect.stringContaining(`(drill.${field})`) });
    expect(drillRecordSchema.parse(last.error!.record)).toMatchObject({ ok: false, where: 'temp dir (not created)', checks: [{ name: 'snapshot tool', ok: false }] });
  });
});
