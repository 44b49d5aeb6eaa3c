// The Kubernetes API calls Lifeboat makes, in one place: the RBAC manifests in deploy/base are checked
// against this list (test/rbac.test.ts), and `lifeboat check` asks the API server about each entry
// (SelfSubjectAccessReview). Plain data and pure functions: nothing here talks to a cluster.
//
// When code starts or stops calling the API, change API_CALLS here, then deploy/base/rbac-*.yaml.
import type { Config } from '../config/schema.js';

/** Where in the cluster the code runs (deploy/base): each component has its own ServiceAccount. */
export type Component = 'worker' | 'serve' | 'etcd';

export type Feature = 'postgres kubernetes mode' | 'postgres drill kubernetes mode' | 'velero drill' | 'etcd snapshot files';

/**
 * Where a call lands, symbolically:
 * - dataset: the postgres source's `source.namespace`
 * - drill: scratch namespaces Lifeboat creates itself (`<drill.kubernetes.namespacePrefix>-<hex>`), not
 *   known in advance, so granted cluster-wide and confined by the admission policy
 * - velero: `drill.kubernetes.veleroNamespace`
 * - velero-scratch: the namespaces a Velero restore maps into (`<scratchPrefix>-<hash>-<namespace>`),
 *   created by Velero, deleted by Lifeboat; cluster-scoped, confined by the admission policy
 * - cluster: a cluster-scoped resource
 */
export type NamespaceScope = 'dataset' | 'drill' | 'velero' | 'velero-scratch' | 'cluster';

/** One call site's API access, as the code makes it. */
export interface ApiCall {
  component: Component;
  feature: Feature;
  /** The Lifeboat functions that make the call. */
  functions: string[];
  /** API group: '' for the core group. */
  group: string;
  /** Plural resource name, as RBAC spells it. */
  resource: string;
  subresource?: string;
  verbs: string[];
  namespace: NamespaceScope;
  /** The call names one object from the config: RBAC can restrict it with resourceNames. */
  resourceName?: 'source.pod' | 'source.password.fromSecret.name';
  /** Only needed when the config says so (beyond the feature being on). */
  only?: 'source.pod' | 'source.selector' | 'source.password.fromSecret';
  /** Which code makes the call, and why. */
  why: string;
}

/**
 * Every Kubernetes API call Lifeboat makes. Read by hand from lib/kube/*.ts, lib/plumbing/deps.ts,
 * lib/postgres/scratch.ts, lib/drill/velero.ts and functions/uploadEtcd.ts.
 *
 * pods/exec: client-node execs over a WebSocket, an HTTP GET: API servers before 1.31 authorize it as
 * `get` on pods/exec, newer ones (AuthorizePodWebsocketUpgradeCreatePermission) as `create` too, so
 * both verbs are listed.
 */
export const API_CALLS: readonly ApiCall[] = [
  // dumpPostgres, source.mode kubernetes (lib/plumbing/deps.ts postgres(), lib/kube/pods.ts, lib/postgres/kubeRunner.ts)
  {
    component: 'worker', feature: 'postgres kubernetes mode', functions: ['dumpPostgres'],
    group: '', resource: 'pods', verbs: ['get'], namespace: 'dataset', resourceName: 'source.pod', only: 'source.pod',
    why: 'resolvePod: readNamespacedPod of source.pod (Ready? has the container?)',
  },
  {
    component: 'worker', feature: 'postgres kubernetes mode', functions: ['dumpPostgres'],
    group: '', resource: 'pods', verbs: ['list'], namespace: 'dataset', only: 'source.selector',
    why: 'resolvePod: listNamespacedPod with source.selector, to pick the Ready primary',
  },
  {
    component: 'worker', feature: 'postgres kubernetes mode', functions: ['dumpPostgres'],
    group: '', resource: 'pods', subresource: 'exec', verbs: ['create', 'get'], namespace: 'dataset', resourceName: 'source.pod',
    why: 'KubeRunner: pg_dumpall and psql run in the server pod over the exec WebSocket',
  },
  {
    component: 'worker', feature: 'postgres kubernetes mode', functions: ['dumpPostgres'],
    group: '', resource: 'secrets', verbs: ['get'], namespace: 'dataset', resourceName: 'source.password.fromSecret.name', only: 'source.password.fromSecret',
    why: 'readSecretKey: the password from source.password.fromSecret',
  },
  // drillRestore of a postgres dataset, drill.mode kubernetes (lib/postgres/scratch.ts kubernetesScratch)
  {
    component: 'worker', feature: 'postgres drill kubernetes mode', functions: ['drillRestore'],
    group: '', resource: 'namespaces', verbs: ['create', 'delete'], namespace: 'drill',
    why: 'kubernetesScratch: creates the labelled scratch namespace, and deletes it (with its pod) afterwards',
  },
  {
    component: 'worker', feature: 'postgres drill kubernetes mode', functions: ['drillRestore'],
    group: '', resource: 'pods', verbs: ['create', 'get'], namespace: 'drill',
    why: 'kubernetesScratch: creates the postgres pod and polls it until Ready (never deletes it: the namespace goes)',
  },
  {
    component: 'worker', feature: 'postgres drill kubernetes mode', functions: ['drillRestore'],
    group: '', resource: 'pods', subresource: 'exec', verbs: ['create', 'get'], namespace: 'drill',
    why: 'KubeRunner: psql loads the dump and runs the checks in the scratch pod',
  },
  // drillRestore of a velero dataset with drill.kubernetes (lib/drill/velero.ts, lib/kube/velero.ts VeleroApi)
  {
    component: 'worker', feature: 'velero drill', functions: ['drillRestore'],
    group: 'velero.io', resource: 'backups', verbs: ['list'], namespace: 'velero',
    why: 'VeleroApi.listBackups: picks the newest Completed backup',
  },
  {
    component: 'worker', feature: 'velero drill', functions: ['drillRestore'],
    group: 'velero.io', resource: 'restores', verbs: ['create', 'get', 'delete'], namespace: 'velero',
    why: 'VeleroApi.createRestore/getRestore/deleteRestore: the Restore into scratch namespaces, polled, then deleted',
  },
  {
    component: 'worker', feature: 'velero drill', functions: ['drillRestore'],
    group: '', resource: 'namespaces', verbs: ['get', 'delete'], namespace: 'velero-scratch',
    why: 'VeleroApi.namespaceActive/deleteNamespace: checks the restored scratch namespaces exist, then deletes them (Velero created them)',
  },
  // uploadEtcd with source.listSnapshotFiles (functions/uploadEtcd.ts unaccounted)
  {
    component: 'etcd', feature: 'etcd snapshot files', functions: ['uploadEtcd'],
    group: 'k3s.cattle.io', resource: 'etcdsnapshotfiles', verbs: ['list'], namespace: 'cluster',
    why: "listClusterCustomObject: k3s's ETCDSnapshotFile records, to report snapshots found neither on the node nor on the hub",
  },
];

/** The functions each component runs in deploy/base (worker-deployment.yaml, etcd-deployment.yaml, serve.yaml). */
export const COMPONENT_FUNCTIONS: Readonly<Record<Component, readonly string[]>> = {
  worker: ['dumpPostgres', 'verifyObject', 'drillRestore', 'mirrorBucket', 'pruneCheck', 'restoreBackup'],
  etcd: ['uploadEtcd'],
  // serve enqueues jobs, upserts schedulers and serves HTTP: it never calls the Kubernetes API.
  serve: [],
};

/** The ServiceAccount of each component in deploy/base (namespace `lifeboat`). */
export const SERVICE_ACCOUNTS: Readonly<Record<Component, { namespace: string; name: string }>> = {
  worker: { namespace: 'lifeboat', name: 'lifeboat-worker' },
  serve: { namespace: 'lifeboat', name: 'lifeboat-serve' },
  etcd: { namespace: 'lifeboat', name: 'lifeboat-etcd' },
};

/** One permission a config needs, with the concrete namespace and names filled in. */
export interface RequiredPermission {
  component: Component;
  feature: Feature;
  functions: string[];
  /** The datasets that need it (sorted). */
  datasets: string[];
  group: string;
  resource: string;
  subresource?: string;
  /** Sorted. */
  verbs: string[];
  /**
   * A namespace name, or 'cluster': either a cluster-scoped resource, or a namespaced one in namespaces
   * not known in advance (the drill's), which RBAC can only grant cluster-wide (see namespacePrefix).
   */
  namespace: string;
  /** Only these objects (RBAC resourceNames); absent: any name. */
  resourceNames?: string[];
  /**
   * For grants that RBAC must give cluster-wide although Lifeboat only touches its scratch namespaces:
   * the prefix those namespace names start with (the object's own name for `namespaces`, the
   * namespace of the pod otherwise). The ValidatingAdmissionPolicy in deploy/base enforces it.
   */
  namespacePrefix?: string;
  /** The dataset's kubeconfig, when it names one: then the call goes out with that identity, not the pod's. */
  kubeconfig?: string;
  why: string;
}

type PostgresSource = Extract<Extract<Config['datasets'][number], { kind: 'postgres' }>['source'], { mode: 'kubernetes' }>;

function sourceApplies(call: ApiCall, source: PostgresSource): boolean {
  switch (call.only) {
    case undefined:
      return true;
    case 'source.pod':
      return source.pod !== undefined;
    case 'source.selector':
      return source.selector !== undefined;
    case 'source.password.fromSecret':
      return source.password !== undefined && 'fromSecret' in source.password;
  }
}

function resourceNameOf(call: ApiCall, source: PostgresSource): string[] | undefined {
  if (call.resourceName === 'source.pod') return source.pod !== undefined ? [source.pod] : undefined;
  if (call.resourceName === 'source.password.fromSecret.name' && source.password && 'fromSecret' in source.password) return [source.password.fromSecret.name];
  return undefined;
}

/**
 * The permissions a config needs, per component, with namespaces and names from the config:
 * - postgres with source.mode kubernetes: get/exec on the pod (or list with a selector), get on the secret;
 * - postgres with drill.mode kubernetes: the scratch namespace and its pod;
 * - velero with drill.kubernetes: Backups, Restores, and the scratch namespaces;
 * - etcd with source.listSnapshotFiles: ETCDSnapshotFile list.
 * A drill counts whether or not drill.enabled is set (`lifeboat run drillRestore` and `lifeboat drill`
 * run it anyway). Entries that agree on everything but the dataset are merged; the order is stable.
 */
export function requiredPermissions(config: Pick<Config, 'datasets'>): RequiredPermission[] {
  const merged = new Map<string, RequiredPermission>();
  const add = (call: ApiCall, dataset: string, fill: { namespace: string; resourceNames?: string[]; namespacePrefix?: string; kubeconfig?: string }) => {
    const verbs = [...call.verbs].sort();
    const key = JSON.stringify([call.component, call.feature, call.group, call.resource, call.subresource ?? '', verbs, fill.namespace, fill.resourceNames ?? null, fill.namespacePrefix ?? null, fill.kubeconfig ?? null]);
    const existing = merged.get(key);
    if (existing) {
      if (!existing.datasets.includes(dataset)) existing.datasets = [...existing.datasets, dataset].sort();
      return;
    }
    merged.set(key, {
      component: call.component,
      feature: call.feature,
      functions: [...call.functions],
      datasets: [dataset],
      group: call.group,
      resource: call.resource,
      ...(call.subresource !== undefined ? { subresource: call.subresource } : {}),
      verbs,
      namespace: fill.namespace,
      ...(fill.resourceNames ? { resourceNames: fill.resourceNames } : {}),
      ...(fill.namespacePrefix !== undefined ? { namespacePrefix: fill.namespacePrefix } : {}),
      ...(fill.kubeconfig !== undefined ? { kubeconfig: fill.kubeconfig } : {}),
      why: call.why,
    });
  };
  const calls = (feature: Feature) => API_CALLS.filter((c) => c.feature === feature);

  for (const dataset of config.datasets) {
    if (dataset.kind === 'postgres') {
      const source = dataset.source;
      if (source.mode === 'kubernetes') {
        for (const call of calls('postgres kubernetes mode')) {
          if (!sourceApplies(call, source)) continue;
          add(call, dataset.id, { namespace: source.namespace, resourceNames: resourceNameOf(call, source), kubeconfig: source.kubeconfig });
        }
      }
      if (dataset.drill.mode === 'kubernetes') {
        const k = dataset.drill.kubernetes;
        for (const call of calls('postgres drill kubernetes mode')) add(call, dataset.id, { namespace: 'cluster', namespacePrefix: `${k.namespacePrefix}-`, kubeconfig: k.kubeconfig });
      }
    } else if (dataset.kind === 'velero') {
      const k = dataset.drill.kubernetes;
      if (!k) continue;
      for (const call of calls('velero drill')) {
        if (call.namespace === 'velero') add(call, dataset.id, { namespace: k.veleroNamespace, kubeconfig: k.kubeconfig });
        else add(call, dataset.id, { namespace: 'cluster', namespacePrefix: `${k.scratchPrefix}-`, kubeconfig: k.kubeconfig });
      }
    } else if (dataset.kind === 'etcd') {
      if (!dataset.source.listSnapshotFiles) continue;
      for (const call of calls('etcd snapshot files')) add(call, dataset.id, { namespace: 'cluster', kubeconfig: dataset.source.kubeconfig });
    }
  }
  return [...merged.values()];
}

/** One SelfSubjectAccessReview's spec.resourceAttributes (namespace absent: cluster-wide or cluster-scoped). */
export interface AccessReviewAttributes {
  group: string;
  resource: string;
  subresource?: string;
  verb: string;
  namespace?: string;
  name?: string;
}

/** The access reviews that prove a list of permissions: one per verb and resource name. */
export function accessReviews(permissions: readonly RequiredPermission[]): Array<{ permission: RequiredPermission; attributes: AccessReviewAttributes }> {
  const out: Array<{ permission: RequiredPermission; attributes: AccessReviewAttributes }> = [];
  for (const permission of permissions) {
    for (const verb of permission.verbs) {
      for (const name of permission.resourceNames ?? [undefined]) {
        out.push({
          permission,
          attributes: {
            group: permission.group,
            resource: permission.resource,
            ...(permission.subresource !== undefined ? { subresource: permission.subresource } : {}),
            verb,
            ...(permission.namespace !== 'cluster' ? { namespace: permission.namespace } : {}),
            ...(name !== undefined ? { name } : {}),
          },
        });
      }
    }
  }
  return out;
}

/** `pods/exec` style, as RBAC rules spell a subresource. */
export function rbacResource(p: { resource: string; subresource?: string }): string {
  return p.subresource ? `${p.resource}/${p.subresource}` : p.resource;
}
