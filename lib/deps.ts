import type { S3Client } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import type { Config, Dataset } from './config/schema.js';
import type { MetricsRecorder } from './metrics/recorder.js';
import { DirStore } from './targets/dir.js';
import { createS3Client, s3ConnectionFromConfig, S3Store } from './targets/s3.js';
import type { TargetStore } from './targets/store.js';

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
  close(): Promise<void>;
}

export interface DepsOptions {
  config: Config;
  logger: Logger;
  metrics: MetricsRecorder;
  clock?: () => Date;
  /** Override how S3 clients are made (tests). */
  s3Client?: (target: string) => S3Client;
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
    async close() {
      for (const client of clients.values()) client.destroy();
      clients.clear();
      stores.clear();
    },
  };
}
