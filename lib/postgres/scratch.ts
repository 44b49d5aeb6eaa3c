import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { coreApi, kubeError } from '../kube/client.js';
import { isReady } from '../kube/pods.js';
import { startThrowawayCluster } from './cluster.js';
import { KubeRunner } from './kubeRunner.js';
import { LocalRunner, type PostgresRunner } from './runner.js';

/** A throwaway PostgreSQL server for a restore drill. stop() always cleans up everything it made. */
export interface ScratchServer {
  runner: PostgresRunner;
  /** What was made, for drill.json: a temp dir or a namespace. */
  where: string;
  stop(): Promise<void>;
}

/** initdb in a temp dir on this machine, the server binaries matching the dump's major version. */
export async function localScratch(options: { major: number; binDir?: string }): Promise<ScratchServer> {
  const cluster = await startThrowawayCluster({ major: options.major, binDir: options.binDir });
  return { runner: new LocalRunner({ url: cluster.url }), where: `local cluster in ${cluster.dir}`, stop: () => cluster.stop() };
}

export const DRILL_LABEL = 'lifeboat.dev/drill';

/**
 * A labelled scratch namespace with one postgres pod (trust auth, nothing exposed). stop() deletes the
 * namespace, and with it the pod.
 */
export async function kubernetesScratch(
  kc: KubeConfig,
  options: { image: string; namespacePrefix: string; readyTimeoutSeconds: number; dataset: string; signal?: AbortSignal },
): Promise<ScratchServer> {
  const core = coreApi(kc);
  const namespace = `${options.namespacePrefix}-${randomBytes(4).toString('hex')}`;
  const labels = { [DRILL_LABEL]: 'true', 'app.kubernetes.io/managed-by': 'lifeboat', 'lifeboat.dev/dataset': options.dataset };
  await core.createNamespace({ body: { metadata: { name: namespace, labels } } }).catch((err: unknown) => {
    throw kubeError(err, `namespace ${namespace}`);
  });
  const stop = async () => {
    await core.deleteNamespace({ name: namespace }).catch((err: unknown) => {
      if ((err as { code?: number }).code !== 404) throw kubeError(err, `namespace ${namespace}`);
    });
  };
  try {
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'postgres', labels },
        spec: {
          restartPolicy: 'Never',
          // The admission policy refuses drill pods that carry a token: the drill needs none.
          automountServiceAccountToken: false,
          containers: [
            {
              name: 'postgres',
              image: options.image,
              env: [{ name: 'POSTGRES_HOST_AUTH_METHOD', value: 'trust' }],
              readinessProbe: { exec: { command: ['pg_isready', '-h', '127.0.0.1', '-U', 'postgres'] }, periodSeconds: 2 },
            },
          ],
        },
      },
    });
    const deadline = Date.now() + options.readyTimeoutSeconds * 1000;
    for (;;) {
      options.signal?.throwIfAborted();
      const pod = await core.readNamespacedPod({ name: 'postgres', namespace });
      if (isReady(pod)) break;
      if (pod.status?.phase === 'Failed') throw new Error(`drill pod ${namespace}/postgres failed: ${pod.status.message ?? pod.status.reason ?? 'no reason given'}`);
      if (Date.now() > deadline) throw new Error(`drill pod ${namespace}/postgres not Ready after ${options.readyTimeoutSeconds} s`);
      await sleep(500);
    }
  } catch (err) {
    await stop().catch(() => {});
    throw kubeError(err, `drill pod in namespace ${namespace}`);
  }
  const runner = new KubeRunner(kc, { namespace, pod: 'postgres', container: 'postgres', user: 'postgres' }, undefined);
  return { runner, where: `namespace ${namespace}`, stop };
}
