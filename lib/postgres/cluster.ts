import { access, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { freePort } from '../plumbing/net.js';
import { capture } from './process.js';

export interface ThrowawayCluster {
  dir: string;
  port: number;
  /** libpq URL over the cluster's Unix socket, superuser "postgres", database "postgres". */
  url: string;
  stop(): Promise<void>;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Where initdb/pg_ctl live: an explicit dir, else /usr/lib/postgresql/<major>/bin, else PATH. */
export async function findServerBinaries(options: { binDir?: string; major?: number } = {}): Promise<string> {
  if (options.binDir) return options.binDir;
  if (options.major !== undefined) {
    const dir = `/usr/lib/postgresql/${options.major}/bin`;
    if (await exists(join(dir, 'initdb'))) return dir;
  }
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && (await exists(join(dir, 'initdb')))) return dir;
  }
  throw new Error(`initdb not found${options.major ? ` for PostgreSQL ${options.major}` : ''}; install the PostgreSQL server package or configure its bin directory`);
}

/**
 * A private PostgreSQL cluster in a temp dir, on a Unix socket only, for restore drills and tests.
 * PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
 */
export async function startThrowawayCluster(
  options: { binDir?: string; major?: number; runAs?: string; /** Require this superuser password (scram) instead of trust. */ password?: string } = {},
): Promise<ThrowawayCluster> {
  const bin = await findServerBinaries(options);
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-pg-'));
  const runAs = options.runAs ?? (userInfo().uid === 0 ? 'postgres' : undefined);
  if (runAs) {
    const uid = Number(execFileSync('id', ['-u', runAs]).toString());
    const gid = Number(execFileSync('id', ['-g', runAs]).toString());
    await chown(dir, uid, gid);
  }
  const as = (cmd: string, args: string[]) => (runAs ? capture('runuser', ['-u', runAs, '--', join(bin, cmd), ...args]) : capture(join(bin, cmd), args));
  const data = join(dir, 'data');
  const port = await freePort();
  let started = false;
  const stop = async () => {
    if (started) await as('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const auth = ['--auth=trust'];
    if (options.password !== undefined) {
      const pwfile = join(dir, 'pwfile');
      await writeFile(pwfile, `${options.password}\n`, { mode: 0o644 });
      auth.splice(0, 1, '--auth=scram-sha-256', `--pwfile=${pwfile}`);
    }
    await as('initdb', ['-D', data, '-U', 'postgres', ...auth, '-E', 'UTF8', '--locale=C', '--no-sync']);
    await as('pg_ctl', ['-D', data, '-w', '-t', '60', '-l', join(dir, 'server.log'), '-o', `-k ${dir} -p ${port} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c synchronous_commit=off`, 'start']);
    started = true;
  } catch (err) {
    await stop();
    throw err;
  }
  return { dir, port, url: `postgresql:///postgres?host=${encodeURIComponent(dir)}&port=${port}&user=postgres`, stop };
}
