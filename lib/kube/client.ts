import { createRequire } from 'node:module';
import type { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { PermanentError } from '../../queue/errors.js';

type KubeClient = typeof import('@kubernetes/client-node');
let loaded: KubeClient | undefined;

/**
 * @kubernetes/client-node, loaded on first use: it is by far the heaviest import (~800 modules, over a
 * second of startup) and most commands never talk to a cluster. A synchronous require (of the ESM
 * package, which Node >= 20.19 allows) because Deps.kube() and the callers here are synchronous.
 */
export function kubeClient(): KubeClient {
  return (loaded ??= createRequire(import.meta.url)('@kubernetes/client-node') as KubeClient);
}

/** A kubeconfig file if given; otherwise KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new (kubeClient().KubeConfig)();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kc;
}

export function coreApi(kc: KubeConfig): CoreV1Api {
  return kc.makeApiClient(kubeClient().CoreV1Api);
}

/**
 * Kubernetes API failures that retrying cannot fix (missing, forbidden, invalid) become permanent errors
 * that name the resource; everything else (timeouts, 5xx, connection refused) stays retryable.
 */
export function kubeError(err: unknown, what: string): unknown {
  if (err instanceof kubeClient().ApiException) {
    const message = (err.body as { message?: string } | undefined)?.message ?? `HTTP ${err.code}`;
    if (err.code === 404) return new PermanentError(`${what} not found (${message})`, { cause: err });
    if (err.code === 401 || err.code === 403) return new PermanentError(`${what}: forbidden (${message})`, { cause: err });
    if (err.code === 400 || err.code === 409 || err.code === 422) return new PermanentError(`${what}: ${message}`, { cause: err });
    return new Error(`${what}: HTTP ${err.code} ${message}`, { cause: err });
  }
  return err;
}
