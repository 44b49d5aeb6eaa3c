import type { KubeConfig } from '@kubernetes/client-node';
import { kubeClient } from '../kube/client.js';
import type { Config } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { accessReviews, rbacResource, requiredPermissions, SERVICE_ACCOUNTS, type Component, type RequiredPermission } from '../kube/permissions.js';
import { CHECK_TIMEOUT_MS, fail, messageOf, ok, within, type CheckLine } from './types.js';

export const COMPONENTS: readonly Component[] = ['worker', 'etcd', 'serve'];

/**
 * When any dataset needs the cluster: the API server answers, and every permission the config needs
 * (lib/kube/permissions.ts) is granted to whoever this kubeconfig is, one SelfSubjectAccessReview per verb
 * and resource name. `component` limits it to one component's permissions (run check in that pod).
 */
export async function checkKube(config: Config, deps: Pick<Deps, 'kube'>, component?: Component): Promise<CheckLine[]> {
  const permissions = requiredPermissions(config).filter((p) => component === undefined || p.component === component);
  if (permissions.length === 0) return [];
  const byKubeconfig = new Map<string, RequiredPermission[]>();
  for (const p of permissions) byKubeconfig.set(p.kubeconfig ?? '', [...(byKubeconfig.get(p.kubeconfig ?? '') ?? []), p]);
  const lines = await Promise.all([...byKubeconfig].map(([file, perms]) => checkCluster(file || undefined, perms, deps)));
  return lines.flat();
}

function describeApiError(err: unknown): string {
  if (err instanceof kubeClient().ApiException) {
    const body = typeof err.body === 'string' ? safeJson(err.body) : err.body;
    const message = (body as { message?: unknown } | undefined)?.message;
    return `HTTP ${err.code}${typeof message === 'string' ? `: ${message}` : ''}`;
  }
  const code = (err as { code?: unknown; cause?: { code?: unknown } })?.code ?? (err as { cause?: { code?: unknown } })?.cause?.code;
  return typeof code === 'string' ? `${code} (${messageOf(err)})` : messageOf(err);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function where(p: RequiredPermission): string {
  return p.namespace === 'cluster' ? (p.namespacePrefix ? `cluster-wide (namespaces ${p.namespacePrefix}*)` : 'cluster-wide') : `in namespace ${p.namespace}`;
}

async function checkCluster(file: string | undefined, permissions: RequiredPermission[], deps: Pick<Deps, 'kube'>): Promise<CheckLine[]> {
  const which = file ? `kubeconfig ${file}` : 'the default kubeconfig (KUBECONFIG, ~/.kube/config or in-cluster)';
  const features = [...new Set(permissions.map((p) => p.feature))].join(', ');
  const datasets = [...new Set(permissions.flatMap((p) => p.datasets))].sort().join(', ');
  let kc: KubeConfig;
  let server: string;
  try {
    kc = deps.kube(file);
    server = kc.getCurrentCluster()?.server ?? '';
    if (!server) throw new Error('it names no cluster');
  } catch (err) {
    return [fail('kubernetes', `cannot load ${which}: ${messageOf(err)} (needed by ${datasets}: ${features})`, file ? `fix the kubeconfig field of ${datasets}` : 'run in the cluster with the ServiceAccount, set KUBECONFIG, or set the datasets\' kubeconfig field')];
  }
  const check = `kubernetes ${server}`;
  const api = kc.makeApiClient(kubeClient().AuthorizationV1Api);
  const reviews = accessReviews(permissions);
  const started = Date.now();
  const answers = await Promise.all(
    reviews.map(async ({ attributes }) => {
      try {
        const review = await within(
          api.createSelfSubjectAccessReview({ body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: attributes } } }),
          CHECK_TIMEOUT_MS,
          `SelfSubjectAccessReview at ${server}`,
        );
        return { allowed: review.status?.allowed === true, reason: review.status?.reason || review.status?.evaluationError || '' };
      } catch (err) {
        return { error: err };
      }
    }),
  );
  const broken = answers.find((a): a is { error: unknown } => 'error' in a);
  if (broken) {
    const e = broken.error;
    const status = e instanceof kubeClient().ApiException ? e.code : undefined;
    const fix =
      status === 401
        ? `the credentials of ${which} are not accepted: renew the token or certificate`
        : status === 403
          ? 'allow this identity to create selfsubjectaccessreviews (the default system:basic-user role does)'
          : `check that ${server} is reachable from here (${which})`;
    return [fail(check, `${status ? 'the API server refused SelfSubjectAccessReview' : 'cannot reach the API server'}: ${describeApiError(e)} (needed by ${datasets}: ${features}); permissions not checked`, fix)];
  }
  const lines: CheckLine[] = [ok(check, `reachable through ${which}; ${reviews.length} access reviews in ${Date.now() - started} ms (needed by ${datasets}: ${features})`)];
  for (const p of permissions) {
    const denied = reviews
      .map((r, i) => ({ r, a: answers[i] as { allowed: boolean; reason: string } }))
      .filter(({ r, a }) => r.permission === p && !a.allowed);
    const what = `${p.verbs.join(',')} ${rbacResource(p)}${p.group ? `.${p.group}` : ''}${p.resourceNames ? ` ${p.resourceNames.join(',')}` : ''} ${where(p)}`;
    const name = `kube ${p.component}: ${rbacResource(p)}${p.group ? `.${p.group}` : ''} ${p.namespace === 'cluster' ? 'cluster' : p.namespace}`;
    if (!denied.length) {
      lines.push(ok(name, `${what} allowed (${p.feature}: ${p.datasets.join(', ')})`));
      continue;
    }
    const verbs = [...new Set(denied.map(({ r }) => r.attributes.verb))].join(',');
    const reason = denied.map(({ a }) => a.reason).find(Boolean);
    const sa = SERVICE_ACCOUNTS[p.component];
    lines.push(
      fail(
        name,
        `${verbs} ${rbacResource(p)}${p.group ? `.${p.group}` : ''} ${where(p)} denied${reason ? ` (${reason})` : ''}: ${p.feature} of ${p.datasets.join(', ')} needs it (${p.why})`,
        `grant the ${p.component} identity (ServiceAccount ${sa.namespace}/${sa.name} in deploy/base) apiGroups ["${p.group}"], resources ["${rbacResource(p)}"], verbs [${p.verbs.map((v) => `"${v}"`).join(', ')}]${p.resourceNames ? `, resourceNames [${p.resourceNames.map((n) => `"${n}"`).join(', ')}]` : ''} ${where(p)}`,
      ),
    );
  }
  return lines;
}
