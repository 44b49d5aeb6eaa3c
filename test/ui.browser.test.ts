import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allFunctions } from '../functions/index.js';
import { dumpPostgres } from '../functions/dumpPostgres.js';
import { mirrorBucket } from '../functions/mirrorBucket.js';
import { verifyObject } from '../functions/verifyObject.js';
import type { Config } from '../lib/config/schema.js';
import { openApp, openLocal, type App } from '../lib/plumbing/app.js';
import { startThrowawayCluster, type ThrowawayCluster } from '../lib/postgres/cluster.js';
import { buildServer } from '../lib/server.js';
import { DESKTOP, launchChromium, openPage, overflowsHorizontally, PHONE, screenshot } from './browser.js';
import { closeApps, createBucket, ITEMS_FINGERPRINT, logger, psql, removeBucket, rgwUser, s3Client, s3ClientFor, s3Env, seedDatabases, testConfig, withDatabase , runOnce } from './helpers.js';

// The web UI in Debian's Chromium (playwright-core), on real services: a throwaway PostgreSQL dumped to
// real RGW and to a dir target, a real mirror, and `serve` with real BullMQ workers on real Redis, so
// every button runs the real function. Screenshots go to test-results/.

process.env.TEST_BROWSER_OPERATOR = 'operator-password';
process.env.TEST_BROWSER_VIEWER = 'viewer-password';
const IDS = ['20261120T020000Z', '20261121T020000Z'];

let source: ThrowawayCluster;
let scratch: ThrowawayCluster;
let hub: S3Client;
let mirrorSource: S3Client;
let pgBucket: string;
let mirrorHubBucket: string;
let srcBucket: string;
let config: Config;
let app: App;
let server: FastifyInstance;
let base: string;
let browser: Browser;
const apps: App[] = [];

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const readHub = async (bucket: string, key: string) => Buffer.from(await (await hub.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());

beforeAll(async () => {
  [source, scratch] = await Promise.all([startThrowawayCluster(), startThrowawayCluster()]);
  await seedDatabases(source.url, { shop: 2000, notes: 300 });
  // About 12 MiB that gzip cannot shrink much: a restore long enough for a few progress reports.
  await psql(withDatabase(source.url, 'notes'), 'create table noise as select g as id, md5(random()::text) || md5(random()::text) as hex from generate_series(1, 400000) g');
  hub = s3Client();
  const keys = rgwUser('lifeboat-browser-source');
  mirrorSource = s3ClientFor(keys);
  [pgBucket, mirrorHubBucket, srcBucket] = await Promise.all([createBucket(hub), createBucket(hub), createBucket(mirrorSource)]);
  process.env.TEST_BROWSER_MIRROR_KEY = keys.accessKeyId;
  process.env.TEST_BROWSER_MIRROR_SECRET = keys.secretAccessKey;
  const s3 = s3Env();
  config = testConfig({
    targets: { hub: { kind: 's3', endpoint: s3.endpoint, accessKeyId: '${env:TEST_S3_ACCESS_KEY}', secretAccessKey: '${env:TEST_S3_SECRET_KEY}', capacityBytes: 1024 ** 3 } },
    datasets: [
      { id: 'pg', kind: 'postgres', source: { mode: 'direct', url: source.url }, target: { name: 'hub', bucket: pgBucket } },
      {
        id: 'photos', kind: 'bucket',
        source: { endpoint: s3.endpoint, bucket: srcBucket, accessKeyId: '${env:TEST_BROWSER_MIRROR_KEY}', secretAccessKey: '${env:TEST_BROWSER_MIRROR_SECRET}' },
        target: { name: 'hub', bucket: mirrorHubBucket, prefix: 'rgw/' },
      },
    ],
    server: {
      ui: {
        users: [
          { name: 'olga', password: '${env:TEST_BROWSER_OPERATOR}', role: 'operator' },
          { name: 'vic', password: '${env:TEST_BROWSER_VIEWER}', role: 'viewer' },
        ],
        restoreTargets: { scratch: { kind: 'postgres', url: scratch.url } },
      },
    },
  });
  // The older dump is verified; the newer one is not yet (pending until "verify now").
  const first = await runOnce(config, dumpPostgres, { dataset: 'pg', tick: '2026-11-20T02:00:00Z' });
  await runOnce(config, verifyObject, { dataset: 'pg', key: first.key });
  await runOnce(config, dumpPostgres, { dataset: 'pg', tick: '2026-11-21T02:00:00Z' });
  for (let i = 0; i < 4; i++) await mirrorSource.send(new PutObjectCommand({ Bucket: srcBucket, Key: `img/${i}.jpg`, Body: Buffer.alloc(3000 + i, i) }));
  const mirrored = await runOnce(config, mirrorBucket, { dataset: 'photos', tick: '2026-11-21T02:00:00Z' });
  await runOnce(config, verifyObject, { dataset: 'photos', key: mirrored.key });

  // Ten days of capacity samples as pruneCheck keeps them, growing 12 MiB a day: the panel's chart and forecast.
  const day = 86400_000;
  const samples = Array.from({ length: 10 }, (_, i) => ({ at: new Date(Date.now() - (9 - i) * day).toISOString(), usedBytes: (300 + 12 * i) * 1024 ** 2 }));
  const deps = openLocal(config, logger());
  await deps.storeFor(config.datasets[0]!).putJson('_lifeboat/capacity/hub.json', { target: 'hub', samples });
  await deps.close();

  app = await openApp(config, logger(), { functions: allFunctions });
  apps.push(app);
  await app.startWorkers();
  server = await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: app.deps });
  await server.listen({ port: 0, host: '127.0.0.1' });
  base = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  browser = await launchChromium();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await closeApps(apps);
  await Promise.all([source?.stop(), scratch?.stop()]);
  for (const b of [pgBucket, mirrorHubBucket]) if (b) await removeBucket(hub, b);
  if (srcBucket) await removeBucket(mirrorSource, srcBucket);
  hub?.destroy();
  mirrorSource?.destroy();
});

async function logIn(page: Page, name: string, password: string, path = '/'): Promise<void> {
  await page.goto(path);
  await page.waitForURL(/\/login/);
  await page.fill('input[name=name]', name);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL((url) => url.pathname === path), page.click('button[type=submit]')]);
}

/** Clicks an action, checks the confirmation names `what`, confirms, and waits for the job panel's end state. */
async function confirmAndWait(page: Page, click: () => Promise<void>, what: RegExp): Promise<{ state: string; text: string; seen: string[] }> {
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as unknown as { jobStates: string[] }).jobStates = seen;
    new MutationObserver(() => {
      const job = document.querySelector('#job');
      if (job) seen.push(`${job.getAttribute('data-state')}: ${job.textContent}`);
    }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });
  await click();
  const dialog = page.locator('dialog#confirm');
  await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(true);
  expect(await dialog.locator('.what').innerText()).toMatch(what);
  await dialog.locator('button[value=confirm]').click();
  const job = page.locator('#job[data-state=completed], #job[data-state=failed], #job[data-state=error]');
  await job.waitFor({ timeout: 120_000 });
  return { state: (await job.getAttribute('data-state'))!, text: await job.innerText(), seen: await page.evaluate(() => (window as unknown as { jobStates: string[] }).jobStates) };
}

const statusOf = (page: Page, dataset: string) => page.locator(`tr[data-dataset="${dataset}"] td[data-field=status]`).getAttribute('data-status');

describe('the web UI in Chromium', () => {
  it('the overview shows each dataset and the target, at 1280 px and at phone width, with no request to another host', async () => {
    const { page, context, foreignRequests } = await openPage(browser, base);
    try {
      // The login page has the UI's stylesheet before anyone is logged in.
      await page.goto('/');
      await page.waitForURL(/\/login\?next=%2F$/);
      expect(await page.locator('header.top').evaluate((el) => getComputedStyle(el).display)).toBe('flex');
      await screenshot(page, 'login-1280');
      await logIn(page, 'olga', 'operator-password');
      expect(await page.locator('tr[data-dataset]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-dataset')))).toEqual(['pg', 'photos']);
      expect(await statusOf(page, 'pg')).toBe('pending');
      expect(await statusOf(page, 'photos')).toBe('verified');
      expect(await page.locator('tr[data-dataset="pg"]').getAttribute('data-stale')).toBe('false');
      const panel = await page.locator('#targets [data-target="hub"]').innerText();
      expect(panel).toMatch(/408\.0 MiB of 1\.0 GiB/);
      expect(panel).toMatch(/full in 51(\.\d)? days|51(\.\d)? days/);
      expect(await page.locator('#targets [data-target="hub"] svg').count()).toBeGreaterThan(0);
      await screenshot(page, 'overview-1280');
      await page.setViewportSize(PHONE);
      expect(await overflowsHorizontally(page)).toBe(false);
      await screenshot(page, 'overview-phone');
      // Bull Board: linked, behind the same login, and offline-friendly.
      await page.setViewportSize(DESKTOP);
      await Promise.all([page.waitForURL(/\/queues/), page.click('a[href="/queues"]')]);
      // Its own API answered through the same session: the queues are listed.
      await page.getByText('restoreBackup').first().waitFor();
      expect(await page.title()).toBe('Lifeboat queues');
      expect(foreignRequests).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('opens a backup from its dataset page, shows its records, copies the restore command and downloads it (sha256 as in the manifest)', async () => {
    const { page, context, foreignRequests } = await openPage(browser, base);
    try {
      await logIn(page, 'olga', 'operator-password', '/datasets/pg');
      expect(await page.locator('#backups tr[data-backup]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-backup')))).toEqual([IDS[1], IDS[0]]);
      await screenshot(page, 'dataset-1280');
      await page.setViewportSize(PHONE);
      expect(await overflowsHorizontally(page)).toBe(false);
      await screenshot(page, 'dataset-phone');
      await page.setViewportSize(DESKTOP);

      await Promise.all([page.waitForURL(new RegExp(`/backups/pg/${IDS[0]}$`)), page.locator(`#backups tr[data-backup="${IDS[0]}"] a`).first().click()]);
      expect(await page.locator('#summary').getAttribute('data-status')).toBe('verified');
      const manifest = JSON.parse((await readHub(pgBucket, `pg/${IDS[0]}/manifest.json`)).toString());
      expect(await page.locator('#manifest table').innerText()).toContain(manifest.artifact.sha256);
      expect(await page.locator('#verify table').first().innerText()).toMatch(/upload/);
      expect(JSON.parse(await page.locator('#manifest details.raw pre').textContent() ?? '')).toEqual(manifest);

      const command = await page.locator('#restore-command').innerText();
      expect(command).toBe(`lifeboat restore pg --backup ${IDS[0]} --to postgres://postgres@HOST:5432/postgres`);
      await page.click('#copy-restore');
      expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(command);

      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
      expect(sha256(await readFile((await download.path())!))).toBe(manifest.artifact.sha256);
      expect(download.suggestedFilename()).toBe('pg_dumpall.sql.gz');
      // The presigned URL is the only request that leaves the server: the bytes come from the hub.
      expect(foreignRequests.every((url) => url.startsWith(s3Env().endpoint))).toBe(true);
      await screenshot(page, 'backup-1280');
      await page.setViewportSize(PHONE);
      expect(await overflowsHorizontally(page)).toBe(false);
      await screenshot(page, 'backup-phone');
    } finally {
      await context.close();
    }
  });

  it('a mirror\'s dataset page shows its report', async () => {
    const { page, context } = await openPage(browser, base);
    try {
      await logIn(page, 'olga', 'operator-password', '/datasets/photos');
      expect(await page.locator('#mirror-report').innerText()).toMatch(/4\b/);
    } finally {
      await context.close();
    }
  });

  it('"verify now" runs verifyObject on the worker, and the pending backup turns verified on the page', async () => {
    const { page, context } = await openPage(browser, base);
    try {
      await logIn(page, 'olga', 'operator-password');
      const { state, seen } = await confirmAndWait(page, () => page.click('tr[data-dataset="pg"] button[data-action=verify]'), /pg/);
      expect(state).toBe('completed');
      expect(seen.some((s) => /^(waiting|active)/.test(s))).toBe(true);
      await expect.poll(() => statusOf(page, 'pg'), { timeout: 15_000 }).toBe('verified');
    } finally {
      await context.close();
    }
  });

  it('restores a whole backup into the configured scratch server from the browser, with progress, and the rows are there', async () => {
    const { page, context } = await openPage(browser, base);
    try {
      await logIn(page, 'olga', 'operator-password', `/backups/pg/${IDS[0]}`);
      await page.selectOption('#restore select[name=into]', 'scratch');
      await page.check('#restore input[name=scope][value=whole]');
      const { state, text, seen } = await confirmAndWait(page, () => page.click('#restore [type=submit]'), /scratch[\s\S]*shop[\s\S]*notes|scratch[\s\S]*notes[\s\S]*shop/);
      expect(state, text).toBe('completed');
      // Seen while it ran (the panel polls each second), and the last report kept at the end.
      expect(seen.some((s) => /^active: .*(verifying|restoring) [\d.]+ [KM]iB of [\d.]+ MiB \(\d+%\)/.test(s)), seen.join('\n')).toBe(true);
      expect(text).toMatch(/restoring [\d.]+ MiB of [\d.]+ MiB \(100%\)/);
      await screenshot(page, 'restore-done-1280');
      for (const db of ['shop', 'notes']) {
        expect(await psql(withDatabase(scratch.url, db), ITEMS_FINGERPRINT)).toBe(await psql(withDatabase(source.url, db), ITEMS_FINGERPRINT));
      }
    } finally {
      await context.close();
    }
  });

  it('a corrupted backup turns red after "verify now"', async () => {
    const key = `pg/${IDS[1]}/pg_dumpall.sql.gz`;
    await hub.send(new PutObjectCommand({ Bucket: pgBucket, Key: key, Body: Buffer.from('rotten bytes') }));
    const { page, context } = await openPage(browser, base);
    try {
      await logIn(page, 'olga', 'operator-password');
      const { state } = await confirmAndWait(page, () => page.click('tr[data-dataset="pg"] button[data-action=verify]'), /pg/);
      expect(state).toBe('failed');
      expect(await page.locator('#job').innerText()).toMatch(/sha256|corrupt|does not match/i);
      await expect.poll(() => statusOf(page, 'pg'), { timeout: 15_000 }).toBe('corrupt');
      // Red, and not by colour alone: the badge says so too.
      const badge = page.locator('tr[data-dataset="pg"] td[data-field=status] .status-corrupt');
      expect(await badge.innerText()).toMatch(/corrupt/i);
      const [r, g] = await badge.evaluate((el) => (getComputedStyle(el).color.match(/\d+/g) ?? []).map(Number));
      expect(r!).toBeGreaterThan(g! + 60);
      expect(await page.locator('#alerts [data-alert="VerifyFailed"]').count()).toBe(1);
      await screenshot(page, 'overview-corrupt-1280');
    } finally {
      await context.close();
    }
  });

  it('a viewer sees no action and gets 403 posting one; an operator\'s POST without the CSRF token is refused', async () => {
    const viewer = await openPage(browser, base);
    const operator = await openPage(browser, base);
    try {
      await logIn(viewer.page, 'vic', 'viewer-password');
      expect(await viewer.page.locator('tr[data-dataset]').count()).toBe(2);
      expect(await viewer.page.locator('[data-action]').count()).toBe(0);
      await viewer.page.goto(`/backups/pg/${IDS[0]}`);
      expect(await viewer.page.locator('#restore').count()).toBe(0);
      const post = (page: Page, withToken: boolean) =>
        page.evaluate(async (withToken) => {
          const token = document.cookie.split('; ').find((c) => c.startsWith('lifeboat_csrf='))?.split('=')[1];
          const headers: Record<string, string> = { 'content-type': 'application/json' };
          if (withToken && token) headers['x-csrf-token'] = decodeURIComponent(token);
          const r = await fetch('/api/actions/verify', { method: 'POST', headers, body: JSON.stringify({ dataset: 'photos' }) });
          return { status: r.status, body: await r.json() };
        }, withToken);
      expect(await post(viewer.page, true)).toMatchObject({ status: 403, body: { error: expect.stringContaining('needs the operator role') } });

      await logIn(operator.page, 'olga', 'operator-password');
      expect(await post(operator.page, false)).toEqual({ status: 403, body: { error: 'missing or wrong CSRF token' } });
      expect((await post(operator.page, true)).status).toBe(202);
    } finally {
      await viewer.context.close();
      await operator.context.close();
    }
  });
});
