import { listBackups } from '../catalog/catalog.js';
import type { Dataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { errorMessage } from '../../queue/errors.js';
import { replicaDataset, replicaName, replicasOf } from './view.js';

/**
 * Where each backup of a dataset has a copy, read from the replicas themselves: backup id → replica
 * names ("usb2", "cloud (unverified)"). A replica that cannot be read is reported, never taken as empty.
 */
export async function replicaCopies(deps: Deps, dataset: Dataset, signal?: AbortSignal): Promise<{ copies: Map<string, string[]>; unreachable: Array<{ replica: string; error: string }> }> {
  const copies = new Map<string, string[]>();
  const unreachable: Array<{ replica: string; error: string }> = [];
  for (const replica of replicasOf(dataset)) {
    const view = replicaDataset(dataset, replica);
    const name = replicaName(replica);
    try {
      for (const entry of await listBackups(deps.storeFor(view), view, { signal })) {
        copies.set(entry.id, [...(copies.get(entry.id) ?? []), entry.status === 'verified' ? name : `${name} (${entry.status})`]);
      }
    } catch (err) {
      unreachable.push({ replica: name, error: errorMessage(err) });
    }
  }
  return { copies, unreachable };
}

/** One backup's places, for a table cell or a JSON field: the replicas holding it, then those that could not be read. */
export function copiesOf({ copies, unreachable }: Awaited<ReturnType<typeof replicaCopies>>, id: string, options: { errors?: boolean } = {}): string[] {
  return [...(copies.get(id) ?? []), ...unreachable.map((u) => `${u.replica} (unreachable${options.errors ? `: ${u.error}` : ''})`)];
}
