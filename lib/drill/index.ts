/**
 * One restore drill per dataset kind. drillRestore picks by dataset.kind; a kind without an entry has no
 * drill (and no drill schedule).
 */
import type { Dataset } from '../config/schema.js';
import { drillBucket } from './bucket.js';
import { drillEtcd } from './etcd.js';
import { drillPostgres } from './postgres.js';
import type { Drill } from './types.js';
import { drillVelero } from './velero.js';

type DrillFor<K extends Dataset['kind']> = Drill<Extract<Dataset, { kind: K }>>;

export const drills: { [K in Dataset['kind']]?: DrillFor<K> } = {
  postgres: drillPostgres,
  bucket: drillBucket,
  etcd: drillEtcd,
  velero: drillVelero,
};

/** The drill for a dataset's kind, or undefined when that kind has none. */
export function drillFor<D extends Dataset>(dataset: D): Drill<D> | undefined {
  return drills[dataset.kind] as Drill<D> | undefined;
}
