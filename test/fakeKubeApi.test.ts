import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException, CoreV1Api, Exec, KubeConfig, type V1Pod, type V1Status } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startFakeKubeApi, type FakeKubeApi, type FakeKubeApiOptions } from './fakes/kubeApi.js';

// The fake is only worth something if the real client library accepts it, so everything here goes
// through @kubernetes/client-node exactly as production code does.

let fake: FakeKubeApi;
let core: CoreV1Api;
let exec: Exec;

async function start(options?: FakeKubeApiOptions): Promise<void> {
  fake = await startFakeKubeApi(options);
  const kc = new KubeConfig();
  kc.loadFromFile(fake.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  exec = new Exec(kc);
}

beforeEach(async () => {
  await start();
  fake.addPod({ namespace: 'db', name: 'pg-0', labels: { app: 'pg', role: 'primary' }, env: { GREETING: 'hi' } });
  fake.addPod({ namespace: 'db', name: 'pg-1', labels: { app: 'pg', role: 'replica' } });
  fake.addPod({ namespace: 'db', name: 'pg-2', labels: { app: 'pg', role: 'replica' }, ready: false });
});

afterEach(async () => fake.close());

/** The ApiException a client call rejected with, with its JSON Status body parsed (the client leaves it a string). */
async function apiError(call: Promise<unknown>): Promise<{ code: number; status: V1Status }> {
  const err = await call.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ApiException);
  const { code, body } = err as ApiException<string>;
  return { code, status: JSON.parse(body) as V1Status };
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

function collector() {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      done();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

interface ExecResult { stdout: string; stderr: string; stdoutBytes: number; status?: V1Status; closeCode: number }

/** Runs a command through the library's Exec and waits for the socket to close. */
async function run(pod: string, command: string[], stdin: Readable | null = null, namespace = 'db'): Promise<ExecResult> {
  const stdout = collector();
  const stderr = collector();
  let status: V1Status | undefined;
  const ws = await exec.exec(namespace, pod, 'postgresql', command, stdout.stream, stderr.stream, stdin, false, (s) => (status = s));
  const closeCode = await new Promise<number>((resolve) => ws.on('close', resolve));
  const out = stdout.bytes();
  return { stdout: out.toString(), stdoutBytes: out.length, stderr: stderr.bytes().toString(), status, closeCode };
}

describe('fake Kubernetes API server (REST, through CoreV1Api)', () => {
  it('reads a pod with its readiness and env, and lists pods by an equality label selector', async () => {
    const pod = await core.readNamespacedPod({ name: 'pg-0', namespace: 'db' });
    expect(pod.metadata?.labels).toEqual({ app: 'pg', role: 'primary' });
    expect(pod.status?.phase).toBe('Running');
    expect(isReady(pod)).toBe(true);
    expect(pod.spec?.containers[0]?.env).toEqual([{ name: 'GREETING', value: 'hi' }]);

    const pending = await core.readNamespacedPod({ name: 'pg-2', namespace: 'db' });
    expect([pending.status?.phase, isReady(pending)]).toEqual(['Pending', false]);

    const replicas = await core.listNamespacedPod({ namespace: 'db', labelSelector: 'app=pg,role=replica' });
    expect(replicas.items.map((p) => p.metadata?.name)).toEqual(['pg-1', 'pg-2']);
    expect(fake.requests.at(-1)?.path).toBe('/api/v1/namespaces/db/pods?labelSelector=app%3Dpg%2Crole%3Dreplica');
  });

  it('surfaces 404 and 403 as ApiException with the real Status body', async () => {
    const missing = await apiError(core.readNamespacedPod({ name: 'nope', namespace: 'db' }));
    expect(missing.code).toBe(404);
    expect(missing.status).toMatchObject({ kind: 'Status', reason: 'NotFound', message: 'pods "nope" not found', code: 404 });

    fake.forbid('get', 'pods', 'db');
    const denied = await apiError(core.readNamespacedPod({ name: 'pg-0', namespace: 'db' }));
    expect(denied.code).toBe(403);
    expect(denied.status).toMatchObject({
      reason: 'Forbidden',
      message: 'pods "pg-0" is forbidden: User "system:serviceaccount:lifeboat:lifeboat" cannot get resource "pods" in API group "" in the namespace "db"',
    });
    // Listing is a different verb, so still allowed.
    expect((await core.listNamespacedPod({ namespace: 'db' })).items).toHaveLength(3);
  });

  it('answers 401 without a bearer token', async () => {
    const res = await fetch(`${fake.url}/api/v1/namespaces/db/pods/pg-0`);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ reason: 'Unauthorized' });
  });

  it('serves secrets base64-encoded, as real ones are', async () => {
    fake.addSecret('db', 'pg-creds', { password: 's3cr3t' });
    const secret = await core.readNamespacedSecret({ name: 'pg-creds', namespace: 'db' });
    expect(Buffer.from(secret.data?.password ?? '', 'base64').toString()).toBe('s3cr3t');
    expect((await apiError(core.readNamespacedSecret({ name: 'other', namespace: 'db' }))).code).toBe(404);
  });

  it('creates, reads and deletes a namespace; a duplicate gives 409', async () => {
    const created = await core.createNamespace({ body: { metadata: { name: 'scratch', labels: { owner: 'lifeboat' } } } });
    expect(created.status?.phase).toBe('Active');
    expect(fake.namespaces.get('scratch')).toEqual({ labels: { owner: 'lifeboat' }, deleted: false });
    expect((await core.readNamespace({ name: 'scratch' })).metadata?.labels).toEqual({ owner: 'lifeboat', 'kubernetes.io/metadata.name': 'scratch' });
    expect((await apiError(core.createNamespace({ body: { metadata: { name: 'scratch' } } }))).status.reason).toBe('AlreadyExists');

    await core.deleteNamespace({ name: 'scratch' });
    expect(fake.namespaces.get('scratch')?.deleted).toBe(true);
    expect((await apiError(core.readNamespace({ name: 'scratch' }))).code).toBe(404);
  });

  it('creates a pod that becomes Ready shortly after, with onCreatePod extras, and deletes it', async () => {
    fake.onCreatePod = ({ name }) => ({ env: { PGHOST: `/run/${name}` } });
    const body: V1Pod = {
      metadata: { name: 'restore-check', labels: { job: 'verify' } },
      spec: { containers: [{ name: 'postgresql', image: 'postgres:15', env: [{ name: 'PGUSER', value: 'postgres' }] }] },
    };
    const created = await core.createNamespacedPod({ namespace: 'db', body });
    expect(isReady(created)).toBe(false);

    let pod = created;
    for (let i = 0; i < 50 && !isReady(pod); i++) {
      await sleep(20);
      pod = await core.readNamespacedPod({ name: 'restore-check', namespace: 'db' });
    }
    expect(isReady(pod)).toBe(true);
    expect(pod.spec?.containers[0]).toMatchObject({ image: 'postgres:15', env: [{ name: 'PGUSER', value: 'postgres' }, { name: 'PGHOST', value: '/run/restore-check' }] });
    expect((await run('restore-check', ['sh', '-c', 'echo "$PGUSER@$PGHOST"'])).stdout).toBe('postgres@/run/restore-check\n');

    await core.deleteNamespacedPod({ name: 'restore-check', namespace: 'db' });
    expect((await apiError(core.readNamespacedPod({ name: 'restore-check', namespace: 'db' }))).code).toBe(404);
  });

  it('deleting a namespace deletes its pods', async () => {
    await core.deleteNamespace({ name: 'db' });
    expect((await apiError(core.readNamespacedPod({ name: 'pg-0', namespace: 'db' }))).code).toBe(404);
    expect((await apiError(core.createNamespacedPod({ namespace: 'db', body: { metadata: { name: 'x' }, spec: { containers: [] } } }))).status.message).toBe(
      'namespaces "db" not found',
    );
  });
});

describe('fake Kubernetes API server (exec over WebSocket, through Exec)', () => {
  it('separates stdout and stderr and reports a non-zero exit as a Failure status with the exit code', async () => {
    const r = await run('pg-0', ['sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect([r.stdout, r.stderr]).toEqual(['out\n', 'err\n']);
    expect(r.status).toEqual({
      metadata: {},
      status: 'Failure',
      message: 'command terminated with non-zero exit code: error executing command [sh -c echo out; echo err >&2; exit 3], exit code 3',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
    expect(r.closeCode).toBe(1000);
    expect(fake.execs).toEqual([{ namespace: 'db', pod: 'pg-0', container: 'postgresql', command: ['sh', '-c', 'echo out; echo err >&2; exit 3'] }]);
  });

  it('runs the command with the pod env and reports success', async () => {
    const r = await run('pg-0', ['sh', '-c', 'echo $GREETING']);
    expect(r.stdout).toBe('hi\n');
    expect(r.status).toEqual({ metadata: {}, status: 'Success' });
  });

  it('delivers stdin and ends it on the v5 close frame', async () => {
    const r = await run('pg-0', ['cat'], Readable.from([Buffer.from('hello '), Buffer.from('world\n')]));
    expect(r.stdout).toBe('hello world\n');
    expect(r.status?.status).toBe('Success');
  });

  it('streams a large output completely, in order', async () => {
    const r = await run('pg-0', ['seq', '1', '3000000']);
    expect(r.status?.status).toBe('Success');
    expect(r.stdout).toBe(`${Array.from({ length: 3_000_000 }, (_, i) => i + 1).join('\n')}\n`);
  });

  it('dropNextExecAfter closes the socket abruptly, without a status, after at least n bytes', async () => {
    fake.dropNextExecAfter(1_000_000);
    const r = await run('pg-0', ['head', '-c', '20000000', '/dev/zero']);
    expect(r.status).toBeUndefined();
    expect(r.closeCode).toBe(1006);
    expect(r.stdoutBytes).toBeGreaterThanOrEqual(1_000_000);
    expect(r.stdoutBytes).toBeLessThan(20_000_000);
    // Only the next exec is dropped.
    expect((await run('pg-0', ['true'])).status?.status).toBe('Success');
  });

  it('refuses before upgrading: missing pod 404, pod not ready 400, forbidden 403 (the client keeps only the code)', async () => {
    const refusal = (pod: string) => exec.exec('db', pod, 'postgresql', ['true'], null, null, null, false).then(() => 'upgraded', (e: { message: string }) => e.message);
    expect(await refusal('nope')).toBe('Unexpected server response: 404');
    expect(await refusal('pg-2')).toBe('Unexpected server response: 400');
    fake.forbid('exec', 'pods', 'db');
    expect(await refusal('pg-0')).toBe('Unexpected server response: 403');
    expect(fake.execs).toEqual([]);
  });

  it('says why it refused in a Status body, for clients that read it (client-node does not)', async () => {
    const url = `${fake.url.replace('http', 'ws')}/api/v1/namespaces/db/pods/pg-0/exec?command=true&container=pgbouncer&stdout=true`;
    const ws = new WebSocket(url, ['v5.channel.k8s.io'], { headers: { authorization: 'Bearer t' } });
    const [code, body] = await new Promise<[number | undefined, string]>((resolve) => {
      ws.on('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk));
        res.on('end', () => resolve([res.statusCode, text]));
      });
    });
    expect(code).toBe(400);
    expect(JSON.parse(body)).toMatchObject({ kind: 'Status', reason: 'BadRequest', message: 'unable to upgrade connection: container not found ("pgbouncer")' });
  });

  it('speaks v4 when configured: output and status work, stdin ends by closing the socket', async () => {
    await fake.close();
    await start({ protocol: 'v4.channel.k8s.io' });
    fake.addPod({ namespace: 'db', name: 'pg-0' });
    const r = await run('pg-0', ['sh', '-c', 'echo v4; exit 1']);
    expect(r.stdout).toBe('v4\n');
    expect(r.status?.details?.causes?.[0]?.message).toBe('1');

    const piped = await run('pg-0', ['cat'], Readable.from([Buffer.from('lost')]));
    expect(piped.status).toBeUndefined(); // the v4 client closes the socket when stdin ends, so no status can arrive
  });
});
