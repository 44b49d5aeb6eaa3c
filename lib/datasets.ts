import type { Config, Dataset } from './config/schema.js';
import { PermanentError } from '../queue/errors.js';

/** The dataset a job names, of the kind the function handles; anything else is a permanent error. */
export function requireDataset<K extends Dataset['kind']>(config: Config, id: string, kind?: K): Extract<Dataset, { kind: K }> {
  const dataset = config.datasets.find((d) => d.id === id);
  // A worker knows the config it loaded: a dataset added since is unknown to it until it reloads.
  if (!dataset) {
    const known = config.datasets.map((d) => d.id).join(', ') || 'none';
    throw new PermanentError(`dataset "${id}" is not in this worker's config (known: ${known}); if it was added since the worker started, reload it (SIGHUP) or restart the worker`);
  }
  if (kind && dataset.kind !== kind) throw new PermanentError(`dataset "${id}" is a ${dataset.kind} dataset, not ${kind}`);
  return dataset as Extract<Dataset, { kind: K }>;
}
