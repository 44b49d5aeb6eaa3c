/** A real etcd (Debian's etcd-server) on free loopback ports, for real snapshots (`etcdctl snapshot save`). */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { removeBucket } from './helpers.js';
import { freePort } from '../lib/plumbing/net.js';

/** `etcdctl` with the v3 API; its stdout. Throws on a non-zero exit. */
export const etcdctl = (...args: string[]) => execFileSync('etcdctl', args, { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** Starts a single-member etcd with its data in `dataDir` and waits until it is healthy (15 s at most). */
export async function startEtcd(dataDir: string): Promise<{ endpoint: string; process: ChildProcess }> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const etcd = spawn('etcd', ['--data-dir', dataDir, '--name', 'node1', '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-cluster', `node1=http://127.0.0.1:${peerPort}`], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      etcdctl('--endpoints', endpoint, 'endpoint', 'health');
      break;
    } catch {
      if (Date.now() > deadline) {
        etcd.kill('SIGKILL');
        throw new Error('etcd did not start within 15 s');
      }
      await sleep(100);
    }
  }
  return { endpoint, process: etcd };
}

/** Compresses `file` into `file.zip` holding one entry named `inner`, as k3s compresses a snapshot. */
export function zipSnapshot(file: string, inner: string): void {
  execFileSync('python3', ['-c', `import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]+'.zip','w',zipfile.ZIP_DEFLATED); z.write(sys.argv[1], arcname=sys.argv[2]); z.close()`, file, inner]);
}

/** The snapshots the etcd tests make: a raw one taken 2026-11-26T00:00:00Z and a k3s zip an hour later. */
export const SNAPSHOT_T1 = 1795651200;
export const RAW_SNAPSHOT = `etcd-snapshot-node1-${SNAPSHOT_T1}`;
export const ZIP_SNAPSHOT = `etcd-snapshot-node1-${SNAPSHOT_T1 + 3600}.zip`;

/** What an etcd test file leaves behind: its etcd, its work dir, its bucket and client. */
export async function cleanUpEtcdTest(left: { etcd?: ChildProcess; work?: string; client?: S3Client; bucket?: string }): Promise<void> {
  left.etcd?.kill('SIGKILL');
  if (left.work) await rm(left.work, { recursive: true, force: true });
  if (left.client && left.bucket) {
    await removeBucket(left.client, left.bucket);
    left.client.destroy();
  }
}
