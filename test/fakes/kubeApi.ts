/**
 * A FAKE Kubernetes API server for tests (no real one can run here). It speaks the wire protocols that
 * @kubernetes/client-node uses (checked against 1.4.0 and 2.0.1), so code written against CoreV1Api and Exec runs
 * against it unchanged: JSON REST for core/v1 pods, secrets and namespaces, velero.io/v1 backups and restores,
 * authorization.k8s.io/v1 SelfSubjectAccessReviews (answered from the forbid() rules), and the channel.k8s.io
 * WebSocket exec protocol.
 * Exec'd commands run on THIS machine, with the pod's env added.
 * Velero itself is played by the fake: a created Restore moves New → InProgress → a final phase, as a test
 * scripts it (onCreateRestore), and creates the namespaces it maps into.
 *
 * Deliberate simplifications:
 * - Any non-empty bearer token is accepted; there is no TLS.
 * - A deleted namespace is gone at once (GET gives 404); only the DELETE response shows it Terminating.
 * - addPod/addSecret create their namespace implicitly, as a pod cannot exist without one.
 * - Exec env is per pod, not per container; tty=true is accepted but no terminal is allocated.
 * - Label selectors: only equality requirements (a=b or a==b) joined by commas.
 * - Velero objects are stored as given; only a Restore's status is ever changed by the fake, and deleting a
 *   Restore removes it at once (real Velero runs a finalizer first). A restore restores no objects, it only
 *   creates the namespaces it maps into, labelled as Velero labels what it restores.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { stringify } from 'yaml';

export interface FakePod {
  namespace: string;
  name: string;
  labels?: Record<string, string>;
  ready?: boolean; // default true; Ready condition + phase Running when true, phase Pending and Ready False when false
  containers?: string[]; // container names, default ['postgresql']
  env?: Record<string, string>; // extra environment for commands exec'd "in" this pod; also listed as spec.containers[*].env [{name,value}]
}

/** A Backup in Velero's namespace; the fake builds the velero.io/v1 object from it. */
export interface FakeVeleroBackup {
  name: string;
  namespace?: string; // Velero's namespace, default 'velero'
  phase?: string; // default 'Completed'
  completionTimestamp?: string; // ISO; default: now
  includedNamespaces?: string[]; // spec.includedNamespaces; absent means all (as Velero's '*')
  totalItems?: number; // status.progress.totalItems (and itemsBackedUp), default 10
  errors?: number;
  warnings?: number;
}

/** How a created Restore ends; returned by onCreateRestore. Every field is optional. */
export interface FakeRestoreScript {
  /** Where it ends up; 'InProgress' never finishes. Default Completed, or FailedValidation when the backup does not exist. */
  phase?: 'Completed' | 'PartiallyFailed' | 'Failed' | 'FailedValidation' | 'InProgress';
  totalItems?: number; // default: the backup's totalItems
  itemsRestored?: number; // default: totalItems, or 0 when Failed
  errors?: number;
  warnings?: number;
  failureReason?: string;
  validationErrors?: string[];
  /** Whether the namespaces it maps into appear; default: unless the phase is Failed or FailedValidation. */
  createNamespaces?: boolean;
  /** How long each step (New → InProgress → final) takes; default 100 ms. */
  stepMs?: number;
}

export interface FakeKubeApi {
  url: string; // http://127.0.0.1:<port>
  kubeconfigPath: string; // a kubeconfig YAML file (temp dir) pointing at url, current-context set, user with a bearer token
  addPod(pod: FakePod): void;
  setPodReady(namespace: string, name: string, ready: boolean): void;
  addSecret(namespace: string, name: string, data: Record<string, string>): void; // plain values; served base64-encoded as real secrets are
  /**
   * Subsequent requests matching verb/resource (and namespace if given) get 403 with a real Status body (reason Forbidden,
   * message like real RBAC: `pods "x" is forbidden: User "system:serviceaccount:lifeboat:lifeboat" cannot get resource "pods"
   * in API group "" in the namespace "db"`). As in RBAC, creating a namespace is cluster-scoped: a rule with a namespace
   * never matches it.
   */
  forbid(verb: 'get' | 'list' | 'create' | 'delete' | 'exec', resource: 'pods' | 'secrets' | 'namespaces' | 'backups' | 'restores', namespace?: string): void;
  /**
   * The next exec (the next whose command matches, if `match` is given) closes the WebSocket abruptly (no status on
   * channel 3) after at least n bytes of stdout were sent.
   */
  dropNextExecAfter(bytes: number, match?: (command: string[]) => boolean): void;
  /** Serves a cluster-scoped custom resource list at /apis/<group>/<version>/<plural>. */
  addClusterCustomObjects(group: string, version: string, plural: string, kind: string, items: object[]): void;
  /** Adds a velero.io/v1 Backup (served at /apis/velero.io/v1/namespaces/<ns>/backups). */
  addVeleroBackup(backup: FakeVeleroBackup): void;
  /** The Restores that exist now (velero.io/v1 objects, status included), in creation order. */
  veleroRestores(namespace?: string): any[];
  /** Called when a Restore is created through the API; says how it ends (default: Completed with the backup's item count). */
  onCreateRestore?: (restore: { namespace: string; name: string; spec: any; backup?: any }) => FakeRestoreScript | void;
  /** Called when a pod is created through the API (POST); may return env/labels to attach (e.g. to point a scratch postgres pod at a local cluster). */
  onCreatePod?: (pod: { namespace: string; name: string; spec: any; metadata: any }) => Partial<FakePod> | void;
  requests: Array<{ method: string; path: string }>; // every request, in order (path includes query)
  /**
   * Every SelfSubjectAccessReview's spec.resourceAttributes, in order. A review is denied when a forbid() rule
   * matches it (pods/exec with any verb matches a rule for 'exec'), allowed otherwise.
   */
  accessReviews: Array<{ verb?: string; group?: string; resource?: string; subresource?: string; namespace?: string; name?: string }>;
  namespaces: Map<string, { labels: Record<string, string>; deleted: boolean }>;
  execs: Array<{ namespace: string; pod: string; container: string; command: string[] }>;
  close(): Promise<void>; // closes server, all sockets, kills any running exec'd processes, removes the temp kubeconfig
}

export type ExecProtocol = 'v5.channel.k8s.io' | 'v4.channel.k8s.io';

export interface FakeKubeApiOptions {
  /** The exec subprotocol the server picks; v5 (the default) is the one with the stdin close frame. */
  protocol?: ExecProtocol;
}

export async function startFakeKubeApi(options: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const fake = new FakeKubeApiServer(options.protocol ?? 'v5.channel.k8s.io');
  await fake.start();
  return fake;
}

type Verb = Parameters<FakeKubeApi['forbid']>[0];
type Resource = Parameters<FakeKubeApi['forbid']>[1];
interface Rule { verb: Verb; resource: Resource; namespace?: string }
interface Reply { code: number; body: unknown }
interface PodState { namespace: string; name: string; labels: Record<string, string>; ready: boolean; containers: string[]; env: Record<string, string>; spec: PodSpec }
interface PodSpec { containers?: Array<{ name?: string; env?: Array<{ name?: string; value?: string }> }> }
interface KubeObject { metadata?: { name?: string; generateName?: string; labels?: Record<string, string> }; spec?: PodSpec }
/** A velero.io/v1 object as stored: whatever the client sent, plus server-set metadata and (for restores) status. */
interface VeleroObject { apiVersion: string; kind: string; metadata: Record<string, unknown> & { name: string; namespace: string; labels?: Record<string, string> }; spec?: any; status?: any }
/** Where a request points: namespace-scoped resources carry their namespace, a namespace object its own name as both. */
interface Target { resource: Resource; namespace?: string; name?: string; exec: boolean }
type Handler = (target: Target, query: URLSearchParams, body: KubeObject) => Reply;
interface ExecSession { command: string[]; env: Record<string, string>; stdin: boolean; stdout: boolean; stderr: boolean; dropAfter?: number }

const USER = 'system:serviceaccount:lifeboat:lifeboat';
const READY_DELAY_MS = 100;
const VELERO_GROUP = 'velero.io';
const VELERO_PLURALS: Partial<Record<Resource, string>> = { backups: 'Backup', restores: 'Restore' };
const HIGH_WATER = 4 * 1024 * 1024;
const DRAIN_POLL_MS = 5;
const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;
const CLOSE = 255;

class FakeKubeApiServer implements FakeKubeApi {
  url = '';
  kubeconfigPath = '';
  onCreatePod?: FakeKubeApi['onCreatePod'];
  onCreateRestore?: FakeKubeApi['onCreateRestore'];
  readonly requests: FakeKubeApi['requests'] = [];
  readonly accessReviews: FakeKubeApi['accessReviews'] = [];
  readonly namespaces: FakeKubeApi['namespaces'] = new Map();
  readonly execs: FakeKubeApi['execs'] = [];
  private readonly pods = new Map<string, PodState>();
  private readonly secrets = new Map<string, Record<string, string>>();
  private readonly rules: Rule[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly children = new Set<ChildProcess>();
  private dropAfter?: { bytes: number; match?: (command: string[]) => boolean };
  private tempDir = '';
  private readonly customObjects = new Map<string, { apiVersion: string; kind: string; items: object[] }>();
  /** velero.io/v1 objects by `<plural>/<namespace>/<name>`, in creation order. */
  private readonly velero = new Map<string, VeleroObject>();
  private readonly http = createServer((req, res) => this.onRequest(req, res));
  private readonly wss: WebSocketServer;
  private readonly handlers: Partial<Record<`${Verb} ${Resource}`, Handler>> = {
    'get pods': (t) => this.getPod(t),
    'list pods': (t, query) => this.listPods(t, query),
    'create pods': (t, _query, body) => this.createPod(t, body),
    'delete pods': (t) => this.deletePod(t),
    'get secrets': (t) => this.getSecret(t),
    'create namespaces': (_t, _query, body) => this.createNamespace(body),
    'get namespaces': (t) => this.getNamespace(t),
    'delete namespaces': (t) => this.deleteNamespace(t),
    'list backups': (t, query) => this.listVelero(t, query),
    'get backups': (t) => this.getVelero(t),
    'create backups': (t, _query, body) => this.createVelero(t, body),
    'delete backups': (t) => this.deleteVelero(t),
    'list restores': (t, query) => this.listVelero(t, query),
    'get restores': (t) => this.getVelero(t),
    'create restores': (t, _query, body) => this.createVelero(t, body),
    'delete restores': (t) => this.deleteVelero(t),
  };

  constructor(private readonly protocol: ExecProtocol) {
    // Offers without our protocol are rejected before the upgrade (see execRequest), so it is always on offer here.
    this.wss = new WebSocketServer({ noServer: true, handleProtocols: () => protocol });
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.http.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.http.address() as AddressInfo).port}`;
    this.tempDir = await mkdtemp(join(tmpdir(), 'lb-fake-kube-'));
    this.kubeconfigPath = join(this.tempDir, 'kubeconfig.yaml');
    await writeFile(this.kubeconfigPath, kubeconfig(this.url));
  }

  addPod(pod: FakePod): void {
    this.ensureNamespace(pod.namespace);
    this.pods.set(key(pod.namespace, pod.name), {
      namespace: pod.namespace,
      name: pod.name,
      labels: pod.labels ?? {},
      ready: pod.ready ?? true,
      containers: pod.containers ?? ['postgresql'],
      env: pod.env ?? {},
      spec: {},
    });
  }

  setPodReady(namespace: string, name: string, ready: boolean): void {
    const pod = this.pods.get(key(namespace, name));
    if (!pod) throw new Error(`fake kube api: no pod ${namespace}/${name}`);
    pod.ready = ready;
  }

  addSecret(namespace: string, name: string, data: Record<string, string>): void {
    this.ensureNamespace(namespace);
    this.secrets.set(key(namespace, name), data);
  }

  forbid(verb: Verb, resource: Resource, namespace?: string): void {
    this.rules.push({ verb, resource, namespace });
  }

  /** Serves a cluster-scoped custom resource list at /apis/<group>/<version>/<plural> (e.g. k3s's etcdsnapshotfiles). */
  addClusterCustomObjects(group: string, version: string, plural: string, kind: string, items: object[]): void {
    this.customObjects.set(`/apis/${group}/${version}/${plural}`, { apiVersion: `${group}/${version}`, kind, items });
  }

  addVeleroBackup(b: FakeVeleroBackup): void {
    const namespace = b.namespace ?? 'velero';
    this.ensureNamespace(namespace);
    const total = b.totalItems ?? 10;
    this.velero.set(veleroKey('backups', namespace, b.name), {
      apiVersion: `${VELERO_GROUP}/v1`,
      kind: 'Backup',
      metadata: { name: b.name, namespace, uid: randomUUID(), labels: { 'velero.io/storage-location': 'default' } },
      spec: { ...(b.includedNamespaces && { includedNamespaces: b.includedNamespaces }), storageLocation: 'default', snapshotMoveData: false, defaultVolumesToFsBackup: true },
      status: {
        phase: b.phase ?? 'Completed',
        ...((b.phase ?? 'Completed') !== 'InProgress' && { completionTimestamp: b.completionTimestamp ?? kubeTime(new Date()) }),
        progress: { totalItems: total, itemsBackedUp: total },
        ...(b.errors !== undefined && { errors: b.errors }),
        ...(b.warnings !== undefined && { warnings: b.warnings }),
      },
    });
  }

  veleroRestores(namespace?: string): any[] {
    return [...this.velero.values()].filter((o) => o.kind === 'Restore' && (namespace === undefined || o.metadata.namespace === namespace));
  }

  dropNextExecAfter(bytes: number, match?: (command: string[]) => boolean): void {
    this.dropAfter = { bytes, match };
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    for (const child of this.children) child.kill('SIGKILL');
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections(); // the client keeps connections alive, which would hold close() open
    await closed;
    await rm(this.tempDir, { recursive: true, force: true });
  }

  // --- REST ---

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push({ method: req.method ?? 'GET', path: req.url ?? '/' });
    readBody(req)
      .then((raw) => send(res, this.respond(req, raw)))
      .catch((err: unknown) => send(res, failure(500, 'InternalError', `fake kube api: ${String(err)}`)));
  }

  private respond(req: IncomingMessage, raw: string): Reply {
    const unauthorized = checkToken(req);
    if (unauthorized) return unauthorized;
    const url = new URL(req.url ?? '/', this.url);
    const custom = this.customObjects.get(url.pathname);
    if (custom && req.method === 'GET') return { code: 200, body: { apiVersion: custom.apiVersion, kind: `${custom.kind}List`, metadata: {}, items: custom.items } };
    if (url.pathname === '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews' && req.method === 'POST') return this.accessReview(raw);
    const target = parseTarget(url.pathname);
    const verb = target && verbOf(req.method, target);
    if (target?.exec) return failure(400, 'BadRequest', 'Upgrade request required');
    if (!target || !verb) return pathNotFound();
    const forbidden = this.checkRules(verb, target);
    if (forbidden) return forbidden;
    let body: KubeObject;
    try {
      body = raw ? (JSON.parse(raw) as KubeObject) : {};
    } catch {
      return failure(400, 'BadRequest', 'the request body is not valid JSON');
    }
    return this.handlers[`${verb} ${target.resource}`]?.(target, url.searchParams, body) ?? pathNotFound();
  }

  private checkRules(verb: Verb, target: Target): Reply | undefined {
    const denied = this.rules.some((r) => r.verb === verb && r.resource === target.resource && (r.namespace === undefined || r.namespace === target.namespace));
    return denied ? forbiddenStatus(verb, target) : undefined;
  }

  /** What RBAC would answer, from the forbid() rules: denied when one matches, else allowed. */
  private accessReview(raw: string): Reply {
    let body: { spec?: { resourceAttributes?: FakeKubeApi['accessReviews'][number] } };
    try {
      body = JSON.parse(raw || '{}');
    } catch {
      return failure(400, 'BadRequest', 'the request body is not valid JSON');
    }
    const attrs = body.spec?.resourceAttributes;
    if (!attrs) return failure(422, 'Invalid', 'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Required value (the fake answers resource reviews only)');
    this.accessReviews.push(attrs);
    const exec = attrs.resource === 'pods' && attrs.subresource === 'exec';
    const denied = this.rules.some(
      (r) =>
        (exec ? r.verb === 'exec' : r.verb === attrs.verb && !attrs.subresource) &&
        r.resource === attrs.resource &&
        groupOf(r.resource) === (attrs.group ?? '') &&
        (r.namespace === undefined || r.namespace === attrs.namespace),
    );
    return {
      code: 201,
      body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', metadata: {}, spec: body.spec, status: { allowed: !denied, ...(denied && { reason: 'forbidden by a rule of the fake API server' }) } },
    };
  }

  private getPod(t: Target): Reply {
    const pod = this.pods.get(key(t.namespace, t.name));
    return pod ? ok(podJson(pod)) : notFound('pods', t.name);
  }

  private listPods(t: Target, query: URLSearchParams): Reply {
    const selector = parseSelector(query.get('labelSelector') ?? '');
    if (!selector) return failure(400, 'BadRequest', `the fake only supports equality label selectors: ${query.get('labelSelector')}`);
    const items = [...this.pods.values()].filter((p) => p.namespace === t.namespace && [...selector].every(([k, v]) => p.labels[k] === v));
    return ok({ apiVersion: 'v1', kind: 'PodList', metadata: { resourceVersion: '1' }, items: items.map(podJson) });
  }

  private createPod(t: Target, body: KubeObject): Reply {
    const namespace = t.namespace!;
    if (!this.liveNamespace(namespace)) return notFound('namespaces', namespace);
    const metadata = body.metadata ?? {};
    const name = metadata.name || (metadata.generateName && metadata.generateName + randomBytes(3).toString('hex').slice(0, 5));
    if (!name) return failure(422, 'Invalid', 'Pod "" is invalid: metadata.name: Required value: name or generateName is required');
    if (this.pods.has(key(namespace, name))) return failure(409, 'AlreadyExists', `pods "${name}" already exists`, { name, kind: 'pods' });
    const spec = body.spec ?? {};
    const extra = this.onCreatePod?.({ namespace, name, spec, metadata: { ...metadata, name, namespace } }) ?? {};
    const pod: PodState = {
      namespace,
      name,
      labels: { ...metadata.labels, ...extra.labels },
      ready: false,
      containers: extra.containers ?? (spec.containers ?? []).flatMap((c) => (c.name ? [c.name] : [])),
      env: { ...specEnv(spec), ...extra.env },
      spec,
    };
    this.pods.set(key(namespace, name), pod);
    if (extra.ready !== false) this.later(() => (pod.ready = true));
    return { code: 201, body: podJson(pod) };
  }

  private deletePod(t: Target): Reply {
    const pod = this.pods.get(key(t.namespace, t.name));
    if (!pod) return notFound('pods', t.name);
    this.pods.delete(key(t.namespace, t.name));
    return ok(podJson(pod));
  }

  private getSecret(t: Target): Reply {
    const data = this.secrets.get(key(t.namespace, t.name));
    if (!data) return notFound('secrets', t.name);
    const encoded = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    return ok({ apiVersion: 'v1', kind: 'Secret', metadata: { name: t.name, namespace: t.namespace }, type: 'Opaque', data: encoded });
  }

  private createNamespace(body: KubeObject): Reply {
    const name = body.metadata?.name;
    if (!name) return failure(422, 'Invalid', 'Namespace "" is invalid: metadata.name: Required value: name or generateName is required');
    if (this.liveNamespace(name)) return failure(409, 'AlreadyExists', `namespaces "${name}" already exists`, { name, kind: 'namespaces' });
    const entry = { labels: body.metadata?.labels ?? {}, deleted: false };
    this.namespaces.set(name, entry);
    return { code: 201, body: namespaceJson(name, entry) };
  }

  private getNamespace(t: Target): Reply {
    const entry = this.liveNamespace(t.name!);
    return entry ? ok(namespaceJson(t.name!, entry)) : notFound('namespaces', t.name);
  }

  private deleteNamespace(t: Target): Reply {
    const name = t.name!;
    const entry = this.liveNamespace(name);
    if (!entry) return notFound('namespaces', name);
    entry.deleted = true;
    for (const map of [this.pods, this.secrets]) {
      for (const k of map.keys()) if (k.startsWith(`${name}/`)) map.delete(k);
    }
    for (const [k, o] of this.velero) if (o.metadata.namespace === name) this.velero.delete(k);
    return ok(namespaceJson(name, entry));
  }

  // --- velero.io/v1 ---

  private listVelero(t: Target, query: URLSearchParams): Reply {
    const selector = parseSelector(query.get('labelSelector') ?? '');
    if (!selector) return failure(400, 'BadRequest', `the fake only supports equality label selectors: ${query.get('labelSelector')}`);
    const items = [...this.velero.values()].filter(
      (o) => o.kind === VELERO_PLURALS[t.resource] && o.metadata.namespace === t.namespace && [...selector].every(([k, v]) => o.metadata.labels?.[k] === v),
    );
    return ok({ apiVersion: `${VELERO_GROUP}/v1`, kind: `${VELERO_PLURALS[t.resource]}List`, metadata: { resourceVersion: '1' }, items });
  }

  private getVelero(t: Target): Reply {
    const object = this.velero.get(veleroKey(t.resource, t.namespace, t.name));
    return object ? ok(object) : notFound(t.resource, t.name);
  }

  private createVelero(t: Target, body: KubeObject): Reply {
    const namespace = t.namespace!;
    const kind = VELERO_PLURALS[t.resource]!;
    if (!this.liveNamespace(namespace)) return notFound('namespaces', namespace);
    const name = body.metadata?.name;
    if (!name) return failure(422, 'Invalid', `${kind} "" is invalid: metadata.name: Required value: name or generateName is required`);
    const k = veleroKey(t.resource, namespace, name);
    if (this.velero.has(k)) return failure(409, 'AlreadyExists', `${t.resource}.${VELERO_GROUP} "${name}" already exists`, { name, kind: t.resource });
    const object: VeleroObject = {
      ...(body as Omit<VeleroObject, 'metadata'>),
      apiVersion: `${VELERO_GROUP}/v1`,
      kind,
      metadata: { ...body.metadata, name, namespace, uid: randomUUID(), creationTimestamp: kubeTime(new Date()), resourceVersion: '1' },
    };
    this.velero.set(k, object);
    if (kind === 'Restore') this.playVelero(object);
    return { code: 201, body: object };
  }

  private deleteVelero(t: Target): Reply {
    const k = veleroKey(t.resource, t.namespace, t.name);
    const object = this.velero.get(k);
    if (!object) return notFound(t.resource, t.name);
    this.velero.delete(k);
    return ok(object);
  }

  /** What Velero's restore controller does with a new Restore: New → InProgress → the scripted final phase. */
  private playVelero(restore: VeleroObject): void {
    const { namespace, name } = restore.metadata;
    const spec = (restore.spec ?? {}) as { backupName?: string; includedNamespaces?: string[]; namespaceMapping?: Record<string, string> };
    const backup = spec.backupName ? this.velero.get(veleroKey('backups', namespace, spec.backupName)) : undefined;
    const script = this.onCreateRestore?.({ namespace, name, spec, backup }) ?? {};
    const phase = script.phase ?? (backup ? 'Completed' : 'FailedValidation');
    const totalItems = script.totalItems ?? (backup?.status?.progress?.totalItems as number | undefined) ?? 0;
    const failed = phase === 'Failed' || phase === 'FailedValidation';
    const alive = () => this.velero.get(veleroKey('restores', namespace, name)) === restore;
    restore.status = { phase: 'New' };
    this.later(() => {
      if (!alive()) return;
      if (phase === 'FailedValidation') {
        restore.status = {
          phase,
          validationErrors: script.validationErrors ?? [`Error retrieving backup: backups.velero.io "${spec.backupName}" not found`],
        };
        return;
      }
      restore.status = { phase: 'InProgress', startTimestamp: kubeTime(new Date()), progress: { totalItems, itemsRestored: 0 } };
      if (phase === 'InProgress') return;
      this.later(() => {
        if (!alive()) return;
        if (script.createNamespaces ?? !failed) {
          // Velero restores only namespaces the backup holds; an empty list or '*' means all of them.
          const inBackup = (backup?.spec?.includedNamespaces as string[] | undefined) ?? [];
          const asked = spec.includedNamespaces?.length && !spec.includedNamespaces.includes('*') ? spec.includedNamespaces : inBackup;
          for (const source of asked.filter((ns) => inBackup.length === 0 || inBackup.includes(ns))) {
            const target = spec.namespaceMapping?.[source] ?? source;
            if (!this.liveNamespace(target)) this.namespaces.set(target, { labels: { 'velero.io/backup-name': spec.backupName ?? '', 'velero.io/restore-name': name }, deleted: false });
          }
        }
        restore.status = {
          ...restore.status,
          phase,
          completionTimestamp: kubeTime(new Date()),
          progress: { totalItems, itemsRestored: script.itemsRestored ?? (failed ? 0 : totalItems) },
          ...(script.errors !== undefined && { errors: script.errors }),
          ...(script.warnings !== undefined && { warnings: script.warnings }),
          ...(script.failureReason !== undefined && { failureReason: script.failureReason }),
        };
      }, script.stepMs);
    }, script.stepMs);
  }

  private liveNamespace(name: string) {
    const entry = this.namespaces.get(name);
    return entry && !entry.deleted ? entry : undefined;
  }

  private ensureNamespace(name: string): void {
    if (!this.liveNamespace(name)) this.namespaces.set(name, { labels: {}, deleted: false });
  }

  /** Runs fn after ms (READY_DELAY_MS by default), unless close() comes first. */
  private later(fn: () => void, ms = READY_DELAY_MS): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  // --- exec ---

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.requests.push({ method: req.method ?? 'GET', path: req.url ?? '/' });
    const checked = this.execRequest(req);
    if ('error' in checked) return rejectUpgrade(socket, checked.error);
    const { pod, container, session } = checked;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.execs.push({ namespace: pod.namespace, pod: pod.name, container, command: session.command });
      if (this.dropAfter && (!this.dropAfter.match || this.dropAfter.match(session.command))) {
        session.dropAfter = this.dropAfter.bytes;
        this.dropAfter = undefined;
      }
      runExec(ws, session, this.children);
    });
  }

  /** The checks the API server and kubelet make before upgrading, with their status codes and messages. */
  private execRequest(req: IncomingMessage): { error: Reply } | { pod: PodState; container: string; session: ExecSession } {
    const unauthorized = checkToken(req);
    if (unauthorized) return { error: unauthorized };
    const url = new URL(req.url ?? '/', this.url);
    const target = parseTarget(url.pathname);
    if (!target?.exec || req.method !== 'GET') return { error: pathNotFound() };
    const forbidden = this.checkRules('exec', target);
    if (forbidden) return { error: forbidden };
    const pod = this.pods.get(key(target.namespace, target.name));
    if (!pod) return { error: notFound('pods', target.name) };
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(this.protocol)) return { error: failure(400, 'BadRequest', `the fake only speaks ${this.protocol}; offered: ${offered.join(', ')}`) };
    const query = url.searchParams;
    const command = query.getAll('command');
    if (command.length === 0) return { error: failure(400, 'BadRequest', 'you must specify at least 1 command') };
    const container = query.get('container') || pod.containers[0] || '';
    if (!pod.ready || !pod.containers.includes(container)) {
      return { error: failure(400, 'BadRequest', `unable to upgrade connection: container not found ("${container}")`) };
    }
    const flag = (name: string) => query.get(name) === 'true';
    return { pod, container, session: { command, env: pod.env, stdin: flag('stdin'), stdout: flag('stdout'), stderr: flag('stderr') } };
  }
}

/** Runs the command locally and bridges it to the socket in channel.k8s.io framing. */
function runExec(ws: WebSocket, session: ExecSession, children: Set<ChildProcess>): void {
  const [file, ...args] = session.command as [string, ...string[]];
  const child = spawn(file, args, {
    env: { ...process.env, ...session.env },
    stdio: [session.stdin ? 'pipe' : 'ignore', session.stdout ? 'pipe' : 'ignore', session.stderr ? 'pipe' : 'ignore'],
  });
  children.add(child);
  let dropping = false;
  let spawnError: Error | undefined;

  forward(ws, child.stderr, STDERR);
  forward(ws, child.stdout, STDOUT, (sent) => {
    if (session.dropAfter === undefined || dropping || sent < session.dropAfter) return;
    dropping = true;
    child.stdout?.destroy();
    child.kill('SIGKILL');
    // Terminate only once what was sent reached the wire, so the client really got at least n bytes.
    whenBufferedAtMost(ws, 0, () => ws.terminate());
  });
  child.stdin?.on('error', () => {}); // EPIPE when the command exits without reading all its input
  ws.on('message', (data) => onClientFrame(ws, asBuffer(data), child));
  ws.on('close', () => child.kill('SIGKILL')); // client gone: nobody can read the output any more
  child.on('error', (err) => (spawnError = err));
  child.on('close', (code, signal) => {
    children.delete(child);
    if (dropping || ws.readyState !== WebSocket.OPEN) return;
    const status = spawnError ? spawnFailure(spawnError) : exitStatus(session.command, code ?? 128 + (signal ? constants.signals[signal] : 0));
    ws.send(frame(STATUS, Buffer.from(JSON.stringify(status))));
    ws.close(1000);
  });
}

function onClientFrame(ws: WebSocket, data: Buffer, child: ChildProcess): void {
  if (data[0] === STDIN) child.stdin?.write(data.subarray(1));
  // Only v5 has the close frame; a v4 client closes the whole socket instead.
  else if (data[0] === CLOSE && data[1] === STDIN && ws.protocol === 'v5.channel.k8s.io') child.stdin?.end();
}

/** Sends a child's output as frames on `channel`, pausing it while the socket's send buffer is over HIGH_WATER. */
function forward(ws: WebSocket, stream: Readable | null, channel: number, onSent: (total: number) => void = () => {}): void {
  let total = 0;
  stream?.on('data', (chunk: Buffer) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(frame(channel, chunk));
    total += chunk.length;
    onSent(total);
    if (ws.bufferedAmount > HIGH_WATER && !stream.isPaused()) {
      stream.pause();
      whenBufferedAtMost(ws, HIGH_WATER, () => stream.resume());
    }
  });
}

/** Calls `then` once at most `limit` bytes wait in the socket's send buffer, or the socket is no longer open. */
function whenBufferedAtMost(ws: WebSocket, limit: number, then: () => void): void {
  const poll = setInterval(() => {
    if (ws.readyState === WebSocket.OPEN && ws.bufferedAmount > limit) return;
    clearInterval(poll);
    then();
  }, DRAIN_POLL_MS);
}

function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

function frame(channel: number, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.of(channel), payload]);
}

/** The V1Status the kubelet sends on channel 3 when the command exits. */
function exitStatus(command: string[], code: number) {
  if (code === 0) return { metadata: {}, status: 'Success' };
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${code}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
  };
}

/** What the runtime reports when the executable cannot be started (e.g. not on PATH). */
function spawnFailure(err: Error) {
  const message = `error executing command in container: failed to exec in container: ${err.message}`;
  return { metadata: {}, status: 'Failure', message: `Internal error occurred: ${message}`, reason: 'InternalError', details: { causes: [{ message }] }, code: 500 };
}

function rejectUpgrade(socket: Duplex, { code, body }: Reply): void {
  const text = JSON.stringify(body);
  socket.end(`HTTP/1.1 ${code} ${STATUS_CODES[code]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
}

// --- shared helpers ---

function parseTarget(pathname: string): Target | undefined {
  const velero = /^\/apis\/velero\.io\/v1\/namespaces\/([^/]+)\/(backups|restores)(?:\/([^/]+))?$/.exec(pathname);
  if (velero) {
    const [, namespace, resource, name] = velero.map((s) => (s === undefined ? undefined : decodeURIComponent(s)));
    return { resource: resource as Resource, namespace, name, exec: false };
  }
  const m = /^\/api\/v1\/namespaces(?:\/([^/]+)(?:\/(pods|secrets)(?:\/([^/]+)(\/exec)?)?)?)?$/.exec(pathname);
  if (!m) return undefined;
  const [, first, resource, name, exec] = m.map((s) => (s === undefined ? undefined : decodeURIComponent(s)));
  if (!resource) return { resource: 'namespaces', namespace: first, name: first, exec: false };
  return { resource: resource as Resource, namespace: first, name, exec: exec !== undefined };
}

function verbOf(method: string | undefined, t: Target): Verb | undefined {
  const named = t.name !== undefined;
  if (method === 'GET') return named ? 'get' : 'list';
  if (method === 'POST' && !named) return 'create';
  if (method === 'DELETE' && named) return 'delete';
  return undefined;
}

function checkToken(req: IncomingMessage): Reply | undefined {
  return /^Bearer \S+$/.test(req.headers.authorization ?? '') ? undefined : failure(401, 'Unauthorized', 'Unauthorized');
}

/** Equality requirements only; undefined for anything else, so a test never silently gets a wrong filter. */
function parseSelector(selector: string): Map<string, string> | undefined {
  const requirements = new Map<string, string>();
  for (const part of selector.split(',').filter((p) => p.trim())) {
    const m = /^\s*([^=!\s]+)\s*==?\s*([^=!\s]*)\s*$/.exec(part);
    if (!m) return undefined;
    requirements.set(m[1]!, m[2]!);
  }
  return requirements;
}

function podJson(p: PodState) {
  const env = Object.entries(p.env).map(([name, value]) => ({ name, value }));
  const containers = p.containers.map((name) => ({ image: 'fake', ...p.spec.containers?.find((c) => c.name === name), name, env }));
  const ready = p.ready ? 'True' : 'False';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
    spec: { ...p.spec, containers },
    status: {
      phase: p.ready ? 'Running' : 'Pending',
      conditions: [{ type: 'Ready', status: ready }],
      containerStatuses: p.containers.map((name) => ({ name, ready: p.ready, restartCount: 0, image: 'fake', imageID: '' })),
    },
  };
}

function specEnv(spec: PodSpec): Record<string, string> {
  const vars = (spec.containers ?? []).flatMap((c) => c.env ?? []);
  return Object.fromEntries(vars.flatMap((v) => (v.name && v.value !== undefined ? [[v.name, v.value]] : [])));
}

/** Like the real server, every namespace carries the immutable kubernetes.io/metadata.name label. */
function namespaceJson(name: string, entry: { labels: Record<string, string>; deleted: boolean }) {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { ...entry.labels, 'kubernetes.io/metadata.name': name } },
    spec: { finalizers: ['kubernetes'] },
    status: { phase: entry.deleted ? 'Terminating' : 'Active' },
  };
}

/** Plain http needs insecure-skip-tls-verify: without it client-node refuses an http:// server outright. */
function kubeconfig(server: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'fake', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'lifeboat', user: { token: 'fake-token' } }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'lifeboat', namespace: 'default' } }],
    'current-context': 'fake',
  });
}

function key(namespace: string | undefined, name: string | undefined): string {
  return `${namespace}/${name}`;
}

function veleroKey(resource: Resource, namespace: string | undefined, name: string | undefined): string {
  return `${resource}/${namespace}/${name}`;
}

/** Kubernetes timestamps have whole seconds: 2026-11-26T05:00:00Z. */
function kubeTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The API group of a resource ("" for core), as RBAC and NotFound messages name it. */
function groupOf(resource: Resource): string {
  return VELERO_PLURALS[resource] ? VELERO_GROUP : '';
}

function ok(body: unknown): Reply {
  return { code: 200, body };
}

function failure(code: number, reason: string, message: string, details?: { name?: string; kind: string }): Reply {
  return { code, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details && { details }), code } };
}

function notFound(kind: Resource, name: string | undefined): Reply {
  const qualified = groupOf(kind) ? `${kind}.${groupOf(kind)}` : kind;
  return failure(404, 'NotFound', `${qualified} "${name}" not found`, { name, kind });
}

function pathNotFound(): Reply {
  return failure(404, 'NotFound', 'the server could not find the requested resource (or the fake does not implement it)');
}

/** Worded as RBAC words it; exec is authorized as `create` on the pods/exec subresource. */
function forbiddenStatus(verb: Verb, t: Target): Reply {
  const group = groupOf(t.resource);
  const qualified = group ? `${t.resource}.${group}` : t.resource;
  const subject = t.name !== undefined ? `${qualified} "${t.name}"` : qualified;
  const resource = verb === 'exec' ? 'pods/exec' : t.resource;
  const scope = t.namespace !== undefined ? `in the namespace "${t.namespace}"` : 'at the cluster scope';
  const message = `${subject} is forbidden: User "${USER}" cannot ${verb === 'exec' ? 'create' : verb} resource "${resource}" in API group "${group}" ${scope}`;
  return failure(403, 'Forbidden', message, { name: t.name, kind: t.resource });
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res: ServerResponse, { code, body }: Reply): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
}
