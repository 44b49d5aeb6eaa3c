import type { Config, Dataset } from './schema.js';

export type RestoreTarget = NonNullable<Config['server']['ui']['restoreTargets']>[string];

/**
 * The restore destination `into` names for `dataset`: only server.ui.restoreTargets, never a URL from a
 * request, and of the kind the dataset restores into. The problem names the field it is about.
 */
export function restoreTargetFor(config: Config, dataset: Dataset, into: string): { target: RestoreTarget } | { problem: string; field: 'into' | 'dataset' } {
  const targets = config.server.ui.restoreTargets ?? {};
  const target = targets[into];
  if (!target) return { field: 'into', problem: `into: "${into}" is not in server.ui.restoreTargets (known: ${Object.keys(targets).join(', ') || 'none: add server.ui.restoreTargets to the config'})` };
  const wanted = dataset.kind === 'postgres' ? 'postgres' : dataset.kind === 'bucket' ? 's3' : undefined;
  if (!wanted) return { field: 'dataset', problem: `dataset ${dataset.id} is a ${dataset.kind} dataset: restore it with the CLI (lifeboat restore ${dataset.id})` };
  if (target.kind !== wanted) {
    return { field: 'into', problem: `into: restore target ${into} is ${target.kind === 's3' ? 'an s3 bucket' : 'a postgres server'}; a ${dataset.kind} dataset restores into a ${wanted} restore target` };
  }
  return { target };
}
