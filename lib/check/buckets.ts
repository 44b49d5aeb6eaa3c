import type { Config, Dataset, TargetConfig } from '../config/schema.js';

/** One bucket (a directory on a dir target) that datasets write to, with the datasets that share it. */
export interface DatasetBucket {
  target: string;
  config: TargetConfig;
  bucket: string;
  datasets: Dataset[];
}

/** Every distinct target/bucket the datasets use, in config order. */
export function datasetBuckets(config: Config): DatasetBucket[] {
  const byKey = new Map<string, DatasetBucket>();
  for (const d of config.datasets) {
    const target = config.targets[d.target.name];
    if (!target) continue; // load() already refused an unknown target
    const key = `${d.target.name}\0${d.target.bucket}`;
    const entry = byKey.get(key) ?? { target: d.target.name, config: target, bucket: d.target.bucket, datasets: [] };
    entry.datasets.push(d);
    byKey.set(key, entry);
  }
  return [...byKey.values()];
}

export const datasetIds = (b: DatasetBucket) => b.datasets.map((d) => d.id).join(', ');
