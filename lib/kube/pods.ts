import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { PermanentError } from '../../queue/errors.js';
import { kubeError } from './client.js';

export function isReady(pod: V1Pod): boolean {
  return pod.status?.phase === 'Running' && (pod.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** The Bitnami chart labels its primary; with a selector that also matches replicas, prefer it. */
function isPrimary(pod: V1Pod): boolean {
  return pod.metadata?.labels?.['app.kubernetes.io/component'] === 'primary';
}

/**
 * The pod to exec into: by name, or the Ready primary among those a label selector matches. Missing,
 * not Ready, or forbidden is a permanent error that names the resource.
 */
export async function resolvePod(core: CoreV1Api, target: { namespace: string; pod?: string; selector?: string; container: string }): Promise<V1Pod> {
  const { namespace } = target;
  let pod: V1Pod;
  if (target.pod) {
    pod = await core.readNamespacedPod({ name: target.pod, namespace }).catch((err: unknown) => {
      throw kubeError(err, `pod ${namespace}/${target.pod}`);
    });
    if (!isReady(pod)) throw new PermanentError(`pod ${namespace}/${target.pod} is not Ready (phase ${pod.status?.phase ?? 'unknown'})`);
  } else {
    const list = await core.listNamespacedPod({ namespace, labelSelector: target.selector }).catch((err: unknown) => {
      throw kubeError(err, `pods in namespace ${namespace} matching ${target.selector}`);
    });
    const ready = list.items.filter(isReady).sort((a, b) => Number(isPrimary(b)) - Number(isPrimary(a)) || (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
    if (ready.length === 0) {
      throw new PermanentError(
        list.items.length === 0
          ? `no pod in namespace ${namespace} matches selector ${target.selector}`
          : `no Ready pod in namespace ${namespace} matches selector ${target.selector} (${list.items.map((p) => p.metadata?.name).join(', ')} not Ready)`,
      );
    }
    pod = ready[0]!;
  }
  const containers = pod.spec?.containers.map((c) => c.name) ?? [];
  if (!containers.includes(target.container)) {
    throw new PermanentError(`pod ${namespace}/${pod.metadata?.name} has no container "${target.container}" (has: ${containers.join(', ')})`);
  }
  return pod;
}

export async function readSecretKey(core: CoreV1Api, namespace: string, name: string, key: string): Promise<string> {
  const secret = await core.readNamespacedSecret({ name, namespace }).catch((err: unknown) => {
    throw kubeError(err, `secret ${namespace}/${name}`);
  });
  const value = secret.data?.[key];
  if (value === undefined) throw new PermanentError(`secret ${namespace}/${name} has no key "${key}" (has: ${Object.keys(secret.data ?? {}).join(', ')})`);
  return Buffer.from(value, 'base64').toString('utf8');
}
