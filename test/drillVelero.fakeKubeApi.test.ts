import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ApiException, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { drillRecordSchema } from '../lib/catalog/manifest.js';
import type { Config } from '../lib/config/schema.js';
import { restoreName, scratchNamespace } from '../lib/drill/velero.js';
import { samplesFromTargets, targetEvents } from '../lib/metrics/rebuild.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { EventName } from '../queue/events.js';
import { runFunction } from '../queue/runner.js';
import { startFakeKubeApi, type FakeKubeApi } from './fakes/kubeApi.js';
import { createBucket, listKeys, logger, removeBucket, s3Client, s3Env, testConfig } from './helpers.js';

// No Kubernetes API server, and so no Velero, can run here: the API server is a FAKE (test/fakes/kubeApi.ts)
// that speaks the real REST protocol to @kubernetes/client-node and plays Velero's restore controller as each
// test scripts it. The hub is the real Ceph RGW, and drill records really land in it.
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TICK = '2026-11-29T05:00:00Z';
let client: S3Client;
let bucket: string;
let kube: FakeKubeApi;
let events: Array<{ event: EventName; payload: any }>;

beforeAll(async () => {
  client = s3Client();
  bucket = await createBucket(client);
});
afterAll(async () => {
  await removeBucket(client, bucket);
  client.destroy();
});
beforeEach(async () => {
  kube = await startFakeKubeApi();
  events = [];
});
afterEach(async () => kube.close());

function rawDataset(id: string, kubernetes: Record<string, unknown> = {}) {
  return { id, kind: 'velero', target: { name: 'hub', bucket, prefix: `${id}/` }, drill: { kubernetes: { kubeconfig: kube.kubeconfigPath, ...kubernetes } } };
}

function config(id: string, kubernetes: Record<string, unknown> = {}): Config {
  return testConfig({ datasets: [rawDataset(id, kubernetes)] });
}

async function drill(cfg: Config, data: Record<string, unknown>, attempt = { attempt: 1, maxAttempts: 1 }) {
  const deps = openLocal(cfg, logger());
  try {
    return await runFunction(drillRestore, data, { jobId: 't', ...attempt, createdAt: Date.now() }, {
      deps,
      emit: async (event, payload) => {
        events.push({ event, payload });
        await deps.metrics.onEvent(event, payload);
      },
    });
  } finally {
    await deps.close();
  }
}

async function readRecord(key: string) {
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return drillRecordSchema.parse(JSON.parse(await object.Body!.transformToString()));
}

/** What the drill will map `source` to, for the dataset's restore at TICK. */
function scratchFor(id: string, source: string): string {
  return scratchNamespace('lifeboat-drill', restoreName(id, new Date(TICK)), source);
}

describe('drillRestore of a Velero backup (fake Kubernetes API server playing Velero, real RGW)', () => {
  it('restores the newest Completed backup at or before the tick into scratch namespaces, records it under _lifeboat/, and deletes everything', async () => {
    kube.addVeleroBackup({ name: 'nightly-20261127030000', completionTimestamp: '2026-11-27T03:10:00Z', includedNamespaces: ['shop', 'blog'], totalItems: 40 });
    kube.addVeleroBackup({ name: 'nightly-20261128030000', completionTimestamp: '2026-11-28T03:10:00Z', includedNamespaces: ['shop', 'blog'], totalItems: 42 });
    kube.addVeleroBackup({ name: 'nightly-20261129030000', phase: 'PartiallyFailed', completionTimestamp: '2026-11-29T03:10:00Z', includedNamespaces: ['shop', 'blog'] });
    kube.addVeleroBackup({ name: 'nightly-20261130030000', completionTimestamp: '2026-11-30T03:10:00Z', includedNamespaces: ['shop', 'blog'] }); // after the tick
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'vok/backups/nightly-20261128030000/velero-backup.json', Body: '{"status":{"phase":"Completed"}}' }));
    const created: any[] = [];
    kube.onCreateRestore = (restore) => void created.push(restore);

    const record = drillRecordSchema.parse(await drill(config('vok'), { dataset: 'vok', tick: TICK }));

    const name = 'lifeboat-drill-vok-20261129t050000z';
    const mapping = { shop: scratchFor('vok', 'shop'), blog: scratchFor('vok', 'blog') };
    expect(mapping.shop).toMatch(/^lifeboat-drill-[0-9a-f]{8}-shop$/);
    expect(created).toHaveLength(1);
    expect(created[0]).toMatchObject({
      name,
      namespace: 'velero',
      spec: { backupName: 'nightly-20261128030000', includedNamespaces: ['shop', 'blog'], namespaceMapping: mapping, restorePVs: true, existingResourcePolicy: 'none' },
    });
    expect(record).toMatchObject({
      ok: true,
      dataset: 'vok',
      backup: 'nightly-20261128030000',
      key: 'vok/backups/nightly-20261128030000/velero-backup.json',
      mode: 'kubernetes',
      where: `scratch namespaces ${mapping.shop}, ${mapping.blog} (restore velero/${name})`,
      details: { backup: 'nightly-20261128030000', restore: name, itemsRestored: 42, totalItems: 42, namespaces: mapping },
    });
    expect(record.checks.map((c) => [c.name, c.ok])).toEqual([['velero restore', true], ['items', true], ['scratch namespaces', true], ['cleanup', true]]);
    expect(record.checks[1]!.detail).toBe('restored 42 of 42 items (the whole backup holds 42 items)');

    // On the hub under _lifeboat/, never beside Velero's own files; the restore and the namespaces are gone.
    expect(await readRecord('vok/_lifeboat/drills/nightly-20261128030000.json')).toEqual(record);
    expect(await listKeys(client, bucket, 'vok/backups/')).toEqual(['vok/backups/nightly-20261128030000/velero-backup.json']);
    expect(kube.veleroRestores()).toEqual([]);
    expect(kube.requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual([
      `/apis/velero.io/v1/namespaces/velero/restores/${name}`,
      `/api/v1/namespaces/${mapping.shop}`,
      `/api/v1/namespaces/${mapping.blog}`,
    ]);
    for (const ns of Object.values(mapping)) expect(kube.namespaces.get(ns)).toMatchObject({ deleted: true, labels: { 'velero.io/restore-name': name } });
    expect(events.map((e) => [e.event, e.payload.ok, e.payload.kind])).toEqual([['drill.completed', true, 'velero']]);

    // After Redis loss the drill metric comes back from the record on the hub.
    const deps = openLocal(config('vok'), logger());
    try {
      const replayed = await targetEvents(deps, deps.config.datasets[0]!);
      expect(replayed).toContainEqual({ event: 'drill.completed', payload: expect.objectContaining({ dataset: 'vok', ok: true, key: record.key, finishedAt: record.finishedAt }) });
      const samples = await samplesFromTargets(deps);
      expect(samples.find((s) => s.name === 'lifeboat_drill_last_success_timestamp_seconds' && s.labels.dataset === 'vok')?.value).toBe(Date.parse(record.finishedAt) / 1000);
    } finally {
      await deps.close();
    }
  });

  it('a PartiallyFailed restore is a final DrillFailedError naming its errors, written to the hub, and cleaned up', async () => {
    kube.addVeleroBackup({ name: 'b1', completionTimestamp: '2026-11-28T03:10:00Z', includedNamespaces: ['shop'], totalItems: 10 });
    kube.onCreateRestore = () => ({ phase: 'PartiallyFailed', errors: 3, warnings: 1, itemsRestored: 7, failureReason: 'error restoring persistentvolumeclaims/shop/data' });

    const failure = await drill(config('vpart'), { dataset: 'vpart', tick: TICK }, { attempt: 1, maxAttempts: 2 }).catch((e: unknown) => e);

    expect(failure).toMatchObject({ name: 'DrillFailedError' });
    const message = (failure as Error).message;
    expect(message).toContain('velero restore (PartiallyFailed with 3 errors, 1 warning; failure reason: error restoring persistentvolumeclaims/shop/data');
    expect(message).toContain('items (restored 7 of 10 items');
    const record = await readRecord('vpart/_lifeboat/drills/b1.json');
    expect(record.ok).toBe(false);
    expect(record.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['velero restore', 'items']);
    expect(kube.veleroRestores()).toEqual([]);
    expect(kube.namespaces.get(scratchFor('vpart', 'shop'))?.deleted).toBe(true);
    expect(events.map((e) => [e.event, e.payload.ok, e.payload.failedChecks])).toEqual([['drill.completed', false, ['velero restore', 'items']]]);
  });

  it('a restore that never finishes times out: retryable on attempt 1 of 2, with the Restore deleted and the record written', async () => {
    kube.addVeleroBackup({ name: 'b1', completionTimestamp: '2026-11-28T03:10:00Z', includedNamespaces: ['shop'] });
    kube.onCreateRestore = () => ({ phase: 'InProgress' });

    const started = Date.now();
    const failure = await drill(config('vslow', { timeoutSeconds: 1 }), { dataset: 'vslow', tick: TICK }, { attempt: 1, maxAttempts: 2 }).catch((e: unknown) => e);

    expect(Date.now() - started).toBeLessThan(10_000);
    expect(failure).toBeInstanceOf(Error);
    expect(failure).not.toMatchObject({ name: expect.stringMatching(/PermanentError|DrillFailedError/) });
    expect((failure as Error).message).toContain('restore velero/lifeboat-drill-vslow-20261129t050000z did not finish within 1 s');
    expect(kube.veleroRestores()).toEqual([]);
    expect(kube.requests.some((r) => r.method === 'DELETE' && r.path.endsWith('/restores/lifeboat-drill-vslow-20261129t050000z'))).toBe(true);
    expect((await readRecord('vslow/_lifeboat/drills/b1.json')).checks.map((c) => [c.name, c.ok])).toEqual([['velero restore', false], ['cleanup', true]]);
    // Not final yet, so no drill.completed (the retry may still pass).
    expect(events).toEqual([]);
  });

  it('without a Completed backup it is a permanent error saying so, and nothing is created or written', async () => {
    kube.addVeleroBackup({ name: 'b1', phase: 'PartiallyFailed', completionTimestamp: '2026-11-28T03:10:00Z' });
    kube.addVeleroBackup({ name: 'b2', phase: 'InProgress' });

    await expect(drill(config('vnone'), { dataset: 'vnone', tick: TICK })).rejects.toMatchObject({
      name: 'PermanentError',
      message: 'dataset vnone has no Completed Velero backup in namespace velero completed at or before 2026-11-29T05:00:00.000Z (there are 1 PartiallyFailed, 1 InProgress)',
    });
    await expect(drill(config('vnone'), { dataset: 'vnone', backup: 'b1' })).rejects.toMatchObject({
      name: 'PermanentError', message: 'Velero backup velero/b1 of dataset vnone is PartiallyFailed, not Completed',
    });
    expect(kube.requests.filter((r) => r.method !== 'GET')).toEqual([]);
    expect(await listKeys(client, bucket, 'vnone/')).toEqual([]);
  });

  it('a backup of all namespaces needs drill.kubernetes.namespaces, and the error names that field', async () => {
    kube.addVeleroBackup({ name: 'everything', completionTimestamp: '2026-11-28T03:10:00Z' });
    await expect(drill(config('vall'), { dataset: 'vall', tick: TICK })).rejects.toMatchObject({
      name: 'PermanentError', message: expect.stringContaining('dataset vall: drill.kubernetes.namespaces is required'),
    });
    // Given, it restores those.
    const record = drillRecordSchema.parse(await drill(config('vall', { namespaces: ['shop'] }), { dataset: 'vall', tick: TICK }));
    expect(record.details).toMatchObject({ namespaces: { shop: scratchFor('vall', 'shop') } });
    expect(record.key).toBe('everything'); // no velero-backup.json on the hub to point at
  });

  it('a forbidden Restore is a final failure naming the RBAC rule, not retried', async () => {
    kube.addVeleroBackup({ name: 'b1', completionTimestamp: '2026-11-28T03:10:00Z', includedNamespaces: ['shop'] });
    kube.forbid('create', 'restores', 'velero');
    const failure = await drill(config('vrbac'), { dataset: 'vrbac', tick: TICK }, { attempt: 1, maxAttempts: 2 }).catch((e: unknown) => e);
    expect(failure).toMatchObject({ name: 'DrillFailedError' });
    expect((failure as Error).message).toContain(
      'restore velero/lifeboat-drill-vrbac-20261129t050000z (restores.velero.io): forbidden (restores.velero.io is forbidden: User "system:serviceaccount:lifeboat:lifeboat" cannot create resource "restores" in API group "velero.io" in the namespace "velero")',
    );
    expect((await readRecord('vrbac/_lifeboat/drills/b1.json')).ok).toBe(false);
  });

  it('an API server that cannot be reached is a retryable error', async () => {
    // A kubeconfig that outlives the server it points at (close() removes the fake's own).
    const dir = await mkdtemp(join(tmpdir(), 'lb-velero-down-'));
    const kubeconfig = join(dir, 'kubeconfig.yaml');
    await writeFile(kubeconfig, await readFile(kube.kubeconfigPath));
    const cfg = config('vdown', { kubeconfig });
    await kube.close();
    const failure = await drill(cfg, { dataset: 'vdown', tick: TICK }).catch((e: unknown) => e);
    await rm(dir, { recursive: true, force: true });
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).name).not.toMatch(/PermanentError|DrillFailedError/);
    expect((failure as Error).message).toMatch(/^backups\.velero\.io in namespace velero: .*ECONNREFUSED/);
    kube = await startFakeKubeApi(); // for afterEach
  });

  it('a retry after the worker process was SIGKILLed reuses the Restore it created', async () => {
    kube.addVeleroBackup({ name: 'b1', completionTimestamp: '2026-11-28T03:10:00Z', includedNamespaces: ['shop'], totalItems: 5 });
    // Velero keeps working while the worker is dead: the restore finishes 2 s after it was created.
    kube.onCreateRestore = () => ({ stepMs: 1000 });
    const cfgRaw = { redis: { url: 'redis://127.0.0.1:6379' }, targets: { hub: { kind: 's3', endpoint: s3Env().endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } }, datasets: [rawDataset('vkill')] };
    const child = await startDrillProcess(cfgRaw, { dataset: 'vkill', tick: TICK });
    try {
      let gone = false;
      void child.exited.then(() => (gone = true), () => (gone = true));
      for (let i = 0; i < 1000 && !gone && !kube.requests.some((r) => r.method === 'POST'); i++) await sleep(20);
      if (gone) await child.exited; // says why it ended early
      expect(kube.veleroRestores().map((r) => r.metadata.name)).toEqual(['lifeboat-drill-vkill-20261129t050000z']);
      child.process.kill('SIGKILL');
      await child.exited;
    } finally {
      child.process.kill('SIGKILL');
      await child.cleanup();
    }
    const posts = () => kube.requests.filter((r) => r.method === 'POST').length;
    expect(posts()).toBe(1);
    expect(kube.requests.some((r) => r.method === 'DELETE')).toBe(false); // killed: no cleanup ran

    const record = drillRecordSchema.parse(await drill(config('vkill'), { dataset: 'vkill', tick: TICK }, { attempt: 2, maxAttempts: 2 }));
    expect(record).toMatchObject({ ok: true, details: { restore: 'lifeboat-drill-vkill-20261129t050000z', itemsRestored: 5, totalItems: 5 } });
    expect(posts()).toBe(2); // the retry's create met the existing Restore (409) and used it
    expect(kube.veleroRestores()).toEqual([]);
    expect(kube.namespaces.get(scratchFor('vkill', 'shop'))?.deleted).toBe(true);
  });

  it('config: the drill is on only with drill.kubernetes, and enabled without it names the field', () => {
    const on = config('von');
    expect(on.datasets[0]).toMatchObject({ drill: { enabled: true, schedule: '0 5 * * 0', kubernetes: { veleroNamespace: 'velero', scratchPrefix: 'lifeboat-drill', timeoutSeconds: 1800 } } });
    const off = testConfig({ datasets: [{ id: 'voff', kind: 'velero', target: { name: 'hub', bucket } }] });
    expect(off.datasets[0]).toMatchObject({ drill: { enabled: false } });
    const schedules = (cfg: Config) => (drillRestore.triggers[0] as { cron: (c: Config) => Array<{ id: string }> }).cron(cfg).map((e) => e.id);
    expect([schedules(on), schedules(off)]).toEqual([['von'], []]);
    expect(() => testConfig({ datasets: [{ id: 'vbad', kind: 'velero', target: { name: 'hub', bucket }, drill: { enabled: true } }] })).toThrow(
      'datasets[0].drill.kubernetes: required when drill.enabled is true',
    );
    expect(() => testConfig({ datasets: [{ ...rawDataset('vbad'), drill: { kubernetes: { scratchPrefix: 'Drill_' } } }] })).toThrow('datasets[0].drill.kubernetes.scratchPrefix');
  });
});

/**
 * drillRestore in a separate Node process (TypeScript loaded through Vite's module runner, as vitest does),
 * so the test can SIGKILL it mid-drill: no finally block runs, as when a worker's node dies.
 */
async function startDrillProcess(rawConfig: unknown, data: unknown) {
  const dir = await mkdtemp(join(tmpdir(), 'lb-velero-kill-'));
  const script = join(dir, 'drill.ts');
  await writeFile(
    script,
    `import { drillRestore } from '${ROOT}functions/drillRestore.js';
import { parseConfig } from '${ROOT}lib/config/load.js';
import { openLocal } from '${ROOT}lib/plumbing/app.js';
import { silentLogger } from '${ROOT}lib/plumbing/logger.js';
import { runFunction } from '${ROOT}queue/runner.js';
const config = parseConfig(JSON.parse(process.env.LB_CONFIG!), 'child config', { env: process.env });
const deps = openLocal(config, silentLogger());
await runFunction(drillRestore, JSON.parse(process.env.LB_DATA!), { jobId: 'k', attempt: 1, maxAttempts: 2, createdAt: Date.now() }, { deps, emit: async () => {} });
`,
  );
  const s3 = s3Env();
  const runner = `const { runnerImport } = await import('vite'); await runnerImport(${JSON.stringify(script)}, { root: ${JSON.stringify(ROOT)}, configFile: false, logLevel: 'silent' });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', runner], {
    cwd: ROOT,
    env: { ...process.env, LB_CONFIG: JSON.stringify(rawConfig), LB_DATA: JSON.stringify(data), TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve)).then((code) => {
    if (code !== null && code !== 0) throw new Error(`drill process exited ${code}: ${stderr}`);
    return code;
  });
  exited.catch(() => {});
  return { process: child, exited, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

describe('fake Kubernetes API server: velero.io/v1 through CustomObjectsApi (the fake itself)', () => {
  it('lists, gets, creates and deletes Backups and Restores; a duplicate is 409; a Restore of a missing backup fails validation', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(kube.kubeconfigPath);
    const api = kc.makeApiClient(CustomObjectsApi);
    const velero = { group: 'velero.io', version: 'v1', namespace: 'velero' };
    kube.addVeleroBackup({ name: 'b1', includedNamespaces: ['shop'], totalItems: 3 });
    const list = (await api.listNamespacedCustomObject({ ...velero, plural: 'backups' })) as { kind: string; items: any[] };
    expect([list.kind, list.items.map((b) => [b.metadata.name, b.status.phase, b.status.progress.totalItems])]).toEqual(['BackupList', [['b1', 'Completed', 3]]]);

    const body = { apiVersion: 'velero.io/v1', kind: 'Restore', metadata: { name: 'r1' }, spec: { backupName: 'b1', includedNamespaces: ['shop'], namespaceMapping: { shop: 'shop-copy' } } };
    expect(((await api.createNamespacedCustomObject({ ...velero, plural: 'restores', body })) as any).status).toEqual({ phase: 'New' });
    const duplicate = await api.createNamespacedCustomObject({ ...velero, plural: 'restores', body }).catch((e: ApiException<string>) => e);
    expect([(duplicate as ApiException<string>).code, JSON.parse((duplicate as ApiException<string>).body).message]).toEqual([409, 'restores.velero.io "r1" already exists']);
    let restore: any;
    for (let i = 0; i < 50 && restore?.status?.phase !== 'Completed'; i++) {
      await sleep(20);
      restore = await api.getNamespacedCustomObject({ ...velero, plural: 'restores', name: 'r1' });
    }
    expect(restore.status).toMatchObject({ phase: 'Completed', progress: { totalItems: 3, itemsRestored: 3 } });
    expect(kube.namespaces.get('shop-copy')).toEqual({ labels: { 'velero.io/backup-name': 'b1', 'velero.io/restore-name': 'r1' }, deleted: false });

    await api.deleteNamespacedCustomObject({ ...velero, plural: 'restores', name: 'r1' });
    const gone = await api.getNamespacedCustomObject({ ...velero, plural: 'restores', name: 'r1' }).catch((e: ApiException<string>) => e);
    expect([(gone as ApiException<string>).code, JSON.parse((gone as ApiException<string>).body).message]).toEqual([404, 'restores.velero.io "r1" not found']);

    await api.createNamespacedCustomObject({ ...velero, plural: 'restores', body: { ...body, metadata: { name: 'r2' }, spec: { backupName: 'nope' } } });
    await sleep(250);
    expect(((await api.getNamespacedCustomObject({ ...velero, plural: 'restores', name: 'r2' })) as any).status).toEqual({
      phase: 'FailedValidation', validationErrors: ['Error retrieving backup: backups.velero.io "nope" not found'],
    });
  });
});
