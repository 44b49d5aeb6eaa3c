/**
 * `lifeboat restore <bucket-dataset>` against `rclone copy` with an expert's flags, in one run, on the
 * same mirror on the same RGW. Both copy the hub's mirror into a fresh bucket of another user, so both
 * stream through themselves (no server-side copy). Runs alternate; each is measured under GNU time.
 *
 *   npm run build && node dist/bench/restoreBucket.js [--objects 10000] [--rounds 2]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../lib/targets/s3.js';
import { fmt, measureShell, printTable, rcloneEnv, startBenchRgw, type Usage } from './common.js';

const { values } = parseArgs({ options: { objects: { type: 'string', default: '10000' }, rounds: { type: 'string', default: '2' } } });
const count = Number(values.objects);
const rounds = Number(values.rounds);
const RCLONE_FLAGS = '--transfers 32 --checkers 32 --fast-list';

const rgw = await startBenchRgw();
const configFile = join(tmpdir(), `lifeboat-bench-restore-bucket-${process.pid}.yaml`);
try {
  const cephEnv = { ...process.env, CEPH_CONF: rgw.cephConf };
  const users = { cluster: { key: 'bench-cluster-access', secret: 'bench-cluster-secret-0123456789' }, hub: { key: 'bench-hub-access', secret: 'bench-hub-secret-0123456789' }, dst: { key: 'bench-dst-access', secret: 'bench-dst-secret-0123456789' } };
  for (const [uid, u] of Object.entries(users)) execFileSync('radosgw-admin', ['user', 'create', `--uid=bench-${uid}`, `--display-name=${uid}`, `--access-key=${u.key}`, `--secret-key=${u.secret}`], { env: cephEnv, stdio: 'ignore' });
  const client = (u: { key: string; secret: string }) => createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: u.key, secretAccessKey: u.secret });
  const cluster = client(users.cluster);
  const hub = client(users.hub);
  const dst = client(users.dst);
  const bucket = (c: S3Client, name: string) => c.send(new CreateBucketCommand({ Bucket: name })).then(() => name);

  // The cluster's bucket: small objects of 1-64 KiB in 50 folders, as a photo or web bucket would hold.
  await bucket(cluster, 'photos');
  await bucket(hub, 'hub');
  console.error(`filling ${count} objects …`);
  let next = 0;
  let bytes = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < count) {
      const i = next++;
      const size = 1024 + Math.floor(Math.random() * 63 * 1024);
      bytes += size;
      await cluster.send(new PutObjectCommand({ Bucket: 'photos', Key: `album-${i % 50}/img-${i}.jpg`, Body: randomBytes(size), ContentType: 'image/jpeg' }));
    }
  }));

  const env = {
    ...process.env, LOG_LEVEL: 'error',
    B_CLUSTER_KEY: users.cluster.key, B_CLUSTER_SECRET: users.cluster.secret, B_HUB_KEY: users.hub.key, B_HUB_SECRET: users.hub.secret, B_DST_KEY: users.dst.key, B_DST_SECRET: users.dst.secret,
  };
  await writeFile(configFile, JSON.stringify({
    redis: { url: 'redis://127.0.0.1:1' },
    targets: {
      hub: { kind: 's3', endpoint: rgw.endpoint, accessKeyId: '${env:B_HUB_KEY}', secretAccessKey: '${env:B_HUB_SECRET}' },
      restore: { kind: 's3', endpoint: rgw.endpoint, accessKeyId: '${env:B_DST_KEY}', secretAccessKey: '${env:B_DST_SECRET}' },
    },
    datasets: [{ id: 'photos', kind: 'bucket', source: { endpoint: rgw.endpoint, bucket: 'photos', accessKeyId: '${env:B_CLUSTER_KEY}', secretAccessKey: '${env:B_CLUSTER_SECRET}' }, target: { name: 'hub', bucket: 'hub', prefix: 'photos/' } }],
  }));
  const cli = `node --max-semi-space-size=2 ${join(import.meta.dirname, '../lib/cli/main.js')}`;
  console.error('mirroring it to the hub …');
  execFileSync('bash', ['-c', `${cli} run mirrorBucket --dataset photos --inline -c ${configFile} > /dev/null`], { env, stdio: ['ignore', 'ignore', 'inherit'] });

  const renv = rcloneEnv(rgw, { hub: users.hub, dst: users.dst });
  const results: Array<{ name: string; usage: Usage }> = [];
  const objectsIn = async (name: string) => {
    let n = 0;
    let token: string | undefined;
    do {
      const page = await dst.send(new ListObjectsV2Command({ Bucket: name, ContinuationToken: token }));
      n += page.KeyCount ?? 0;
      token = page.NextContinuationToken;
    } while (token);
    return n;
  };
  for (let round = 1; round <= rounds; round += 1) {
    const ours = `lifeboat-${round}`;
    const theirs = `rclone-${round}`;
    await bucket(dst, theirs);
    const lifeboat = await measureShell(`${cli} restore photos --to-target restore --to-bucket ${ours} --json -c ${configFile} > /dev/null`, { env });
    const rclone = await measureShell(`rclone --config /dev/null copy hub:hub/photos dst:${theirs} ${RCLONE_FLAGS}`, { env: renv });
    for (const [name, b] of [[ours, lifeboat], [theirs, rclone]] as const) {
      const n = await objectsIn(name);
      if (n !== count) throw new Error(`${name} holds ${n} objects, expected ${count}`);
      results.push({ name: name.startsWith('lifeboat') ? 'lifeboat restore' : `rclone copy ${RCLONE_FLAGS}`, usage: b });
    }
  }

  console.log(`\nbucket restore of ${count} objects (${fmt(bytes / 1024 / 1024, 1)} MiB) from the hub into a new bucket, ${rounds} alternating rounds`);
  const rows = [['run', 'round', 'wall s', 'CPU s', 'peak RSS MiB']];
  results.forEach((r, i) => rows.push([r.name, String(Math.floor(i / 2) + 1), fmt(r.usage.seconds), fmt(r.usage.cpuSeconds), fmt(r.usage.maxRssMiB, 0)]));
  printTable(rows);
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const of = (prefix: string, f: (u: Usage) => number) => median(results.filter((r) => r.name.startsWith(prefix)).map((r) => f(r.usage)));
  console.log(`\nlifeboat / rclone (median): wall ${fmt(of('lifeboat', (u) => u.seconds) / of('rclone', (u) => u.seconds))}×, CPU ${fmt(of('lifeboat', (u) => u.cpuSeconds) / of('rclone', (u) => u.cpuSeconds))}×, peak RSS ${fmt(of('lifeboat', (u) => u.maxRssMiB) / of('rclone', (u) => u.maxRssMiB))}×`);
  console.log(`per 1k objects: lifeboat ${fmt((of('lifeboat', (u) => u.seconds) / count) * 1000)} s, rclone ${fmt((of('rclone', (u) => u.seconds) / count) * 1000)} s`);
  for (const c of [cluster, hub, dst]) c.destroy();
} finally {
  await rm(configFile, { force: true });
  await rgw.stop();
}
