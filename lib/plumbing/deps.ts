import type { S3Client } from '@aws-sdk/client-s3';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { BucketDataset, Config, Dataset, PostgresDataset } from '../config/schema.js';
import { Secret } from '../config/secret.js';
import { coreApi, loadKubeConfig } from '../kube/client.js';
import { readSecretKey, resolvePod } from '../kube/pods.js';
import { KubeRunner, type PodPassword } from '../postgres/kubeRunner.js';
import { LocalRunner, type PostgresRunner } from '../postgres/runner.js';
import { MemoryMetricsRecorder, type MetricsRecorder } from '../metrics/recorder.js';
import { DirStore } from '../targets/dir.js';
import { createS3Client, s3ConnectionFromConfig, S3Store } from '../targets/s3.js';
import type { TargetStore } from '../targets/store.js';

/** Everything a handler may touch outside its input. Built by createDeps; tests swap parts of it. */
export interface Deps {
  config: Config;
  logger: Logger;
  metrics: MetricsRecorder;
  clock: () => Date;
  /** The store for one bucket on a named target. */
  store(target: string, bucket: string): TargetStore;
  /** The store a dataset writes to. */
  storeFor(dataset: Dataset): TargetStore;
  /** The source bucket of a bucket mirror, with its own credentials. */
  bucketSource(dataset: BucketDataset): S3Store;
  /** Kubernetes client config: a kubeconfig file, or the default/in-cluster one. */
  kube(file?: string): KubeConfig;
  /** Runs the PostgreSQL tools for a postgres dataset's source (locally, or exec in its pod). */
  postgres(dataset: PostgresDataset): Promise<PostgresRunner>;
  close(): Promise<void>;
}

export interface DepsOptions {
  config: Config;
  logger: Logger;
  metrics: MetricsRecorder;
  clock?: () => Date;
  /** Override how S3 clients are made (tests). */
  s3Client?: (target: string) => S3Client;
  /** Override how Kubernetes configs are loaded (tests). */
  kube?: (file?: string) => KubeConfig;
}

export function createDeps(options: DepsOptions): Deps {
  const { config } = options;
  const clients = new Map<string, S3Client>();
  const stores = new Map<string, TargetStore>();

  function clientFor(name: string): S3Client {
    let client = clients.get(name);
    if (!client) {
      const target = config.targets[name];
      if (target?.kind !== 's3') throw new Error(`target "${name}" is not an s3 target`);
      client = options.s3Client?.(name) ?? createS3Client(s3ConnectionFromConfig(target));
      clients.set(name, client);
    }
    return client;
  }

  const kubeConfigs = new Map<string, KubeConfig>();
  function kube(file?: string): KubeConfig {
    let kc = kubeConfigs.get(file ?? '');
    if (!kc) {
      kc = options.kube?.(file) ?? loadKubeConfig(file);
      kubeConfigs.set(file ?? '', kc);
    }
    return kc;
  }

  function store(name: string, bucket: string): TargetStore {
    const cacheKey = `${name}\0${bucket}`;
    let s = stores.get(cacheKey);
    if (!s) {
      const target = config.targets[name];
      if (!target) throw new Error(`unknown target "${name}"`);
      s =
        target.kind === 'dir'
          ? new DirStore(target.path, name, bucket)
          : new S3Store(clientFor(name), name, bucket, { partSizeBytes: target.partSizeMiB * 1024 * 1024, queueSize: target.queueSize });
      stores.set(cacheKey, s);
    }
    return s;
  }

  return {
    config,
    logger: options.logger,
    metrics: options.metrics,
    clock: options.clock ?? (() => new Date()),
    store,
    storeFor: (dataset) => store(dataset.target.name, dataset.target.bucket),
    kube,
    bucketSource(dataset) {
      const key = `source\0${dataset.id}`;
      let client = clients.get(key);
      if (!client) {
        const src = dataset.source;
        client = options.s3Client?.(key) ?? createS3Client({
          endpoint: src.endpoint, region: src.region, forcePathStyle: src.forcePathStyle, accessKeyId: src.accessKeyId.reveal(), secretAccessKey: src.secretAccessKey.reveal(),
          connectTimeoutMs: src.connectTimeoutMs, idleTimeoutMs: src.idleTimeoutMs,
        });
        clients.set(key, client);
      }
      return new S3Store(client, `source of ${dataset.id}`, dataset.source.bucket);
    },
    async postgres(dataset) {
      const source = dataset.source;
      if (source.mode === 'direct') return new LocalRunner({ url: source.url, password: source.password, psql: source.psql, pgDumpall: source.pgDumpall });
      const kc = kube(source.kubeconfig);
      const core = coreApi(kc);
      const pod = await resolvePod(core, source);
      let password: PodPassword;
      if (source.password && 'fromPodEnv' in source.password) password = { fromPodEnv: source.password.fromPodEnv };
      else if (source.password) {
        const { name, key } = source.password.fromSecret;
        password = { viaStdin: new Secret(await readSecretKey(core, source.namespace, name, key), `secret:${source.namespace}/${name}#${key}`) };
      }
      return new KubeRunner(kc, { namespace: source.namespace, pod: pod.metadata!.name!, container: source.container, host: source.host, port: source.port, user: source.user }, password);
    },
    async close() {
      for (const client of clients.values()) client.destroy();
      clients.clear();
      stores.clear();
    },
  };
}

/** Deps for work that needs no Redis: inline runs, restores, listings. */
export function openLocal(config: Config, logger: Logger, options: { clock?: () => Date } = {}): Deps {
  return createDeps({ config, logger, metrics: new MemoryMetricsRecorder(), clock: options.clock });
}
