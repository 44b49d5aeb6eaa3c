import { Writable } from 'node:stream';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../lib/config/load.js';
import { openApp, type App } from '../lib/plumbing/app.js';
import { CSRF_COOKIE, SESSION_COOKIE, csrfTokenFor, requireRole, signSession } from '../lib/plumbing/auth.js';
import { buildServer } from '../lib/server.js';
import { closeApps, configProblems, logger, testConfig } from './helpers.js';

// The one auth in front of the web UI, /api and Bull Board (lib/plumbing/auth.ts), on real Redis.

const SESSION_SECRET = 'a-session-secret-of-at-least-32-characters';
process.env.TEST_UI_OPERATOR = 'operator pass:with colon';
process.env.TEST_UI_VIEWER = 'viewer-pass';
process.env.TEST_UI_SECRET = SESSION_SECRET;
process.env.TEST_UI_TOKEN = 'webhook-token';
const users = [
  { name: 'olga', password: '${env:TEST_UI_OPERATOR}', role: 'operator' },
  { name: 'vic', password: '${env:TEST_UI_VIEWER}', role: 'viewer' },
];
const ACTION = '/api/test/operator-only';

const apps: App[] = [];
afterEach(async () => closeApps(apps));

/** A `lifeboat serve` app plus a test-only operator route, with its logs captured. */
async function serve(server: Record<string, unknown> = {}): Promise<{ http: FastifyInstance; logs: string[] }> {
  const config = testConfig({ server });
  const app = await openApp(config, logger());
  apps.push(app);
  const logs: string[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, done) => (logs.push(String(chunk)), done()) }));
  const http = await buildServer({ config, recorder: app.recorder, queues: app.queues, deps: { ...app.deps, logger: log } });
  http.post(ACTION, { preHandler: requireRole('operator') }, async (request) => ({ ok: true, user: request.user }));
  http.get('/api/test/whoami', async (request) => ({ user: request.user, via: request.authVia }));
  return { http, logs };
}

const withUsers = (extra: Record<string, unknown> = {}) => serve({ ui: { users, sessionSecret: '${env:TEST_UI_SECRET}', ...extra } });
const basic = (name: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}` });

function setCookies(response: LightMyRequestResponse): string[] {
  const header = response.headers['set-cookie'];
  return header === undefined ? [] : Array.isArray(header) ? header : [header];
}

/** Logs in by form and returns the cookie header and CSRF token a browser would then hold. */
async function login(http: FastifyInstance, name: string, password: string, headers: Record<string, string> = {}) {
  const response = await http.inject({
    method: 'POST',
    url: '/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    payload: new URLSearchParams({ name, password, next: '/queues' }).toString(),
  });
  const jar = new Map(setCookies(response).map((c) => {
    const [pair] = c.split(';');
    const eq = pair!.indexOf('=');
    return [pair!.slice(0, eq), decodeURIComponent(pair!.slice(eq + 1))] as const;
  }));
  const cookie = [...jar].map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('; ');
  return { response, cookie, csrf: jar.get(CSRF_COOKIE), session: jar.get(SESSION_COOKIE) };
}


describe('server.ui config', () => {
  const env = { P1: 'pass-number-1', P2: 'pass-number-2', TOKEN: 't', SECRET: SESSION_SECRET, SHORT: 'short' };
  const offLoopback = { host: '0.0.0.0', webhook: { token: '${env:TOKEN}' } };
  const ops = { name: 'ops', password: '${env:P1}', role: 'operator' };

  it('refuses a non-loopback host without users, for the UI and Bull Board alike, naming server.ui.users', () => {
    const found = configProblems({ targets: {}, server: offLoopback }, env);
    expect(found).toEqual([expect.stringMatching(/^server\.ui\.users: required when server\.host \(0\.0\.0\.0\) is not a loopback address; .*Bull Board \(\/queues\)/)]);
    expect(configProblems({ targets: {}, server: { ...offLoopback, ui: { users: [] } } }, env)).toEqual(found);
    // Users, or the deprecated server.board, or a loopback host are fine.
    expect(configProblems({ targets: {}, server: { ...offLoopback, ui: { users: [ops] } } }, env)).toEqual([]);
    expect(configProblems({ targets: {}, server: { ...offLoopback, board: { username: 'ops', password: '${env:P1}' } } }, env)).toEqual([]);
    expect(configProblems({ targets: {}, server: { host: '127.0.0.1' } }, env)).toEqual([]);
    expect(configProblems({ targets: {}, server: { host: 'localhost' } }, env)).toEqual([]);
  });

  it('folds the deprecated server.board into the users as an operator, with defaults', () => {
    const config = parseConfig({ targets: {}, server: { board: { username: 'ops', password: '${env:P1}' }, ui: { users: [{ ...ops, name: 'vic', role: 'viewer' }] } } }, 'test', { env });
    expect(config.server.ui.users.map((u) => ({ name: u.name, role: u.role, password: u.password.reveal() }))).toEqual([
      { name: 'vic', role: 'viewer', password: 'pass-number-1' },
      { name: 'ops', role: 'operator', password: 'pass-number-1' },
    ]);
    expect(config.server.ui.sessionHours).toBe(12);
    expect('board' in config.server).toBe(false);
    expect(JSON.stringify(config)).not.toContain('pass-number');
  });

  it('names duplicate users, unknown restore targets and bad fields by their paths', () => {
    const found = configProblems(
      {
        targets: { hub: { kind: 'dir', path: '/srv' } },
        server: {
          board: { username: 'ops', password: '${env:P1}' },
          ui: {
            users: [ops, { name: 'vic', password: '${env:P2}', role: 'viewer' }, { ...ops, role: 'admin' }, { name: 'a:b', password: 'inline', role: 'viewer' }],
            sessionSecret: '${env:SHORT}',
            restoreTargets: {
              scratch: { kind: 's3', target: 'nas', bucket: 'restores' },
              onhub: { kind: 's3', target: 'hub', bucket: 'restores' },
              pg: { kind: 'postgres', url: 'postgres://u:pw@db/postgres' },
              ok: { kind: 'postgres', url: 'postgres://postgres@db/postgres', password: '${env:P2}' },
            },
          },
        },
      },
      env,
    );
    expect(found).toEqual(
      expect.arrayContaining([
        'server.ui.users[2].name: duplicate user name "ops" (also server.ui.users[0])',
        expect.stringMatching(/^server\.board\.username: "ops" is also server\.ui\.users\[0\]/),
        expect.stringMatching(/^server\.ui\.users\[2\]\.role: /),
        expect.stringMatching(/^server\.ui\.users\[3\]\.name: must be 1-64 letters/),
        'server.ui.users[3].password: must be a ${env:NAME} or ${file:/path} reference',
        'server.ui.sessionSecret: must be at least 32 characters',
        'server.ui.restoreTargets.scratch.target: unknown target "nas" (known: hub)',
        'server.ui.restoreTargets.onhub.target: an s3 restore target needs an s3 target ("hub" is dir)',
        expect.stringMatching(/^server\.ui\.restoreTargets\.pg\.url: must be a valid URL without a password/),
      ]),
    );
    expect(found).toHaveLength(9);
    expect(found.join('\n')).not.toMatch(/inline|pw@|short\b/);
  });
});

describe('no users on loopback: open as before', () => {
  it('serves Bull Board and the actions to everyone, as the anonymous operator, but refuses cross-site POSTs', async () => {
    const { http } = await serve();
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues' })).statusCode).toBe(200);
    const board = await http.inject({ method: 'GET', url: '/queues', headers: { accept: 'text/html' } });
    expect(board.statusCode).toBe(200);
    // Offline-friendly: no web-font request (the page asks Google for IBM Plex as shipped), a link back to the UI.
    expect(board.body).toContain('static/css/');
    expect(board.body).not.toMatch(/fonts\.googleapis|fonts\.gstatic/);
    expect(board.body).toContain('"miscLinks":[{"text":"Back to Lifeboat","url":"/"}]');
    const action = await http.inject({ method: 'POST', url: ACTION });
    expect(action.statusCode).toBe(200);
    expect(action.json()).toEqual({ ok: true, user: { name: 'anonymous', role: 'operator' } });
    // A page on another site cannot make the browser post to the unprotected local server.
    expect((await http.inject({ method: 'POST', url: ACTION, headers: { 'sec-fetch-site': 'cross-site' } })).statusCode).toBe(403);
    expect((await http.inject({ method: 'POST', url: ACTION, headers: { origin: 'http://evil.example' } })).statusCode).toBe(403);
    expect((await http.inject({ method: 'POST', url: ACTION, headers: { origin: 'http://localhost:80', host: 'localhost:80' } })).statusCode).toBe(200);
  });
});

describe('with users', () => {
  it('asks API clients for credentials (WWW-Authenticate) and sends browsers to /login', async () => {
    const { http } = await withUsers();
    for (const url of ['/queues/api/queues', '/api/test/whoami', '/', '/api/nothing-here']) {
      const response = await http.inject({ method: 'GET', url });
      expect(response.statusCode, url).toBe(401);
      expect(response.headers['www-authenticate'], url).toBe('Basic realm="lifeboat", charset="UTF-8"');
    }
    expect((await http.inject({ method: 'POST', url: ACTION })).statusCode).toBe(401);
    const browser = await http.inject({ method: 'GET', url: '/queues?x=1', headers: { accept: 'text/html,application/xhtml+xml' } });
    expect(browser.statusCode).toBe(302);
    expect(browser.headers.location).toBe('/login?next=%2Fqueues%3Fx%3D1');
    const page = await http.inject({ method: 'GET', url: '/login?next=/queues' });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('<form method="post" action="/login">');
  });

  it('leaves /healthz, /livez, /metrics and the webhook (its own bearer token) open', async () => {
    const { http } = await withUsers();
    expect((await http.inject({ method: 'GET', url: '/livez' })).statusCode).toBe(200);
    expect((await http.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await http.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
    expect((await http.inject({ method: 'HEAD', url: '/hooks/s3' })).statusCode).toBe(200);
    // The webhook's answer, not the UI's: an empty body is a 400, with or without a cookie or Origin.
    const hook = await http.inject({ method: 'POST', url: '/hooks/s3', payload: '{}', headers: { 'content-type': 'application/json', origin: 'http://minio.lan' } });
    expect(hook.statusCode).toBe(400);
  });

  it('accepts basic auth, and refuses a wrong password, logging the name only', async () => {
    const { http, logs } = await withUsers();
    const ok = await http.inject({ method: 'GET', url: '/api/test/whoami', headers: basic('olga', 'operator pass:with colon') });
    expect(ok.json()).toEqual({ user: { name: 'olga', role: 'operator' }, via: 'basic' });
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues', headers: basic('vic', 'viewer-pass') })).statusCode).toBe(200);
    const wrong = await http.inject({ method: 'GET', url: '/queues/api/queues', headers: basic('vic', 'guess-one') });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json()).toEqual({ error: 'wrong name or password' });
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues', headers: basic('nobody', 'viewer-pass') })).statusCode).toBe(401);
    // Basic auth needs no CSRF token: non-browser clients send no cookies.
    expect((await http.inject({ method: 'POST', url: ACTION, headers: basic('olga', 'operator pass:with colon') })).json()).toMatchObject({ ok: true });
    // But a browser holding basic credentials is refused when another site makes it post.
    expect((await http.inject({ method: 'POST', url: ACTION, headers: { ...basic('olga', 'operator pass:with colon'), 'sec-fetch-site': 'cross-site' } })).statusCode).toBe(403);
    const text = logs.join('');
    expect(text).toContain('"name":"vic"');
    expect(text).not.toContain('guess-one');
  });

  it('logs in by form: a signed HttpOnly SameSite=Strict cookie that works; a failed login says only "wrong name or password"', async () => {
    const { http, logs } = await withUsers();
    const failed = await http.inject({
      method: 'POST',
      url: '/login',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
      payload: 'name=olga&password=not-her-password',
    });
    expect(failed.statusCode).toBe(401);
    expect(failed.body).toContain('wrong name or password');
    expect(setCookies(failed)).toEqual([]);
    const failedJson = await http.inject({ method: 'POST', url: '/login', payload: { name: 'ghost', password: 'x-secret-x' } });
    expect(failedJson.json()).toEqual({ error: 'wrong name or password' });
    expect(logs.join('')).toContain('"name":"olga"');
    expect(logs.join('')).not.toMatch(/not-her-password|x-secret-x|operator pass/);

    const { response, cookie, session, csrf } = await login(http, 'vic', 'viewer-pass');
    expect(response.statusCode).toBe(303);
    expect(response.headers.location).toBe('/queues');
    const [sessionCookie, csrfCookie] = setCookies(response);
    expect(sessionCookie).toMatch(new RegExp(`^${SESSION_COOKIE}=vic%7Cviewer%7C\\d+%7C[\\w-]+; Path=/; Max-Age=43200; SameSite=Strict; HttpOnly$`));
    expect(csrfCookie).toMatch(new RegExp(`^${CSRF_COOKIE}=[\\w-]+; Path=/; Max-Age=43200; SameSite=Strict$`));
    expect(session).toBeDefined();
    expect(csrf).toBe(csrfTokenFor(Buffer.from(SESSION_SECRET), session!));
    expect((await http.inject({ method: 'GET', url: '/api/test/whoami', headers: { cookie } })).json()).toEqual({ user: { name: 'vic', role: 'viewer' }, via: 'session' });
    expect((await http.inject({ method: 'GET', url: '/queues', headers: { cookie, accept: 'text/html' } })).statusCode).toBe(200);
    // Over https (here: behind a TLS proxy) the cookies are Secure too.
    const overTls = await login(http, 'vic', 'viewer-pass', { 'x-forwarded-proto': 'https' });
    expect(setCookies(overTls.response).every((c) => c.endsWith('; Secure'))).toBe(true);
    // A redirect never leaves the site.
    const away = await http.inject({ method: 'POST', url: '/login', payload: { name: 'vic', password: 'viewer-pass', next: '//evil.example/x' } });
    expect(away.headers.location).toBe('/');
  });

  it('after 10 failed logins from one address, that address gets 429 with Retry-After, even with the right password; others do not', async () => {
    const { http, logs } = await withUsers();
    const from = (remoteAddress: string, name: string, password: string, via: 'form' | 'basic') =>
      via === 'basic'
        ? http.inject({ method: 'GET', url: '/api/test/whoami', remoteAddress, headers: basic(name, password) })
        : http.inject({ method: 'POST', url: '/login', remoteAddress, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams({ name, password }).toString() });
    for (let i = 0; i < 10; i++) expect((await from('10.0.0.7', 'olga', `guess-${i}`, i % 2 ? 'form' : 'basic')).statusCode).toBe(401);
    for (const via of ['form', 'basic'] as const) {
      const refused = await from('10.0.0.7', 'olga', 'operator pass:with colon', via);
      expect(refused.statusCode, via).toBe(429);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(500);
      expect(refused.json().error).toMatch(/^too many failed logins from 10\.0\.0\.7; try again in \d+ s$/);
    }
    expect((await from('10.0.0.8', 'olga', 'operator pass:with colon', 'basic')).statusCode).toBe(200);
    expect((await from('10.0.0.8', 'olga', 'operator pass:with colon', 'form')).statusCode).toBe(303);
    expect(logs.join('')).toContain('login refused: too many failed attempts');
    expect(logs.join('')).not.toContain('operator pass');
  });

  it('refuses a tampered, a foreign, an expired cookie and one whose user is gone or changed role', async () => {
    const { http } = await withUsers();
    const { session } = await login(http, 'vic', 'viewer-pass');
    const key = Buffer.from(SESSION_SECRET);
    const later = Math.floor(Date.now() / 1000) + 3600;
    const refused = async (value: string) => (await http.inject({ method: 'GET', url: '/api/test/whoami', headers: { cookie: `${SESSION_COOKIE}=${encodeURIComponent(value)}` } })).statusCode;
    expect(await refused(session!)).toBe(200);
    expect(await refused(session!.replace('|viewer|', '|operator|'))).toBe(401);
    expect(await refused(session!.slice(0, -2) + (session!.endsWith('AA') ? 'BB' : 'AA'))).toBe(401);
    expect(await refused(signSession(Buffer.from('some-other-secret-of-32-characters-or-more'), { name: 'olga', role: 'operator' }, later))).toBe(401);
    expect(await refused(signSession(key, { name: 'vic', role: 'viewer' }, Math.floor(Date.now() / 1000) - 1))).toBe(401);
    expect(await refused(signSession(key, { name: 'vic', role: 'operator' }, later))).toBe(401);
    expect(await refused(signSession(key, { name: 'mallory', role: 'operator' }, later))).toBe(401);
    expect(await refused('garbage')).toBe(401);
  });

  it('without a sessionSecret signs with a per-process key: cookies of another process do not work', async () => {
    const one = await serve({ ui: { users } });
    const two = await serve({ ui: { users } });
    const { cookie } = await login(one.http, 'vic', 'viewer-pass');
    expect((await one.http.inject({ method: 'GET', url: '/api/test/whoami', headers: { cookie } })).statusCode).toBe(200);
    expect((await two.http.inject({ method: 'GET', url: '/api/test/whoami', headers: { cookie } })).statusCode).toBe(401);
  });

  it('gives a viewer 403 on an operator-only route, and an operator the action', async () => {
    const { http } = await withUsers();
    const viewer = await http.inject({ method: 'POST', url: ACTION, headers: basic('vic', 'viewer-pass') });
    expect(viewer.statusCode).toBe(403);
    expect(viewer.json()).toEqual({ error: 'forbidden: needs the operator role (you are viewer)' });
    expect((await http.inject({ method: 'POST', url: ACTION, headers: basic('olga', 'operator pass:with colon') })).json()).toEqual({ ok: true, user: { name: 'olga', role: 'operator' } });
  });

  it('needs the CSRF token, bound to the session, for a POST made with the session cookie', async () => {
    const { http } = await withUsers();
    const olga = await login(http, 'olga', 'operator pass:with colon');
    const vic = await login(http, 'vic', 'viewer-pass');
    const post = (cookie: string, headers: Record<string, string> = {}) => http.inject({ method: 'POST', url: ACTION, headers: { cookie, ...headers } });
    const without = await post(olga.cookie);
    expect(without.statusCode).toBe(403);
    expect(without.json()).toEqual({ error: 'missing or wrong CSRF token' });
    expect((await post(olga.cookie, { 'x-csrf-token': 'made-up' })).statusCode).toBe(403);
    // Another session's token, even sent as both cookie and header, does not fit this session.
    expect((await post(`${SESSION_COOKIE}=${encodeURIComponent(olga.session!)}; ${CSRF_COOKIE}=${vic.csrf}`, { 'x-csrf-token': vic.csrf! })).statusCode).toBe(403);
    // The header alone, without its cookie, is not enough either (double submit).
    expect((await post(`${SESSION_COOKIE}=${encodeURIComponent(olga.session!)}`, { 'x-csrf-token': olga.csrf! })).statusCode).toBe(403);
    const ok = await post(olga.cookie, { 'x-csrf-token': olga.csrf! });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ ok: true, user: { name: 'olga', role: 'operator' } });
    // Same-origin is fine, cross-site is refused before the token is even looked at.
    expect((await post(olga.cookie, { 'x-csrf-token': olga.csrf!, 'sec-fetch-site': 'same-origin' })).statusCode).toBe(200);
    expect((await post(olga.cookie, { 'x-csrf-token': olga.csrf!, 'sec-fetch-site': 'same-site' })).statusCode).toBe(403);
    // The token as a _csrf form field: logging out.
    const form = (body: string) => http.inject({ method: 'POST', url: '/logout', headers: { cookie: olga.cookie, 'content-type': 'application/x-www-form-urlencoded' }, payload: body });
    expect((await form('')).statusCode).toBe(403);
    const out = await form(`_csrf=${olga.csrf}`);
    expect(out.statusCode).toBe(303);
    expect(out.headers.location).toBe('/login');
    expect(setCookies(out)).toEqual([expect.stringMatching(new RegExp(`^${SESSION_COOKIE}=; Path=/; Max-Age=0;`)), expect.stringMatching(new RegExp(`^${CSRF_COOKIE}=; Path=/; Max-Age=0;`))]);
  });

  it('puts Bull Board behind the same auth: a server.board user logs in too, and only operators press its buttons', async () => {
    process.env.TEST_BOARD_PASSWORD = 'board-pass';
    const { http } = await serve({ board: { username: 'ops', password: '${env:TEST_BOARD_PASSWORD}' }, ui: { users: [users[1]] } });
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues' })).statusCode).toBe(401);
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues', headers: basic('ops', 'board-pass') })).statusCode).toBe(200);
    const ops = await login(http, 'ops', 'board-pass');
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues', headers: { cookie: ops.cookie } })).statusCode).toBe(200);
    // Bull Board's own requests cannot carry the token: there the same-origin check is what protects them.
    const pause = (headers: Record<string, string>) => http.inject({ method: 'PUT', url: '/queues/api/queues/dumpPostgres/pause', headers });
    expect((await pause({ cookie: ops.cookie, 'sec-fetch-site': 'cross-site' })).statusCode).toBe(403);
    expect((await pause({ cookie: ops.cookie, 'sec-fetch-site': 'same-origin' })).statusCode).toBeLessThan(300);
    const vic = await login(http, 'vic', 'viewer-pass');
    expect((await http.inject({ method: 'GET', url: '/queues/api/queues', headers: { cookie: vic.cookie } })).statusCode).toBe(200);
    expect((await pause({ cookie: vic.cookie, 'sec-fetch-site': 'same-origin' })).statusCode).toBe(403);
    expect((await pause(basic('vic', 'viewer-pass'))).statusCode).toBe(403);
  });
});

describe('over a real socket', () => {
  it('a browser-like client logs in, follows the redirect with its cookie and posts with the token', async () => {
    const { http } = await withUsers();
    const address = await http.listen({ host: '127.0.0.1', port: 0 });
    try {
      const loginResponse = await fetch(`${address}/login`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ name: 'olga', password: 'operator pass:with colon', next: '/api/test/whoami' }) });
      expect(loginResponse.status).toBe(303);
      const cookies = loginResponse.headers.getSetCookie().map((c) => c.split(';')[0]!);
      const cookie = cookies.join('; ');
      const whoami = await fetch(new URL(loginResponse.headers.get('location')!, address), { headers: { cookie } });
      expect(await whoami.json()).toEqual({ user: { name: 'olga', role: 'operator' }, via: 'session' });
      const token = decodeURIComponent(cookies.find((c) => c.startsWith(`${CSRF_COOKIE}=`))!.split('=')[1]!);
      const action = await fetch(`${address}${ACTION}`, { method: 'POST', headers: { cookie, 'x-csrf-token': token, origin: address } });
      expect(action.status).toBe(200);
      const crossSite = await fetch(`${address}${ACTION}`, { method: 'POST', headers: { cookie, 'x-csrf-token': token, origin: 'http://evil.example' } });
      expect(crossSite.status).toBe(403);
    } finally {
      await http.close();
    }
  });
});
