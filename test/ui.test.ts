import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillRestore } from '../functions/drillRestore.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { pruneCheck } from '../functions/pruneCheck.js';
import { uploadEtcd } from '../functions/uploadEtcd.js';
import { verifyObject } from '../functions/verifyObject.js';
import type { Config } from '../lib/config/schema.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import type { Deps } from '../lib/plumbing/deps.js';
import { CSRF_COOKIE } from '../lib/plumbing/auth.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { MemoryMetricsRecorder } from '../lib/metrics/recorder.js';
import { buildServer } from '../lib/server.js';
import { CONTENT_SECURITY_POLICY } from '../lib/ui/routes.js';
import { etcdctl, startEtcd } from './etcd.js';
import { closeApps, createBucket, logger, psql, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, seedDatabases, testConfig, openWithRedisDown , runOnce } from './helpers.js';

// The web UI's pages (lib/ui/) on real services: real dumps of a throwaway PostgreSQL to the RGW hub and
// to a dir target, a real mirror between two RGW users, a real etcd snapshot, verification and a drill
// through the functions themselves, one backup corrupted on the hub and one overwritten since its check.
// Then the pages as a browser gets them, with no users (everyone is the operator) and with a viewer and
// an operator.

const TICKS = ['2026-11-20T02:00:00Z', '2026-11-21T02:00:00Z', '2026-11-22T02:00:00Z'];
const IDS = ['20261120T020000Z', '20261121T020000Z', '20261122T020000Z'];
/** A database name that is markup: every page must show it as text. */
const ODD_DB = 'x<b>&y';
const SNAPSHOT = 'etcd-snapshot-node1-1795651200';
const CAPACITY = 4096;
/** A mirror's report sits in Lifeboat's records of the mirror's bucket, beside its manifest. */
const REPORT_KEY = `_lifeboat/mirrors/photos/${IDS[2]}/report.json`;

process.env.TEST_UIPAGES_OPERATOR = 'olga-password';
process.env.TEST_UIPAGES_VIEWER = 'vic-password';
process.env.TEST_UIPAGES_SECRET = 'a-session-secret-of-at-least-32-characters';

let pg: ThrowawayCluster;
let hub: S3Client;
let source: S3Client;
let pgBucket: string;
let mirrorBucketName: string;
let etcdBucket: string;
let srcBucket: string;
let work: string;
let config: Config;
let reader: Deps;
const apps: App[] = [];
const servers: FastifyInstance[] = [];
/** No users: the anonymous operator, and two restore destinations. */
let base: string;
/** A viewer and an operator, no restore destinations, and one dataset on a target that is down. */
let withUsers: string;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
/** A record as stored on the dataset's target, read past the server. */
const storedJson = (datasetId: string, key: string) => reader.storeFor(config.datasets.find((d) => d.id === datasetId)!).getJson<any>(key);

async function listen(server: FastifyInstance): Promise<string> {
  servers.push(server);
  await server.listen({ port: 0, host: '127.0.0.1' });
  return `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
}

interface Fetched {
  status: number;
  headers: Headers;
  text: string;
}

async function get(root: string, path: string, headers: Record<string, string> = {}): Promise<Fetched> {
  const res = await fetch(`${root}${path}`, { headers: { accept: 'text/html', ...headers }, redirect: 'manual' });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const basic = (name: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}` });
const asViewer = basic('vic', process.env.TEST_UIPAGES_VIEWER!);
const asOperator = basic('olga', process.env.TEST_UIPAGES_OPERATOR!);

/** What a browser makes of an attribute value or text: the numeric references the pages use, undone. */
const unescape = (s: string) => s.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)));

/** The element with this opening-tag fragment, up to its closing tag (the pages do not nest these). */
function element(text: string, opening: string, tag: string): string {
  const start = text.indexOf(opening);
  if (start < 0) throw new Error(`no ${opening} in the page`);
  const end = text.indexOf(`</${tag}>`, start);
  return text.slice(start, end + tag.length + 3);
}

const attr = (fragment: string, name: string) => {
  const m = new RegExp(`\\b${name}="([^"]*)"`).exec(fragment);
  return m ? unescape(m[1]!) : undefined;
};

/** <tr data-backup=ID data-status=S> of the dataset page, in order. */
const backupRows = (text: string) => [...text.matchAll(/<tr data-backup="([^"]+)" data-status="([^"]+)">/g)].map((m) => [m[1], m[2]]);

/** The JSON behind a section's "Raw JSON" toggle. */
const rawJson = (section: string) => JSON.parse(unescape(/<details class="raw"><summary>Raw JSON<\/summary><pre>([\s\S]*?)<\/pre>/.exec(section)![1]!));

beforeAll(async () => {
  pg = await startThrowawayCluster();
  await seedDatabases(pg.url, { shop: 300, notes: 100 });
  await psql(pg.url, `create database "${ODD_DB}"`);
  hub = s3Client();
  const sourceKeys = rgwUser('lifeboat-ui-source');
  source = s3ClientFor(sourceKeys);
  [pgBucket, mirrorBucketName, etcdBucket] = [await createBucket(hub), await createBucket(hub), await createBucket(hub)];
  srcBucket = await createBucket(source);
  work = await mkdtemp(join(tmpdir(), 'lb-ui-'));
  process.env.TEST_UIPAGES_MIRROR_KEY = sourceKeys.accessKeyId;
  process.env.TEST_UIPAGES_MIRROR_SECRET = sourceKeys.secretAccessKey;

  // One real etcd snapshot, and a token file for uploadToken.
  const etcd = await startEtcd(join(work, 'etcd-data'));
  const snapshots = join(work, 'snapshots');
  await mkdir(snapshots);
  try {
    for (let i = 0; i < 20; i++) etcdctl('--endpoints', etcd.endpoint, 'put', `/registry/things/${i}`, `value-${i}`);
    etcdctl('--endpoints', etcd.endpoint, 'snapshot', 'save', join(snapshots, SNAPSHOT));
  } finally {
    etcd.process.kill('SIGKILL');
  }
  await writeFile(join(work, 'server-token'), 'K10abc::server:ui-test-token\n');

  const s3 = s3Env();
  const targets = {
    hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', partSizeMiB: 5, queueSize: 2, capacityBytes: CAPACITY },
    local: { kind: 'dir', path: join(work, 'dir-target') },
  };
  const datasets = [
    { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: pg.url }, target: { name: 'hub', bucket: pgBucket } },
    // Stale within a second of its backup.
    { id: 'pgdir', kind: 'postgres', staleAfterHours: 0.0002, source: { mode: 'direct', url: pg.url }, target: { name: 'local', bucket: 'backups' } },
    {
      id: 'photos', kind: 'bucket',
      source: { endpoint: s3.endpoint, bucket: srcBucket, accessKeyId: '${env:TEST_UIPAGES_MIRROR_KEY}', secretAccessKey: '${env:TEST_UIPAGES_MIRROR_SECRET}' },
      target: { name: 'hub', bucket: mirrorBucketName, prefix: 'rgw/' },
    },
    { id: 'k3s', kind: 'etcd', source: { snapshotDir: snapshots, settleSeconds: 0, uploadToken: true, tokenFile: join(work, 'server-token') }, target: { name: 'hub', bucket: etcdBucket, prefix: 'k3s/' } },
  ];
  config = testConfig({
    targets,
    datasets,
    server: { ui: { restoreTargets: { scratch: { kind: 'postgres', url: 'postgres://postgres@db.example:5432/postgres' }, copy: { kind: 's3', target: 'hub', bucket: 'restored-photos' } } } },
  });

  for (const tick of TICKS) {
    const dump = (await runOnce(config, dumpPostgres, { dataset: 'pg', tick })) as { key: string };
    await runOnce(config, verifyObject, { dataset: 'pg', key: dump.key });
  }
  await runOnce(config, dumpPostgres, { dataset: 'pgdir', tick: TICKS[1] }); // verified by pruneCheck's retention below
  for (let i = 0; i < 5; i++) await source.send(new PutObjectCommand({ Bucket: srcBucket, Key: `img/${i}.jpg`, Body: Buffer.alloc(1000 + i, i) }));
  const mirrored = (await runOnce(config, mirrorBucket, { dataset: 'photos', tick: TICKS[2] })) as { key: string };
  await runOnce(config, verifyObject, { dataset: 'photos', key: mirrored.key });
  await runOnce(config, uploadEtcd, { dataset: 'k3s' });

  // Capacity history as pruneCheck keeps it: one sample 5 days ago, then today's run.
  const seeding = openLocal(config, logger());
  await seeding.storeFor(config.datasets[0]!).putJson('_lifeboat/capacity/hub.json', { target: 'hub', samples: [{ at: new Date(Date.now() - 5 * 86400_000).toISOString(), usedBytes: 100 }] });
  await seeding.close();
  await runOnce(config, pruneCheck, {}); // before the damage below: retention would prune a corrupt copy

  await runOnce(config, dumpPostgres, { dataset: 'pgdir', tick: TICKS[2] }); // after pruneCheck and never verified: pending
  await runOnce(config, drillRestore, { dataset: 'pg' });
  // The middle dump is overwritten and re-verified (corrupt); the oldest is overwritten after its check (changed since verified).
  await hub.send(new PutObjectCommand({ Bucket: pgBucket, Key: `pg/${IDS[1]}/pg_dumpall.sql.gz`, Body: Buffer.from('not a dump any more') }));
  await runOnce(config, verifyObject, { dataset: 'pg', key: `pg/${IDS[1]}/pg_dumpall.sql.gz` }).catch(() => undefined);
  await hub.send(new PutObjectCommand({ Bucket: pgBucket, Key: `pg/${IDS[0]}/pg_dumpall.sql.gz`, Body: Buffer.from('changed after its check') }));

  reader = openLocal(config, logger());
  const app = await openApp(config, logger());
  apps.push(app);
  base = await listen(await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: app.deps }));

  const usersConfig = testConfig({
    targets: { ...targets, down: { kind: 's3', endpoint: 'http://127.0.0.1:1', accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}' } },
    datasets: [...datasets, { id: 'ghost', kind: 'postgres', source: { mode: 'direct', url: pg.url }, target: { name: 'down', bucket: 'nowhere' } }],
    server: {
      ui: {
        users: [{ name: 'olga', password: '${env:TEST_UIPAGES_OPERATOR}', role: 'operator' }, { name: 'vic', password: '${env:TEST_UIPAGES_VIEWER}', role: 'viewer' }],
        sessionSecret: '${env:TEST_UIPAGES_SECRET}',
      },
    },
  });
  const usersApp = await openApp(usersConfig, logger());
  apps.push(usersApp);
  withUsers = await listen(await buildServer({ config: usersConfig, recorder: usersApp.recorder, queues: usersApp.queues, deps: usersApp.deps }));
}, 300_000);

afterAll(async () => {
  for (const s of servers.splice(0)) await s.close();
  await closeApps(apps);
  await reader?.close();
  await pg?.stop();
  for (const b of [pgBucket, mirrorBucketName, etcdBucket]) if (b) await removeBucket(hub, b);
  if (srcBucket) await removeBucket(source, srcBucket);
  hub?.destroy();
  source?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('overview (/)', () => {
  it('has a row per dataset with the status, drill and staleness the API computes', async () => {
    await new Promise((r) => setTimeout(r, 1000)); // pgdir's threshold is 0.72 s
    const page = await get(base, '/');
    expect(page.status).toBe(200);
    expect(page.text).toContain('<title>Overview · Lifeboat</title>');
    const api = (await (await fetch(`${base}/api/datasets`)).json()).datasets as any[];
    const rows = Object.fromEntries(
      api.map((d) => {
        const row = element(page.text, `<tr data-dataset="${d.id}"`, 'tr');
        return [d.id, { stale: attr(row, 'data-stale'), status: attr(element(row, '<td data-field="status"', 'td'), 'data-status'), drill: attr(element(row, '<td data-field="drill"', 'td'), 'data-drill'), row }];
      }),
    );
    expect(Object.keys(rows)).toEqual(['pg', 'pgdir', 'photos', 'k3s']);
    for (const d of api) expect([d.id, rows[d.id].stale, rows[d.id].status]).toEqual([d.id, String(d.stale), d.newest?.status ?? 'none']);
    expect(rows.pg).toMatchObject({ stale: 'false', status: 'verified', drill: 'ok' });
    expect(rows.pgdir).toMatchObject({ stale: 'true', status: 'pending', drill: 'none' });
    expect(rows.photos).toMatchObject({ stale: 'false', status: 'verified', drill: 'none' });
    expect(rows.pgdir.row).toMatch(/class="stale"/);
    expect(rows.pgdir.row).toContain('✗ stale');
    // Links to the dataset and its newest backup; the mirror shows its mirrored bytes (5,010), not its report's size.
    expect(rows.pg.row).toContain('href="/datasets/pg"');
    expect(rows.pg.row).toContain(`href="/backups/pg/${IDS[2]}"`);
    expect(rows.photos.row).toMatch(/title="5,010 bytes">4\.9 KiB<\/span> mirrored/);
    expect(rows.pg.row).toContain('3 backups, 1 corrupt');
    expect(rows.pg.row).toMatch(/scrub: never/);
  });

  it('lists the alerts that would fire now, the same as /api/alerts', async () => {
    const page = await get(base, '/');
    const section = element(page.text, '<section id="alerts">', 'section');
    const shown = [...section.matchAll(/<li data-alert="([^"]+)"/g)].map((m) => m[1]).sort();
    const api = (await (await fetch(`${base}/api/alerts`)).json()).alerts.map((a: any) => a.alert).sort();
    expect(shown).toEqual(api);
    expect(shown).toEqual(expect.arrayContaining(['VerifyFailed', 'TargetDiskHigh', 'TargetFullSoon']));
    expect(section).toContain('1 backup of pg failed verification');
  });

  it('shows each target with a capacity bar, a forecast and an SVG chart of its history', async () => {
    const page = await get(base, '/');
    const targets = element(page.text, '<section id="targets">', 'section');
    const hubPanel = targets.slice(targets.indexOf('<div class="target" data-target="hub">'), targets.indexOf('data-target="local"'));
    expect(hubPanel).toMatch(new RegExp(`<meter min="0" max="${CAPACITY}" value="${CAPACITY}"`));
    expect(hubPanel).toContain('Full now.');
    expect(hubPanel).toMatch(/<svg class="chart" viewBox="0 0 300 80" role="img"/);
    expect(hubPanel).toMatch(/<polyline points="[\d.]+,[\d.]+ [\d.]+,[\d.]+" /); // the sample 5 days ago and today's
    expect(hubPanel).toContain('2 samples');
    const localPanel = targets.slice(targets.indexOf('data-target="local"'));
    expect(localPanel).toContain('no capacity configured');
    expect(localPanel).toContain('<svg class="chart"');
  });

  it('renders with a red notice when a target cannot be read', async () => {
    const page = await get(withUsers, '/', asViewer);
    expect(page.status).toBe(200);
    expect(page.text).toContain('1 of 5 datasets could not be read from their target');
    const ghost = element(page.text, '<tr data-dataset="ghost"', 'tr');
    expect(ghost).toMatch(/class="stale error"/);
    expect(ghost).toMatch(/<span class="problem">target down could not be read: .+<\/span>/);
    expect(element(page.text, '<div class="target" data-target="down">', 'div')).toContain('could not be read');
    // The others are read as usual.
    expect(element(page.text, '<tr data-dataset="pg"', 'tr')).toContain('data-status="verified"');
  });
});

describe('with Redis down', () => {
  it('the pages still render from the targets; the buttons answer 503 naming Redis', async () => {
    const down = openWithRedisDown(config);
    try {
      const at = await listen(await buildServer({ config: down.config, recorder: new MemoryMetricsRecorder(), queues: down.queues, deps: down.deps }));
      const started = Date.now();
      const page = await get(at, '/');
      expect(page.status).toBe(200);
      expect(element(page.text, '<tr data-dataset="pg"', 'tr')).toContain('data-status="verified"');
      expect((await get(at, `/backups/pg/${IDS[2]}`)).status).toBe(200);
      const action = await fetch(`${at}/api/actions/verify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ dataset: 'pg' }) });
      expect(action.status).toBe(503);
      expect(await action.json()).toMatchObject({ field: 'redis' });
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await down.close();
    }
  });
});

describe('dataset page (/datasets/:id)', () => {
  it('lists every backup with its status, sha256, verification history and drill, each linking to its page', async () => {
    const page = await get(base, '/datasets/pg');
    expect(page.status).toBe(200);
    expect(backupRows(page.text)).toEqual([[IDS[2], 'verified'], [IDS[1], 'corrupt'], [IDS[0], 'changed-since-verified']]);
    const api = (await (await fetch(`${base}/api/datasets/pg/backups?limit=1`)).json()).backups[0];
    const newest = element(page.text, `<tr data-backup="${IDS[2]}"`, 'tr');
    expect(newest).toContain(`<a href="/backups/pg/${IDS[2]}">${IDS[2]}</a>`);
    expect(newest).toContain(`<code title="${api.sha256}">${api.sha256.slice(0, 12)}</code>`);
    expect(newest).toMatch(/1 check: <span class="yes">✓ upload <time/);
    expect(newest).toMatch(/class="status status-ok" data-status="ok">✓ ok/);
    const corrupt = element(page.text, `<tr data-backup="${IDS[1]}"`, 'tr');
    expect(corrupt).toMatch(/2 checks: <span class="no" title="[^"]+">✗ upload .*<span class="yes">✓ upload/);
    expect(corrupt).toContain('class="status status-corrupt" data-status="corrupt"');
    expect(page.text).toContain('1–3 of 3');
    expect(page.text).not.toContain('rel="next"');
    expect(page.text).not.toContain('rel="prev"');
  });

  it('pages with prev/next links that keep the filter and sort', async () => {
    const first = await get(base, '/datasets/pg?limit=2');
    expect(first.text).toContain('1–2 of 3');
    expect(backupRows(first.text).map((r) => r[0])).toEqual([IDS[2], IDS[1]]);
    const next = attr(element(first.text, '<a rel="next"', 'a'), 'href')!;
    expect(next).toBe('/datasets/pg?limit=2&offset=2');
    const second = await get(base, next);
    expect(second.text).toContain('3–3 of 3');
    expect(backupRows(second.text).map((r) => r[0])).toEqual([IDS[0]]);
    expect(second.text).not.toContain('rel="next"');
    expect(attr(element(second.text, '<a rel="prev"', 'a'), 'href')).toBe('/datasets/pg?limit=2');

    const bySize = await get(base, '/datasets/pg?sort=size&order=asc&limit=1');
    const apiOrder = (await (await fetch(`${base}/api/datasets/pg/backups?sort=size&order=asc`)).json()).backups.map((b: any) => b.id);
    expect(backupRows(bySize.text).map((r) => r[0])).toEqual([apiOrder[0]]);
    const bySizeNext = attr(element(bySize.text, '<a rel="next"', 'a'), 'href')!;
    expect(bySizeNext).toBe('/datasets/pg?sort=size&order=asc&limit=1&offset=1');
    expect(backupRows((await get(base, bySizeNext)).text).map((r) => r[0])).toEqual([apiOrder[1]]);
    // The form shows what is applied.
    const form = element(bySize.text, '<form id="filter"', 'form');
    expect(form).toContain('<option value="size" selected>');
    expect(form).toContain('<option value="asc" selected>');
    expect(form).toContain('name="limit" min="1" max="500" value="1"');
  });

  it('filters by status, as the form submits it', async () => {
    const corrupt = await get(base, '/datasets/pg?status=corrupt&sort=time&order=desc&limit=50');
    expect(backupRows(corrupt.text)).toEqual([[IDS[1], 'corrupt']]);
    expect(corrupt.text).toContain('1–1 of 1');
    expect(element(corrupt.text, '<select name="status">', 'select')).toContain('<option value="corrupt" selected>');
    expect(backupRows((await get(base, '/datasets/pg?status=changed-since-verified')).text)).toEqual([[IDS[0], 'changed-since-verified']]);
    // The form's "any" sends status= (empty), which means no filter.
    expect(backupRows((await get(base, '/datasets/pg?status=')).text)).toHaveLength(3);
    const none = await get(base, '/datasets/pg?status=pending');
    expect(none.text).toContain('0 of 0');
    expect(none.text).toContain('No backups on this page match.');
  });

  it('answers a bad query with a readable 400 page naming the field, an unknown dataset with 404', async () => {
    for (const [query, field] of [['limit=0', 'limit'], ['limit=501', 'limit'], ['sort=name', 'sort'], ['order=up', 'order'], ['status=fine', 'status'], ['offset=-1', 'offset'], ['colour=red', 'colour']]) {
      const page = await get(base, `/datasets/pg?${query}`);
      expect([query, page.status]).toEqual([query, 400]);
      expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(page.text).toContain('<title>Bad request · Lifeboat</title>');
      expect(page.text).toContain(`Check <code>${field}</code>.`);
      expect(page.text).toMatch(new RegExp(`<p class="problem" role="alert">${field}: `));
    }
    const unknown = await get(base, '/datasets/nope');
    expect(unknown.status).toBe(404);
    expect(unknown.text).toContain('dataset &#34;nope&#34; is not in the config (known: pg, pgdir, photos, k3s)');
  });

  it('shows a mirror dataset\'s newest report: counts, bytes, failures and the sample check', async () => {
    const page = await get(base, '/datasets/photos');
    expect(backupRows(page.text)).toEqual([[IDS[2], 'verified']]);
    const section = element(page.text, '<section id="mirror-report">', 'section');
    expect(section).toContain(`<a href="/backups/photos/${IDS[2]}">${IDS[2]}</a>`);
    expect(section).toContain('data-status="ok">✓ ok</span> · deletion keep');
    expect(section).toMatch(/<th scope="row">Source<\/th><td>5<\/td><td><span title="5,010 bytes">4\.9 KiB<\/span><\/td>/);
    expect(section).toMatch(/<th scope="row">Copied<\/th><td>5<\/td>/);
    expect(section).toMatch(/<th scope="row">Failed<\/th><td>0<\/td>/);
    expect(section).toContain('✓ source and mirror match</span> (0 missing, 0 of another size, 0 extra)');
    const report = await storedJson('photos', REPORT_KEY);
    expect(section).toContain(`Sample check: ${report.verification.sample.checked} of ${report.verification.sample.requested} objects compared by sha256`);
  });

  it('lists an etcd dataset\'s snapshots and whether the server token is on the target', async () => {
    const page = await get(base, '/datasets/k3s');
    expect(page.status).toBe(200);
    expect(backupRows(page.text).map((r) => r[0])).toEqual([SNAPSHOT]);
    expect(page.text).toMatch(/<p id="server-token" data-token="present">✓ The k3s server token is on the target \(<code>k3s\/token\/k3s\/server-token<\/code>/);
    const snapshotPage = await get(base, `/backups/k3s/${SNAPSHOT}`);
    expect(snapshotPage.status).toBe(200);
    expect(element(snapshotPage.text, '<code id="restore-command">', 'code')).toContain(`lifeboat restore k3s --backup ${SNAPSHOT} --to-dir ./etcd-restore`);
  });
});

describe('backup page (/backups/:dataset/:id)', () => {
  it('renders the manifest, verify.json and drill.json as tables, each with its raw JSON', async () => {
    const page = await get(base, `/backups/pg/${IDS[2]}`);
    expect(page.status).toBe(200);
    expect(page.text).toContain(`<title>pg ${IDS[2]} · Lifeboat</title>`);
    expect(element(page.text, '<section id="summary"', 'section')).toMatch(/^<section id="summary" data-status="verified">/);
    const manifest = await storedJson('pg', `pg/${IDS[2]}/manifest.json`);
    for (const [id, key] of [['manifest', 'manifest.json'], ['verify', 'verify.json'], ['drill', 'drill.json']]) {
      const section = element(page.text, `<section id="${id}">`, 'section');
      expect(section, id).toContain('<table class="record">');
      expect(rawJson(section), id).toEqual(await storedJson('pg', `pg/${IDS[2]}/${key}`));
    }
    const manifestSection = element(page.text, '<section id="manifest">', 'section');
    // Nested objects flattened to dotted keys, sizes in bytes and KiB, arrays of objects as tables.
    expect(manifestSection).toContain(`<tr><th scope="row">artifact.sha256</th><td>${manifest.artifact.sha256}</td></tr>`);
    expect(manifestSection).toMatch(new RegExp(`<th scope="row">artifact\\.size</th><td>${manifest.artifact.size} \\(`));
    expect(element(page.text, '<section id="verify">', 'section')).toMatch(/<th scope="row">checks<\/th><td><div class="scroll"><table class="nested"><thead><tr><th scope="col">name<\/th><th scope="col">ok<\/th><th scope="col">detail<\/th>/);
    expect(page.text).not.toContain('<section id="report">'); // only mirrors have one
  });

  it('a corrupted backup shows corrupt and its failed check', async () => {
    const page = await get(base, `/backups/pg/${IDS[1]}`);
    expect(element(page.text, '<section id="summary"', 'section')).toMatch(/^<section id="summary" data-status="corrupt">/);
    expect(page.text).toContain('class="status status-corrupt" data-status="corrupt">✗ corrupt</span>');
    expect(rawJson(element(page.text, '<section id="verify">', 'section')).ok).toBe(false);
    expect(element(page.text, '<section id="drill">', 'section')).toContain('No restore drill of this backup.');
  });

  it('links a presigned download of the exact bytes on S3', async () => {
    const page = await get(base, `/backups/pg/${IDS[2]}`);
    const href = attr(element(page.text, '<a id="download"', 'a'), 'href')!;
    expect(new URL(href).host).toBe(new URL(s3Env().endpoint).host);
    const res = await fetch(href);
    expect(res.status).toBe(200);
    const manifest = await storedJson('pg', `pg/${IDS[2]}/manifest.json`);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(manifest.artifact.sha256);
  });

  it('links the streamed download on a dir target, whose bytes match the manifest', async () => {
    const page = await get(base, `/backups/pgdir/${IDS[2]}`);
    const link = element(page.text, '<a id="download"', 'a');
    expect(attr(link, 'href')).toBe(`/api/backups/pgdir/${IDS[2]}/download`);
    expect(attr(link, 'download')).toBe('pg_dumpall.sql.gz');
    const res = await fetch(`${base}${attr(link, 'href')}`);
    expect(res.status).toBe(200);
    const manifest = await storedJson('pgdir', `pgdir/${IDS[2]}/manifest.json`);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(manifest.artifact.sha256);
    expect(element(page.text, '<section id="verify">', 'section')).toContain('Not verified yet');
    expect(backupRows((await get(base, '/datasets/pgdir')).text)).toEqual([[IDS[2], 'pending'], [IDS[1], 'verified']]);
  });

  it('shows the exact restore command with a copy button', async () => {
    const page = await get(base, `/backups/pg/${IDS[2]}`);
    expect(page.text).toContain(`<code id="restore-command">lifeboat restore pg --backup ${IDS[2]} --to postgres://postgres@HOST:5432/postgres</code> <button type="button" id="copy-restore" data-copy="restore-command">Copy</button>`);
    const mirror = await get(base, `/backups/photos/${IDS[2]}`);
    expect(element(mirror.text, '<code id="restore-command">', 'code')).toBe(`<code id="restore-command">lifeboat restore photos --backup ${IDS[2]} --to-target hub --to-bucket DESTINATION-BUCKET</code>`);
  });

  it('a mirror backup shows its report as a table with the raw JSON', async () => {
    const page = await get(base, `/backups/photos/${IDS[2]}`);
    const section = element(page.text, '<section id="report">', 'section');
    expect(section).toContain('<table class="record">');
    expect(section).toContain('<tr><th scope="row">source.count</th><td>5</td></tr>');
    expect(rawJson(section)).toEqual(await storedJson('photos', REPORT_KEY));
  });

  it('answers a bad id with 400, an unknown backup with 404, a target that is down with 502 naming it', async () => {
    expect((await get(base, '/backups/pg/..%2F..%2Fetc')).status).toBe(400);
    const missing = await get(base, '/backups/pg/20991122T020000Z');
    expect(missing.status).toBe(404);
    expect(missing.text).toContain('dataset &#34;pg&#34; has no backup &#34;20991122T020000Z&#34;');
    const down = await get(withUsers, `/backups/ghost/${IDS[2]}`, asViewer);
    expect(down.status).toBe(502);
    expect(down.text).toContain('<title>The target could not be read · Lifeboat</title>');
    expect(down.text).toMatch(/<p class="problem" role="alert">.*127\.0\.0\.1:1/);
  });
});

describe('actions and roles', () => {
  it('the operator (anonymous on loopback) gets the action buttons, the dialog and the job panel', async () => {
    const overview = await get(base, '/');
    const pgRow = element(overview.text, '<tr data-dataset="pg"', 'tr');
    for (const action of ['backup', 'verify', 'drill']) expect(pgRow).toContain(`data-action="${action}" data-dataset="pg"`);
    expect(attr(element(pgRow, 'data-action="backup"', 'button'), 'data-confirm')).toMatch(/^Back up pg now: dumps its PostgreSQL server with pg_dumpall into a new backup on target hub, bucket /);
    expect(overview.text).toContain('<output id="job" aria-live="polite"></output>');
    expect(overview.text).toMatch(/<dialog id="confirm"[^>]*><form method="dialog">.*<p class="what"><\/p>/s);
    expect(overview.text).toContain('<button value="cancel" autofocus>Cancel</button> <button value="confirm" class="danger">Confirm</button>');
    expect(overview.text).toContain('<span class="user" data-role="operator">anonymous (operator)</span>');
    // On a backup page Verify checks that backup.
    const backup = await get(base, `/backups/pg/${IDS[1]}`);
    const verify = element(backup.text, 'data-action="verify"', 'button');
    expect(verify).toContain(`data-dataset="pg" data-backup="${IDS[1]}"`);
    expect(attr(verify, 'data-confirm')).toContain(`Verify backup ${IDS[1]} of pg now`);
    expect(element((await get(base, '/datasets/photos')).text, 'data-action="backup"', 'button')).toContain('Mirror photos now: copies new and changed objects of bucket');
  });

  it('the restore form lists only the configured destinations of the backup\'s kind, and the databases', async () => {
    const page = await get(base, `/backups/pg/${IDS[2]}`);
    const form = element(page.text, '<form id="restore"', 'form');
    const into = element(form, '<select name="into"', 'select');
    expect([...into.matchAll(/<option value="([^"]+)"/g)].map((m) => m[1])).toEqual(['scratch']);
    expect(into).toContain('data-url="postgres://postgres@db.example:5432/postgres"');
    const manifest = await storedJson('pg', `pg/${IDS[2]}/manifest.json`);
    const expected = manifest.source.databases.filter((d: string) => !['postgres', 'template0', 'template1'].includes(d));
    expect(expected).toEqual(expect.arrayContaining(['shop', 'notes', ODD_DB]));
    expect(JSON.parse(attr(form, 'data-databases')!)).toEqual(expected);
    expect([...element(form, '<select name="database"', 'select').matchAll(/<option value="([^"]+)"/g)].map((m) => unescape(m[1]!))).toEqual(expected);
    for (const scope of ['whole', 'database']) expect(form).toMatch(new RegExp(`<input type="radio" name="scope" value="${scope}"`));
    expect(form).toContain('<input name="as"');
    expect(form).toContain('<button type="submit"');

    const mirror = element((await get(base, `/backups/photos/${IDS[2]}`)).text, '<form id="restore"', 'form');
    expect(mirror).toContain('<option value="copy" data-target="hub" data-bucket="restored-photos">copy: bucket restored-photos on target hub</option>');
    expect(mirror).not.toContain('scratch');
    expect(mirror).not.toContain('name="scope"');
    // Snapshots are restored with the CLI only.
    expect((await get(base, `/backups/k3s/${SNAPSHOT}`)).text).not.toContain('id="restore"');
  });

  it('an operator without restore destinations is told how to add them', async () => {
    const page = await get(withUsers, `/backups/pg/${IDS[2]}`, asOperator);
    expect(page.status).toBe(200);
    expect(page.text).not.toContain('<form id="restore"');
    expect(page.text).toContain('add <code>server.ui.restoreTargets</code> to the config');
    expect(page.text).toContain('data-action="verify"');
    expect(page.text).toContain('<span class="user" data-role="operator">olga (operator)</span>');
  });

  it('a viewer sees no action buttons, no restore form, no dialog and no job panel', async () => {
    for (const path of ['/', '/datasets/pg', `/backups/pg/${IDS[2]}`, `/backups/photos/${IDS[2]}`]) {
      const page = await get(withUsers, path, asViewer);
      expect([path, page.status]).toEqual([path, 200]);
      expect(page.text).toContain('<span class="user" data-role="viewer">vic (viewer)</span>');
      for (const hidden of ['data-action', 'id="restore"', 'restoreTargets', 'id="confirm"', 'id="job"']) expect(page.text, `${path}: ${hidden}`).not.toContain(hidden);
      // What a viewer may read is there.
      expect(page.text).toMatch(/data-status="/);
    }
    // Not logged in: the login page.
    const anonymous = await get(withUsers, '/');
    expect(anonymous.status).toBe(302);
    expect(anonymous.headers.get('location')).toBe('/login?next=%2F');
  });

  it('a session user gets a log-out form carrying the CSRF cookie, and logging out works', async () => {
    const login = await fetch(`${withUsers}/login`, {
      method: 'POST', redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ name: 'vic', password: process.env.TEST_UIPAGES_VIEWER!, next: '/' }).toString(),
    });
    expect(login.status).toBe(303);
    const jar = new Map(login.headers.getSetCookie().map((c) => c.split(';')[0]!.split('=') as [string, string]));
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const page = await get(withUsers, '/', { cookie });
    expect(page.status).toBe(200);
    const form = element(page.text, '<form class="logout"', 'form');
    expect(form).toContain('method="post" action="/logout"');
    expect(attr(form, 'value')).toBe(decodeURIComponent(jar.get(CSRF_COOKIE)!));
    // Basic auth has nothing to log out of.
    expect((await get(withUsers, '/', asViewer)).text).not.toContain('class="logout"');
    const out = await fetch(`${withUsers}/logout`, { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: attr(form, 'value')! }).toString() });
    expect(out.status).toBe(303);
    expect(out.headers.get('location')).toBe('/login');
  });
});

describe('what every page is made of', () => {
  const pages = () => ['/', '/datasets/pg', '/datasets/pgdir', '/datasets/photos', '/datasets/k3s', `/backups/pg/${IDS[2]}`, `/backups/pgdir/${IDS[2]}`, `/backups/photos/${IDS[2]}`, `/backups/k3s/${SNAPSHOT}`, '/datasets/pg?limit=0'];

  it('names from the data are escaped, never markup', async () => {
    const page = await get(base, `/backups/pg/${IDS[2]}`);
    expect(page.text).not.toContain(ODD_DB);
    expect(page.text).toContain('x&#60;b&#62;&#38;y');
    expect(page.text).toContain(`<option value="x&#60;b&#62;&#38;y">x&#60;b&#62;&#38;y</option>`);
    expect(element(page.text, '<form id="restore"', 'form')).toMatch(/data-databases="\[&#34;/);
  });

  it('has the CSP header, no inline script or style, a title, and no-store', async () => {
    for (const path of pages()) {
      const page = await get(base, path);
      expect(page.headers.get('content-security-policy'), path).toBe(CONTENT_SECURITY_POLICY);
      expect(CONTENT_SECURITY_POLICY).toBe("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'");
      expect(page.headers.get('cache-control'), path).toBe('no-store');
      expect(page.headers.get('content-type'), path).toBe('text/html; charset=utf-8');
      expect(page.text, path).toMatch(/<title>[^<]+ · Lifeboat<\/title>/);
      const scripts = [...page.text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
      expect(scripts.map((m) => [m[1]!.trim(), m[2]]), path).toEqual([[expect.stringMatching(/^src="\/ui\/assets\/app\.js\?v=[0-9a-f]{12}" defer$/), '']]);
      expect(page.text, path).not.toMatch(/\sstyle=|<style|\son[a-z]+=/i);
      expect(page.text, path).toContain('<a href="/queues">Queues</a>');
    }
  });

  it('serves the two assets with their types, cacheable under their versioned URL', async () => {
    const page = await get(base, '/');
    for (const [name, type] of [['app.js', 'text/javascript; charset=utf-8'], ['style.css', 'text/css; charset=utf-8']] as const) {
      const href = new RegExp(`"(/ui/assets/${name.replace('.', '\\.')}\\?v=[0-9a-f]{12})"`).exec(page.text)![1]!;
      const res = await fetch(`${base}${href}`);
      expect([name, res.status, res.headers.get('content-type')]).toEqual([name, 200, type]);
      expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect((await res.text()).length).toBeGreaterThan(1000);
      expect((await fetch(`${base}/ui/assets/${name}`)).headers.get('cache-control')).toBe('no-cache');
    }
    for (const name of ['routes.ts', '..%2Froutes.ts', 'nope.js']) expect((await fetch(`${base}/ui/assets/${name}`)).status).toBe(404);
  });

  it('no page or asset refers to another host, except the presigned download and the S3 endpoint in the records', async () => {
    const allowed = new Set([new URL(base).host, new URL(s3Env().endpoint).host]);
    const texts = await Promise.all(pages().map(async (path) => unescape((await get(base, path)).text)));
    texts.push(await (await fetch(`${base}/ui/assets/app.js`)).text(), await (await fetch(`${base}/ui/assets/style.css`)).text());
    const urls = texts.flatMap((t) => [...t.matchAll(/https?:\/\/[^\s"'<>)]+/g)].map((m) => m[0]));
    expect(urls.length).toBeGreaterThan(0); // the presigned link at least
    expect(urls.filter((u) => !allowed.has(new URL(u).host))).toEqual([]);
    expect(texts.slice(-2).join('')).not.toMatch(/https?:\/\/|@import|url\(/);
  });
});
