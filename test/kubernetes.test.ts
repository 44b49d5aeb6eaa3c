import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { verifyObject } from '../functions/verifyObject.js';
import { openLocal } from '../lib/plumbing/app.js';
import type { Config } from '../lib/config/schema.js';
import { drillRecordSchema, manifestSchema } from '../lib/catalog/manifest.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import type { AnyFunction } from '../queue/define.js';
import { runFunction } from '../queue/runner.js';
import { startFakeKubeApi, type FakeKubeApi } from './fakes/kubeApi.js';
import { createBucket, listKeys, logger, multipartUploads, removeBucket, s3Client, seedDatabases, testConfig } from './helpers.js';

// No Kubernetes API server can run here: these tests talk to a FAKE one (test/fakes/kubeApi.ts) that speaks the
// real REST and exec WebSocket protocols and runs exec'd commands locally, against real PostgreSQL clusters.
const PASSWORD = 'pod-secret-password';
let server: ThrowawayCluster; // "inside" the Bitnami pod: password auth
let client: S3Client;
let bucket: string;
let kube: FakeKubeApi;

beforeAll(async () => {
  server = await startThrowawayCluster({ password: PASSWORD });
  const admin = server.url.replace('user=postgres', `user=postgres&password=${PASSWORD}`);
  await seedDatabases(admin, { shop: 1200, blog: 300 });
  client = s3Client();
  bucket = await createBucket(client);
});

afterAll(async () => {
  await server?.stop();
  await removeBucket(client, bucket);
  client.destroy();
});

beforeEach(async () => {
  kube = await startFakeKubeApi();
  // The Bitnami chart: a primary and a read replica, the password in a secret and in the pod's env.
  const env = { POSTGRES_PASSWORD: PASSWORD };
  kube.addPod({ namespace: 'db', name: 'pg-postgresql-0', labels: { 'app.kubernetes.io/name': 'postgresql', 'app.kubernetes.io/component': 'primary' }, containers: ['postgresql'], env });
  kube.addPod({ namespace: 'db', name: 'pg-postgresql-read-0', labels: { 'app.kubernetes.io/name': 'postgresql', 'app.kubernetes.io/component': 'read' }, containers: ['postgresql'], env });
  kube.addSecret('db', 'pg-postgresql', { 'postgres-password': PASSWORD });
});
afterEach(async () => kube.close());

function config(id: string, source: Record<string, unknown> = {}, drill: Record<string, unknown> = {}): Config {
  return testConfig({
    datasets: [
      {
        id,
        kind: 'postgres',
        source: {
          mode: 'kubernetes',
          kubeconfig: kube.kubeconfigPath,
          namespace: 'db',
          selector: 'app.kubernetes.io/name=postgresql',
          container: 'postgresql',
          // The fake runs commands here, so "inside the pod" the server is the throwaway cluster's socket.
          host: server.dir,
          port: server.port,
          password: { fromSecret: { name: 'pg-postgresql', key: 'postgres-password' } },
          ...source,
        },
        target: { name: 'hub', bucket },
        drill,
      },
    ],
  });
}

/** The drill talks to the fake API server too. */
function drillConfig(cfg: Config): Config {
  return { ...cfg, datasets: cfg.datasets.map((d) => (d.kind === 'postgres' ? { ...d, drill: { ...d.drill, kubernetes: { ...d.drill.kubernetes, kubeconfig: kube.kubeconfigPath } } } : d)) };
}

async function run(cfg: Config, fn: AnyFunction, data: unknown) {
  const deps = openLocal(cfg, logger());
  try {
    return await runFunction(fn, data, { jobId: 't', attempt: 1, maxAttempts: 1, createdAt: Date.now() }, { deps, emit: async (e, p) => deps.metrics.onEvent(e, p) });
  } finally {
    await deps.close();
  }
}

describe('dumpPostgres in kubernetes mode (fake API server)', () => {
  it('execs pg_dumpall in the Ready primary, with the password from the chart secret on stdin, never in a command line', async () => {
    const result = (await run(config('k8s'), dumpPostgres, { dataset: 'k8s', tick: '2026-11-26T02:00:00Z' })) as { key: string };
    expect(result.key).toBe('k8s/20261126T020000Z/pg_dumpall.sql.gz');
    const stored = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'k8s/20261126T020000Z/manifest.json' }));
    const manifest = manifestSchema.parse(JSON.parse(await stored.Body!.transformToString()));
    expect(manifest.source).toMatchObject({ mode: 'kubernetes', at: 'pod db/pg-postgresql-0', databases: ['blog', 'postgres', 'shop', 'template1'], stats: { shop: { tables: 1 }, blog: { tables: 1 } } });
    expect(kube.execs.map((e) => e.pod)).toEqual(['pg-postgresql-0', 'pg-postgresql-0', 'pg-postgresql-0', 'pg-postgresql-0']);
    expect(kube.execs.map((e) => e.command[4])).toEqual(['psql', 'pg_dumpall', 'psql', 'pg_dumpall']);
    expect(JSON.stringify(kube.execs) + JSON.stringify(kube.requests)).not.toContain(PASSWORD);
    // The dump verifies like any other.
    expect(await run(config('k8s'), verifyObject, { dataset: 'k8s', key: result.key })).toMatchObject({ ok: true });
  });

  it('can take the password from the pod\'s own environment instead', async () => {
    const result = (await run(config('k8senv', { password: { fromPodEnv: 'POSTGRES_PASSWORD' } }), dumpPostgres, { dataset: 'k8senv', tick: '2026-11-26T02:00:00Z' })) as { size: number };
    expect(result.size).toBeGreaterThan(1000);
    expect(kube.requests.some((r) => r.path.includes('/secrets/'))).toBe(false);
  });

  it('a pod that is not Ready, missing, or forbidden is a permanent error naming it, and nothing is stored', async () => {
    kube.setPodReady('db', 'pg-postgresql-0', false);
    await expect(run(config('notready', { selector: undefined, pod: 'pg-postgresql-0' }), dumpPostgres, { dataset: 'notready' })).rejects.toMatchObject({
      name: 'PermanentError', message: 'pod db/pg-postgresql-0 is not Ready (phase Pending)',
    });
    kube.setPodReady('db', 'pg-postgresql-read-0', false);
    await expect(run(config('noneready'), dumpPostgres, { dataset: 'noneready' })).rejects.toMatchObject({
      name: 'PermanentError', message: expect.stringContaining('no Ready pod in namespace db matches selector app.kubernetes.io/name=postgresql'),
    });
    await expect(run(config('missing', { selector: undefined, pod: 'pg-gone-0' }), dumpPostgres, { dataset: 'missing' })).rejects.toMatchObject({
      name: 'PermanentError', message: expect.stringMatching(/^pod db\/pg-gone-0 not found/),
    });
    kube.setPodReady('db', 'pg-postgresql-0', true);
    kube.forbid('exec', 'pods', 'db');
    await expect(run(config('forbidden'), dumpPostgres, { dataset: 'forbidden' })).rejects.toMatchObject({
      name: 'PermanentError', message: expect.stringMatching(/^pods\/exec db\/pg-postgresql-0 \(container postgresql\): forbidden/),
    });
    expect(await listKeys(client, bucket, 'notready/')).toEqual([]);
    expect(await listKeys(client, bucket, 'forbidden/')).toEqual([]);
  });

  it('a forbidden secret is a permanent error naming the secret', async () => {
    kube.forbid('get', 'secrets', 'db');
    await expect(run(config('nosecret'), dumpPostgres, { dataset: 'nosecret' })).rejects.toMatchObject({
      name: 'PermanentError', message: expect.stringMatching(/^secret db\/pg-postgresql: forbidden/),
    });
  });

  it('an exec that exits non-zero fails the job with pg_dumpall\'s stderr and stores nothing', async () => {
    kube.addSecret('db', 'wrong', { 'postgres-password': 'not-the-password' });
    await expect(run(config('badpw', { password: { fromSecret: { name: 'wrong', key: 'postgres-password' } } }), dumpPostgres, { dataset: 'badpw' })).rejects.toMatchObject({
      name: 'PermanentError', message: expect.stringContaining('password authentication failed for user "postgres"'),
    });
    expect(await listKeys(client, bucket, 'badpw/')).toEqual([]);
  });

  it('a dropped exec stream is retryable and leaves no object and no multipart upload', async () => {
    kube.dropNextExecAfter(4 * 1024, (command) => command[4] === 'pg_dumpall' && command[5] !== '--version');
    const failure = await run(config('dropped', {}, {}), dumpPostgres, { dataset: 'dropped', tick: '2026-11-26T02:00:00Z' }).catch((e: Error) => e);
    expect(failure).toMatchObject({ name: 'ExecStreamDroppedError' });
    expect(await listKeys(client, bucket, 'dropped/')).toEqual([]);
    expect(await multipartUploads(client, bucket)).toEqual([]);
  });
});

describe('drillRestore in kubernetes mode (fake API server)', () => {
  it('restores into a scratch namespace pod, checks it, and deletes the namespace', async () => {
    const cfg = config('k8sdrill', {}, { mode: 'kubernetes' });
    const key = ((await run(cfg, dumpPostgres, { dataset: 'k8sdrill', tick: '2026-11-26T02:00:00Z' })) as { key: string }).key;
    await run(cfg, verifyObject, { dataset: 'k8sdrill', key });
    // The scratch pod "runs" a throwaway cluster; the fake points its exec'd psql at it.
    const scratch = await startThrowawayCluster();
    kube.onCreatePod = () => ({ env: { PGHOST: scratch.dir, PGPORT: String(scratch.port) } });
    try {
      const record = drillRecordSchema.parse(await run(drillConfig(cfg), drillRestore, { dataset: 'k8sdrill' }));
      expect(record).toMatchObject({ ok: true, mode: 'kubernetes', where: expect.stringMatching(/^namespace lifeboat-drill-[0-9a-f]{8}$/) });
      expect(record.checks.filter((c) => !c.ok)).toEqual([]);
      const [namespace] = [...kube.namespaces].filter(([name]) => name.startsWith('lifeboat-drill-'));
      expect(namespace![1]).toMatchObject({ deleted: true, labels: { 'lifeboat.dev/drill': 'true' } });
    } finally {
      await scratch.stop();
    }
  });

  it('a scratch pod that fails its checks still has its namespace deleted', async () => {
    const cfg = config('k8sfail', {}, { mode: 'kubernetes', assertions: [{ database: 'shop', sql: 'select count(*) from items', expect: '1' }] });
    const key = ((await run(cfg, dumpPostgres, { dataset: 'k8sfail', tick: '2026-11-26T02:00:00Z' })) as { key: string }).key;
    await run(cfg, verifyObject, { dataset: 'k8sfail', key });
    const scratch = await startThrowawayCluster();
    kube.onCreatePod = () => ({ env: { PGHOST: scratch.dir, PGPORT: String(scratch.port) } });
    try {
      await expect(run(drillConfig(cfg), drillRestore, { dataset: 'k8sfail' })).rejects.toThrow('assertion 1 (shop: got "1200", expected "1")');
      const scratchNamespaces = [...kube.namespaces].filter(([name]) => name.startsWith('lifeboat-drill-'));
      expect(scratchNamespaces.map(([, n]) => n.deleted)).toEqual([true]);
    } finally {
      await scratch.stop();
    }
  });
});
