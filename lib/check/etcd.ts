import { constants } from 'node:fs';
import { access, readdir } from 'node:fs/promises';
import type { Config, EtcdDataset } from '../config/schema.js';
import { fail, messageOf, ok, warn, type CheckLine } from './types.js';

/**
 * Per etcd dataset: the snapshot directory can be read here. Only the worker on the k3s server node sees
 * it, so a missing directory is a warning (this may be another host), an unreadable one a failure.
 */
export async function checkEtcd(config: Config): Promise<CheckLine[]> {
  const lines: CheckLine[] = [];
  for (const [index, d] of config.datasets.entries()) {
    if (d.kind !== 'etcd') continue;
    lines.push(await checkSnapshotDir(d, index));
    if (d.source.uploadToken) lines.push(await checkTokenFile(d, index));
  }
  return lines;
}

async function checkSnapshotDir(d: EtcdDataset, index: number): Promise<CheckLine> {
  const check = `etcd ${d.id}`;
  const dir = d.source.snapshotDir;
  try {
    const names = await readdir(dir);
    const snapshots = names.filter((n) => !n.startsWith('.')).length;
    return ok(check, `${dir} is readable (${snapshots} entr${snapshots === 1 ? 'y' : 'ies'})`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return warn(check, `${dir} does not exist on this host: uploadEtcd works only on the k3s server node that writes the snapshots`, `run the worker for uploadEtcd on that node (lifeboat worker --functions uploadEtcd), or fix datasets[${index}].source.snapshotDir`);
    }
    if (code === 'EACCES' || code === 'EPERM') return fail(check, `${dir} is not readable by this user (${code})`, `run the uploadEtcd worker as a user that may read ${dir} (k3s writes it as root)`);
    return fail(check, `${dir}: ${messageOf(err)}`, `fix datasets[${index}].source.snapshotDir`);
  }
}

async function checkTokenFile(d: EtcdDataset, index: number): Promise<CheckLine> {
  const check = `etcd token ${d.id}`;
  const file = d.source.tokenFile;
  try {
    await access(file, constants.R_OK);
    return ok(check, `${file} is readable (uploadToken is on)`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return warn(check, `${file} does not exist on this host (uploadToken is on)`, `run the uploadEtcd worker on the k3s server node, or fix datasets[${index}].source.tokenFile`);
    return fail(check, `${file} is not readable by this user (${code ?? messageOf(err)})`, `run the uploadEtcd worker as a user that may read ${file}`);
  }
}
