/**
 * The client cost of one S3 request, for each way of making it, in one run against the same RGW:
 *   @aws-sdk/client-s3 (as createS3Client makes it), the minio client, and the signed node:http path
 *   the target store uses (lib/targets/s3http.ts, @smithy/signature-v4).
 * For HEAD, GET and PUT of a 1 KiB object and a ListObjectsV2 page of 1,000 keys, each client makes the
 * same requests, 16 in flight; rounds alternate the order. Prints client CPU microseconds per request
 * (user + system of this process, which only makes requests) and wall per request; the ratios are
 * against the SDK.
 *
 *   npm run build && node dist/bench/requests.js [--requests 3000] [--rounds 3]
 */
import { parseArgs } from 'node:util';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { Client as MinioClient } from 'minio';
import { createS3Client, S3Store } from '../lib/targets/s3.js';
import { fmt, printTable, startBenchRgw } from './common.js';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '3000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.requests);
const LIST_PAGES = Math.max(20, Math.floor(N / 100));
const IN_FLIGHT = 16;
const KEYS = 1000;

type Op = 'HEAD' | 'GET' | 'PUT' | 'LIST';
type Make = Record<Op, (i: number) => Promise<unknown>>;

const rgw = await startBenchRgw();
try {
  const sdk = createS3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  const url = new URL(rgw.endpoint);
  const minio = new MinioClient({ endPoint: url.hostname, port: Number(url.port), useSSL: false, accessKey: rgw.accessKeyId, secretKey: rgw.secretAccessKey, region: 'us-east-1', pathStyle: true });
  const store = new S3Store(sdk, 'bench', 'requests');
  await sdk.send(new CreateBucketCommand({ Bucket: 'requests' }));
  const body = Buffer.alloc(1024, 7);
  const key = (i: number) => `k/${String(i % KEYS).padStart(6, '0')}`;
  console.error(`filling ${KEYS} objects …`);
  for (let i = 0; i < KEYS; i += IN_FLIGHT) await Promise.all(Array.from({ length: IN_FLIGHT }, (_, j) => sdk.send(new PutObjectCommand({ Bucket: 'requests', Key: key(i + j), Body: body }))));

  const drain = async (s: NodeJS.ReadableStream | undefined) => {
    for await (const _ of s as AsyncIterable<Buffer>);
  };
  const clients: Record<string, Make> = {
    '@aws-sdk/client-s3': {
      HEAD: (i) => sdk.send(new HeadObjectCommand({ Bucket: 'requests', Key: key(i) })),
      GET: async (i) => drain((await sdk.send(new GetObjectCommand({ Bucket: 'requests', Key: key(i) }))).Body as NodeJS.ReadableStream),
      PUT: (i) => sdk.send(new PutObjectCommand({ Bucket: 'requests', Key: `put/${i % KEYS}`, Body: body, ContentLength: body.length })),
      LIST: () => sdk.send(new ListObjectsV2Command({ Bucket: 'requests', Prefix: 'k/', EncodingType: 'url' })),
    },
    minio: {
      HEAD: (i) => minio.statObject('requests', key(i)),
      GET: async (i) => drain(await minio.getObject('requests', key(i))),
      PUT: (i) => minio.putObject('requests', `put/${i % KEYS}`, body, body.length),
      // listObjectsV2 streams every page; one page of 1,000 is one request.
      LIST: () => new Promise<void>((resolve, reject) => {
        const s = minio.listObjectsV2('requests', 'k/', true);
        s.on('data', () => {}).on('end', () => resolve()).on('error', reject);
      }),
    },
    'signed node:http (the store)': {
      HEAD: (i) => store.head(key(i)),
      GET: async (i) => drain(await store.get(key(i))),
      PUT: (i) => store.putObject(`put/${i % KEYS}`, body, { length: body.length }),
      LIST: async () => {
        let n = 0;
        for await (const _ of store.list('k/')) if (++n === KEYS) break;
      },
    },
  };

  /** count requests, IN_FLIGHT at a time: client CPU µs and wall ms per request. */
  async function measure(run: (i: number) => Promise<unknown>, count: number): Promise<{ cpuMicros: number; wallMs: number }> {
    let next = 0;
    const cpu = process.cpuUsage();
    const started = process.hrtime.bigint();
    await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
      while (next < count) await run(next++);
    }));
    const used = process.cpuUsage(cpu);
    return { cpuMicros: (used.user + used.system) / count, wallMs: Number(process.hrtime.bigint() - started) / 1e6 / count };
  }

  const ops: Op[] = ['HEAD', 'GET', 'PUT', 'LIST'];
  const names = Object.keys(clients);
  const results = new Map<string, Array<{ cpuMicros: number; wallMs: number }>>();
  for (const name of names) for (const op of ops) await measure(clients[name]![op], 50); // warm: sockets, JIT
  for (let round = 1; round <= Number(values.rounds); round += 1) {
    console.error(`round ${round} …`);
    for (const name of round % 2 ? names : [...names].reverse()) {
      for (const op of ops) {
        const r = await measure(clients[name]![op], op === 'LIST' ? LIST_PAGES : N);
        const k = `${name} ${op}`;
        results.set(k, [...(results.get(k) ?? []), r]);
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const m = (name: string, op: Op) => {
    const rs = results.get(`${name} ${op}`)!;
    return { cpu: median(rs.map((r) => r.cpuMicros)), wall: median(rs.map((r) => r.wallMs)) };
  };
  console.log(`\nclient cost per request, RGW (bluestore) on loopback, ${IN_FLIGHT} in flight, medians of ${values.rounds} rounds (${N} requests each, LIST: ${LIST_PAGES} pages of ${KEYS} keys), ${new Date().toISOString()}`);
  const rows = [['client', 'request', 'CPU µs / request', 'wall ms / request', 'CPU / SDK']];
  for (const op of ops) for (const name of names) rows.push([name, op === 'LIST' ? 'ListObjectsV2 (1,000 keys)' : `${op} 1 KiB`, fmt(m(name, op).cpu, 0), fmt(m(name, op).wall, 3), fmt(m(name, op).cpu / m(names[0]!, op).cpu)]);
  printTable(rows);
  sdk.destroy();
} finally {
  rgw.stop();
}
