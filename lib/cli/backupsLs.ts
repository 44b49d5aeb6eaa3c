import type { Logger } from 'pino';
import { apiBackup, apiStatus } from '../api/backups.js';
import type { ApiStatus } from '../api/schemas.js';
import { listBackups, type BackupEntry, type OrphanFolder } from '../catalog/catalog.js';
import type { LoadedConfig } from '../config/load.js';
import type { Config, Dataset } from '../config/schema.js';
import { openLocal } from '../plumbing/deps.js';
import { backupsTable } from './format.js';
import { cliDataset } from './steps.js';
import { copiesOf, replicaCopies } from '../replica/copies.js';
import { replicasOf } from '../replica/view.js';

// Lives in exit.ts so main.ts can parse --since without loading this module.
export { parseSince } from './exit.js';

export interface BackupsLsOptions {
  dataset?: string;
  since?: Date;
  status?: ApiStatus;
  json?: boolean;
}

/** `target local (dir /srv/backups), bucket postgres, prefix ""`: where a dataset's backups were looked for. */
function where(config: Config, dataset: Dataset): string {
  const target = config.targets[dataset.target.name]!;
  return `target ${dataset.target.name} (${target.kind === 'dir' ? `dir ${target.path}` : `s3 ${target.endpoint}`}), bucket ${dataset.target.bucket}, prefix ${JSON.stringify(dataset.target.prefix)}`;
}

/** Nothing to list: say what was read, so that a wrong config or target is seen at once. */
function nothingFound(loaded: LoadedConfig, datasets: Dataset[], options: BackupsLsOptions): string {
  const filters = [options.status && `status ${options.status}`, options.since && `finished since ${options.since.toISOString()}`].filter(Boolean).join(', ');
  const places = [...new Set(datasets.map((d) => where(loaded.config, d)))];
  return `no backups${filters ? ` (${filters})` : ''} in ${places.join('; ') || 'any target: the config has no datasets'} — config: ${loaded.source}`;
}

/** `lifeboat backups ls`: the catalog from the targets alone, filtered; a table, or the API's backup shape per line. */
export async function backupsLsCommand(loaded: LoadedConfig, log: Logger, options: BackupsLsOptions): Promise<void> {
  const { config } = loaded;
  const datasets = options.dataset ? [cliDataset(config, options.dataset)] : config.datasets;
  const deps = openLocal(config, log);
  try {
    const orphans: Array<OrphanFolder & { dataset: string }> = [];
    const listed = await Promise.all(
      datasets.map(async (d) => (await listBackups(deps.storeFor(d), d, { onOrphan: (o) => orphans.push({ ...o, dataset: d.id }) })).map((entry) => ({ dataset: d, entry }))),
    );
    const wanted = (e: BackupEntry) => (!options.status || apiStatus(e) === options.status) && (!options.since || Date.parse(e.manifest.finishedAt) >= options.since.getTime());
    const entries = listed.flat().filter(({ entry }) => wanted(entry));
    // A folder that is no backup has no status: a --status filter leaves it out.
    const strays = orphans.filter((o) => !options.status && (!options.since || o.lastModified >= options.since));
    // Drill records are read for the listed backups only; the same shape as the web API's backup list.
    const replicated = new Map(await Promise.all(datasets.filter((d) => replicasOf(d).length > 0).map(async (d) => [d.id, await replicaCopies(deps, d)] as const)));
    for (const [id, { unreachable }] of replicated) for (const u of unreachable) process.stderr.write(`dataset ${id}: replica ${u.replica} could not be read: ${u.error}\n`);
    const copiesFor = (entry: BackupEntry) => {
      const r = replicated.get(entry.dataset);
      return r && copiesOf(r, entry.id);
    };
    const backups = await Promise.all(entries.map(async ({ dataset, entry }) => ({ entry, api: await apiBackup(deps.storeFor(dataset), entry), copies: copiesFor(entry) })));
    if (options.json) {
      for (const { entry, api, copies } of backups) process.stdout.write(`${JSON.stringify({ dataset: entry.dataset, ...api, ...(copies && { copies }) })}\n`);
      for (const o of strays) process.stdout.write(`${JSON.stringify({ dataset: o.dataset, id: o.id, status: o.reason === 'no manifest' ? 'incomplete' : 'unreadable', objects: o.keys.length, bytes: o.bytes })}\n`);
      return;
    }
    const output = backups.length || strays.length ? backupsTable(backups.map(({ entry, api, copies }) => ({ ...entry, drill: api.drill, copies })), strays, deps.clock()) : nothingFound(loaded, datasets, options);
    process.stdout.write(`${output}\n`);
  } finally {
    await deps.close();
  }
}
