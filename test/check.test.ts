import { randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, ListObjectVersionsCommand, PutBucketPolicyCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckLine } from '../lib/check/types.js';
import { startFakeKubeApi } from './fakes/kubeApi.js';
import { createBucket, PG_URL, removeBucket, rgwUser, runCli, s3Client, s3Env } from './helpers.js';

// `lifeboat check` as an operator runs it (the built CLI; npm test builds first), against the real RGW,
// Redis and PostgreSQL 15.

let client: S3Client;
let dir: string;
const buckets: string[] = [];
const name = (label: string) => {
  const b = `lb-check-${label}-${randomUUID().slice(0, 8)}`;
  buckets.push(b);
  return b;
};

const WRONG_SECRET = 'wrong-secret-value-4711';

interface Setup {
  redis?: string;
  endpoint?: string;
  secretEnv?: string;
  accessEnv?: string;
  pgDumpall?: string;
  /** Bucket per dataset (pg on hub, snaps on hub, local pg on the dir target). */
  pgBucket: string;
  etcdBucket?: string;
  extra?: string[];
}

async function writeConfig(setup: Setup): Promise<string> {
  const file = join(dir, `${randomUUID()}.yaml`);
  const snapshots = join(dir, 'snapshots');
  await mkdir(snapshots, { recursive: true });
  const lines = [
    `redis: { url: "${setup.redis ?? 'redis://127.0.0.1:6379'}" }`,
    'targets:',
    `  hub: { kind: s3, endpoint: "${setup.endpoint ?? s3Env().endpoint}", accessKeyId: "\${env:${setup.accessEnv ?? 'TEST_S3_ACCESS_KEY'}}", secretAccessKey: "\${env:${setup.secretEnv ?? 'TEST_S3_SECRET_KEY'}}", connectTimeoutMs: 2000 }`,
    `  local: { kind: dir, path: "${join(dir, 'data')}" }`,
    'datasets:',
    '  - id: main',
    '    kind: postgres',
    `    source: { mode: direct, url: "${PG_URL}"${setup.pgDumpall ? `, pgDumpall: "${setup.pgDumpall}"` : ''} }`,
    `    target: { name: hub, bucket: ${setup.pgBucket} }`,
    ...(setup.etcdBucket ? ['  - id: snaps', '    kind: etcd', `    source: { snapshotDir: "${snapshots}" }`, `    target: { name: hub, bucket: ${setup.etcdBucket} }`] : []),
    '  - id: nearby',
    '    kind: postgres',
    `    source: { mode: direct, url: "${PG_URL}" }`,
    '    target: { name: local, bucket: postgres }',
    ...(setup.extra ?? []),
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

function lifeboat(args: string[], env: NodeJS.ProcessEnv = {}) {
  const s3 = s3Env();
  return runCli(args, { env: { TEST_S3_ACCESS_KEY: s3.accessKeyId, TEST_S3_SECRET_KEY: s3.secretAccessKey, WRONG_SECRET, LOG_LEVEL: 'error', ...env } });
}

async function checkJson(file: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; lines: CheckLine[]; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  const run = await lifeboat(['check', '--json', '-c', file], env);
  return { code: run.code, lines: JSON.parse(run.stdout) as CheckLine[], stdout: run.stdout, stderr: run.stderr, ms: Date.now() - started };
}

const line = (lines: CheckLine[], check: string) => {
  const found = lines.find((l) => l.check === check);
  if (!found) throw new Error(`no line "${check}" in ${JSON.stringify(lines.map((l) => l.check))}`);
  return found;
};

let pgBucket: string;
let etcdBucket: string;

beforeAll(async () => {
  client = s3Client();
  dir = await mkdtemp(join(tmpdir(), 'lb-check-'));
  pgBucket = name('pg');
  etcdBucket = name('etcd');
  // The good deployment: hub init made every bucket ready.
  const init = await lifeboat(['hub', 'init', '-c', await writeConfig({ pgBucket, etcdBucket })]);
  expect(init.code, init.stderr + init.stdout).toBe(0);
});

afterAll(async () => {
  for (const b of buckets) await removeBucket(client, b).catch(() => {});
  client?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe('lifeboat check', () => {
  it('a good deployment: exit 0, every line ok, as a table; the probe leaves nothing behind', async () => {
    const file = await writeConfig({ pgBucket, etcdBucket });
    const run = await lifeboat(['check', '-c', file]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const rows = run.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^CHECK\s+RESULT\s+DETAIL \/ FIX$/);
    expect(rows.at(-1)).toMatch(/^\d+ ok, 0 warn, 0 fail$/);

    const { code, lines } = await checkJson(file);
    expect(code).toBe(0);
    expect(lines.filter((l) => l.result !== 'ok')).toEqual([]);
    expect(lines.map((l) => l.check)).toEqual(
      expect.arrayContaining([
        'config', 'redis', 'target hub', `bucket hub/${pgBucket}`, `versioning hub/${pgBucket}`, `access hub/${pgBucket}`, `bucket hub/${etcdBucket}`,
        'target local', 'bucket local/postgres', 'access local/postgres', 'postgres main', 'pg_dumpall main', 'etcd snaps', 'timezone', 'webhook token',
      ]),
    );
    expect(line(lines, `versioning hub/${pgBucket}`).detail).toMatch(/Enabled; noncurrent versions expire after 30 days/);
    expect(line(lines, 'postgres main').detail).toMatch(/PostgreSQL 15/);
    expect(line(lines, `access hub/${pgBucket}`).detail).toMatch(/put, get, list and delete work under _lifeboat\/probe\//);
    // Versioned bucket: the probe's version and its delete marker are gone too.
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: pgBucket, Prefix: '_lifeboat/probe/' }));
    expect([...(versions.Versions ?? []), ...(versions.DeleteMarkers ?? [])]).toEqual([]);
  });

  it('--json prints an array of {check, result, detail, fix?}', async () => {
    const { lines } = await checkJson(await writeConfig({ pgBucket, redis: 'redis://127.0.0.1:1' }));
    expect(Array.isArray(lines)).toBe(true);
    for (const l of lines) {
      expect(Object.keys(l).every((k) => ['check', 'result', 'detail', 'fix'].includes(k)), JSON.stringify(l)).toBe(true);
      expect(typeof l.check).toBe('string');
      expect(['ok', 'warn', 'fail']).toContain(l.result);
      expect(typeof l.detail).toBe('string');
      if (l.fix !== undefined) expect(typeof l.fix).toBe('string');
    }
    expect(lines[0]).toMatchObject({ check: 'config', result: 'ok' });
  });

  it('versioning off is a warning, not a failure (exit 0), with hub init as the fix', async () => {
    const plain = name('plain');
    await client.send(new CreateBucketCommand({ Bucket: plain }));
    const { code, lines } = await checkJson(await writeConfig({ pgBucket: plain }));
    expect(code).toBe(0);
    expect(line(lines, `versioning hub/${plain}`)).toMatchObject({ result: 'warn', detail: expect.stringMatching(/versioning is off/), fix: expect.stringMatching(/lifeboat hub init/) });
    expect(line(lines, `access hub/${plain}`).result).toBe('ok');
  });

  it('a missing bucket fails, naming it, with lifeboat hub init as the fix', async () => {
    const missing = name('missing');
    const { code, lines } = await checkJson(await writeConfig({ pgBucket: missing }));
    expect(code).toBe(1);
    const l = line(lines, `bucket hub/${missing}`);
    expect(l).toMatchObject({ result: 'fail', fix: expect.stringMatching(/^lifeboat hub init/) });
    expect(l.detail).toContain(`bucket ${missing} does not exist on target hub (datasets: main)`);
    // Nothing more is tried on a bucket that is not there.
    expect(lines.find((x) => x.check === `access hub/${missing}`)).toBeUndefined();
  });

  it('a wrong secret key fails naming the target and the field, never the secret', async () => {
    const run = await lifeboat(['check', '-c', await writeConfig({ pgBucket, secretEnv: 'WRONG_SECRET' })]);
    expect(run.code).toBe(1);
    const l = run.stdout.split('\n').find((r) => r.startsWith('target hub'))!;
    expect(l).toMatch(/fail/);
    expect(l).toMatch(/rejected the secret key of target hub: SignatureDoesNotMatch/);
    expect(l).toContain('check targets.hub.secretAccessKey (from env:WRONG_SECRET)');
    expect(run.stdout + run.stderr).not.toContain(WRONG_SECRET);
    expect(run.stdout + run.stderr).not.toContain(s3Env().secretAccessKey);
  });

  it('an unreachable endpoint fails quickly, naming the target and endpoint', async () => {
    const { code, lines, ms } = await checkJson(await writeConfig({ pgBucket, endpoint: 'http://127.0.0.1:1' }));
    expect(code).toBe(1);
    expect(ms).toBeLessThan(20_000);
    expect(line(lines, 'target hub')).toMatchObject({ result: 'fail', detail: expect.stringMatching(/^cannot reach target hub at http:\/\/127\.0\.0\.1:1: ECONNREFUSED.*bucket checks skipped/) });
    expect(line(lines, 'target hub').fix).toMatch(/targets\.hub\.endpoint/);
    // The other checks still ran.
    expect(line(lines, 'postgres main').result).toBe('ok');
  });

  it('an endpoint that accepts connections but never answers fails within the bounded time', async () => {
    const { createServer } = await import('node:net');
    const sockets = new Set<import('node:net').Socket>();
    const silent = createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as import('node:net').AddressInfo).port;
      const file = await writeConfig({ pgBucket, endpoint: `http://127.0.0.1:${port}` });
      const { code, lines, ms } = await checkJson(file);
      expect(code).toBe(1);
      expect(ms).toBeLessThan(25_000);
      expect(line(lines, 'target hub')).toMatchObject({ result: 'fail', detail: expect.stringMatching(/cannot reach target hub .*no answer within 10 s/) });
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('a pg_dumpall older than the server fails, naming both versions and the field', async () => {
    const wrapper = join(dir, 'old-pg_dumpall');
    await writeFile(wrapper, '#!/bin/sh\necho "pg_dumpall (PostgreSQL) 12.0"\n');
    await chmod(wrapper, 0o755);
    const { code, lines } = await checkJson(await writeConfig({ pgBucket, pgDumpall: wrapper }));
    expect(code).toBe(1);
    const l = line(lines, 'pg_dumpall main');
    expect(l.result).toBe('fail');
    expect(l.detail).toMatch(new RegExp(`^${wrapper} is PostgreSQL 12\\.0, older than the server's 15\\.\\d+`));
    expect(l.fix).toMatch(/^set datasets\[0\]\.source\.pgDumpall to a pg_dumpall of version 15 or newer/);
    expect(line(lines, 'pg_dumpall nearby').result).toBe('ok');
  });

  it('Redis down fails, naming the URL', async () => {
    const { code, lines, ms } = await checkJson(await writeConfig({ pgBucket, redis: 'redis://127.0.0.1:1' }));
    expect(code).toBe(1);
    expect(ms).toBeLessThan(20_000);
    expect(line(lines, 'redis')).toMatchObject({ result: 'fail', detail: expect.stringMatching(/^cannot reach Redis at redis:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/) });
    expect(lines.filter((l) => l.result === 'fail').map((l) => l.check)).toEqual(['redis']);
  });

  it('keys that may not delete fail the access line with the grant to add, and say the probe remains', async () => {
    const keys = rgwUser('lb-check-nodelete');
    const shared = await createBucket(client, name('nodelete'));
    await client.send(
      new PutBucketPolicyCommand({
        Bucket: shared,
        Policy: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Principal: { AWS: ['arn:aws:iam:::user/lb-check-nodelete'] }, Action: ['s3:ListBucket', 's3:GetObject', 's3:PutObject'], Resource: [`arn:aws:s3:::${shared}`, `arn:aws:s3:::${shared}/*`] }],
        }),
      }),
    );
    const { code, lines } = await checkJson(await writeConfig({ pgBucket: shared, accessEnv: 'ND_ACCESS', secretEnv: 'ND_SECRET' }), { ND_ACCESS: keys.accessKeyId, ND_SECRET: keys.secretAccessKey });
    expect(code).toBe(1);
    expect(line(lines, 'target hub').result).toBe('ok');
    const l = line(lines, `access hub/${shared}`);
    expect(l.result).toBe('fail');
    expect(l.detail).toMatch(/delete failed: AccessDenied \(HTTP 403\) \(put, get, list ok\); the probe _lifeboat\/probe\/[0-9a-f-]+ remains/);
    expect(l.fix).toBe(`grant s3:DeleteObject (pruneCheck's retention needs it) on bucket ${shared} to the key of targets.hub`);
    expect(JSON.stringify(lines)).not.toContain(keys.secretAccessKey);
  });

  it('a config that does not load is one failed line and exit 2', async () => {
    const file = join(dir, 'broken.yaml');
    await writeFile(file, 'targets: { hub: { kind: s3 } }\n');
    const { code, lines } = await checkJson(file);
    expect(code).toBe(2);
    expect(lines).toEqual([{ check: 'config', result: 'fail', detail: expect.stringContaining('targets.hub.endpoint'), fix: expect.any(String) }]);
  });

  it('Kubernetes: reachability and each permission by SelfSubjectAccessReview (fake API server)', async () => {
    const kube = await startFakeKubeApi();
    try {
      kube.addPod({ namespace: 'db', name: 'pg-postgresql-0', containers: ['postgresql'] });
      // A copy: close() removes the fake's own file, and the last run below needs the kubeconfig without the server.
      const kubeconfig = join(dir, 'kubeconfig.yaml');
      await writeFile(kubeconfig, await readFile(kube.kubeconfigPath));
      const extra = [
        '  - id: incluster',
        '    kind: postgres',
        `    source: { mode: kubernetes, kubeconfig: "${kubeconfig}", namespace: db, pod: pg-postgresql-0, host: 127.0.0.1, port: 5432 }`,
        `    target: { name: hub, bucket: ${etcdBucket} }`,
      ];
      const file = await writeConfig({ pgBucket, extra });
      const good = await checkJson(file);
      expect(good.lines.filter((l) => l.result !== 'ok'), good.stdout).toEqual([]);
      expect(line(good.lines, `kubernetes ${kube.url}`).detail).toMatch(/^reachable through kubeconfig .*; 3 access reviews/);
      expect(line(good.lines, 'kube worker: pods/exec db')).toMatchObject({ result: 'ok', detail: expect.stringMatching(/^create,get pods\/exec pg-postgresql-0 in namespace db allowed/) });
      expect(line(good.lines, 'postgres incluster').detail).toMatch(/^PostgreSQL 15.* at pod db\/pg-postgresql-0/);
      expect(kube.accessReviews).toEqual(
        expect.arrayContaining([
          { group: '', resource: 'pods', verb: 'get', namespace: 'db', name: 'pg-postgresql-0' },
          { group: '', resource: 'pods', subresource: 'exec', verb: 'create', namespace: 'db', name: 'pg-postgresql-0' },
        ]),
      );

      kube.forbid('exec', 'pods', 'db');
      const denied = await checkJson(file);
      expect(denied.code).toBe(1);
      const l = line(denied.lines, 'kube worker: pods/exec db');
      expect(l.result).toBe('fail');
      expect(l.detail).toMatch(/^create,get pods\/exec in namespace db denied/);
      expect(l.fix).toMatch(/ServiceAccount lifeboat\/lifeboat-worker .*resources \["pods\/exec"\], verbs \["create", "get"\], resourceNames \["pg-postgresql-0"\] in namespace db/);
      expect(line(denied.lines, 'kube worker: pods db').result).toBe('ok');
      await kube.close();

      // The API server gone: one failed line, and no permission lines.
      const gone = await checkJson(file);
      expect(gone.ms).toBeLessThan(20_000);
      expect(line(gone.lines, `kubernetes ${kube.url}`)).toMatchObject({ result: 'fail', detail: expect.stringMatching(/^cannot reach the API server: .*permissions not checked/) });
      expect(gone.lines.filter((x) => x.check.startsWith('kube '))).toEqual([]);
    } finally {
      await kube.close().catch(() => {});
    }
  });
});
