import type { Dataset } from '../config/schema.js';

export interface Replica {
  name?: string;
  target: string;
  bucket: string;
  prefix: string;
  retention?: { daily: number; weekly: number; monthly: number };
}

type WithReplicas = Dataset & { replicas: Replica[] };

/** The replicas of a dataset (only postgres and etcd datasets have them). */
export function replicasOf(dataset: Dataset): Replica[] {
  return 'replicas' in dataset ? (dataset as WithReplicas).replicas : [];
}

/** How metrics, `backups ls` and `restore --from` name a replica: its name, else its target's. */
export const replicaName = (replica: Replica): string => replica.name ?? replica.target;

/**
 * The dataset as it lies on a replica: the same layout under the replica's target, bucket and prefix,
 * so listBackups, verification and restores work on it unchanged and never touch the primary.
 */
export function replicaDataset<D extends Dataset>(dataset: D, replica: Replica): D {
  return { ...dataset, target: { name: replica.target, bucket: replica.bucket, prefix: replica.prefix }, retention: replicaRetention(dataset, replica) } as D;
}

/** The retention a replica applies to its own catalog: its own, else the dataset's. */
export function replicaRetention(dataset: Dataset, replica: Replica): { daily: number; weekly: number; monthly: number } {
  return replica.retention ?? (dataset as Extract<Dataset, { retention: unknown }>).retention;
}

/** A replica of the dataset by name, or an error message naming the known ones. */
export function findReplica(dataset: Dataset, name: string): Replica | string {
  const replicas = replicasOf(dataset);
  const found = replicas.find((r) => replicaName(r) === name);
  if (found) return found;
  return `dataset ${dataset.id} has no replica "${name}" (known: ${replicas.map(replicaName).join(', ') || 'none'})`;
}
