import { createHmac, randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { safeEqual } from './secure.js';
import { LoginThrottle } from './throttle.js';

/**
 * One auth for everything a person uses: the web UI (/), /api, Bull Board (/queues).
 *
 * - Without users (allowed only on a loopback host, see crossReferenceIssues) everything is open as
 *   before and every request is the operator ANONYMOUS.
 * - With users, every path except the open ones (/healthz, /livez, /metrics, the webhook, which has its
 *   own bearer token, and the login page) needs HTTP basic auth or a signed session cookie from
 *   POST /login. Unknown paths too: deny by default, so a route added later is never open by mistake.
 *
 * CSRF. Unsafe requests (anything but GET/HEAD/OPTIONS):
 * - are refused when the browser says they come from another site (Sec-Fetch-Site, else Origin against
 *   Host). This applies to every auth, basic auth too: a browser that has been given basic credentials
 *   caches them and sends them on a cross-site form POST as readily as a cookie, so "basic auth is
 *   exempt" holds only for clients that are not browsers, which send neither header.
 * - made with the session cookie also need the double-submit token: the `lifeboat_csrf` cookie and the
 *   `x-csrf-token` header (or a `_csrf` form field) must be equal and must be the HMAC of this session.
 *   Bull Board's own buttons cannot send the token: under /queues the same-site check above is the
 *   protection.
 * - made with basic auth and no session need no token (curl, scripts).
 *
 * Guessing: failed logins (the form and basic auth alike) are counted per client address, and after
 * ten in ten minutes that address gets 429 with Retry-After (LoginThrottle); each failure is logged with
 * the name. Sessions cannot be revoked one by one (change sessionSecret, or restart without one, to end
 * them all).
 */

export type Role = 'viewer' | 'operator';
export interface AuthUser {
  name: string;
  role: Role;
}

/** Who a request is when no users are configured (only allowed on loopback): everyone may do everything, as before. */
export const ANONYMOUS: AuthUser = Object.freeze({ name: 'anonymous', role: 'operator' });

export const SESSION_COOKIE = 'lifeboat_session';
export const CSRF_COOKIE = 'lifeboat_csrf';
export const CSRF_HEADER = 'x-csrf-token';
export const LOGIN_PATH = '/login';
export const LOGOUT_PATH = '/logout';
const WRONG = 'wrong name or password';
const RANK: Record<Role, number> = { viewer: 0, operator: 1 };
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook on every request that passed it; null only on the open paths when users are configured. */
    user: AuthUser | null;
    /** How the user got in: 'session' requests are the ones that need the CSRF token. */
    authVia: 'basic' | 'session' | 'anonymous' | null;
  }
}

export interface AuthOptions {
  config: Config;
  /** Route URLs (as registered) that need no login, besides /login and /logout. */
  openRoutes: string[];
  /** Path prefixes under which the CSRF token is not asked for (the same-site check still applies). */
  noTokenPrefixes?: string[];
  /** Path prefixes under which unsafe requests need the operator role (Bull Board's buttons). */
  operatorPrefixes?: string[];
  logger?: Logger;
  /** For tests: the clock the session expiry is checked against. */
  now?: () => number;
  /** Counts failed logins per client address (default: 10 in 10 minutes). */
  throttle?: LoginThrottle;
}

/** A preHandler for action routes: 401 without a user, 403 when the user's role is below `role`. */
export function requireRole(role: Role): preHandlerAsyncHookHandler {
  return async function roleCheck(request: FastifyRequest, reply: FastifyReply) {
    const user = request.user;
    if (!user) return reply.code(401).send({ error: 'authentication required' });
    if (RANK[user.role] < RANK[role]) return reply.code(403).send({ error: `forbidden: needs the ${role} role (you are ${user.role})` });
  };
}

/** The CSRF token of a session (what the UI puts into x-csrf-token or a _csrf field). */
export function csrfTokenFor(key: Buffer, sessionValue: string): string {
  return createHmac('sha256', key).update(`csrf|${sessionValue}`).digest('base64url');
}

/** name|role|expiry (seconds), signed: `${name}|${role}|${expiry}|${hmac}`. Names cannot hold '|' (schema). */
export function signSession(key: Buffer, user: AuthUser, expiresAtSeconds: number): string {
  const payload = `${user.name}|${user.role}|${expiresAtSeconds}`;
  return `${payload}|${createHmac('sha256', key).update(payload).digest('base64url')}`;
}

/** The user in a session cookie value, if it is signed with `key` and not expired. */
export function verifySession(key: Buffer, value: string, nowMs: number): (AuthUser & { expiresAt: number }) | undefined {
  const parts = value.split('|');
  if (parts.length !== 4) return undefined;
  const [name, role, expiry, mac] = parts as [string, string, string, string];
  const expected = createHmac('sha256', key).update(`${name}|${role}|${expiry}`).digest('base64url');
  if (!safeEqual(mac, expected)) return undefined;
  if (role !== 'viewer' && role !== 'operator') return undefined;
  const expiresAt = Number(expiry);
  if (!Number.isInteger(expiresAt) || expiresAt * 1000 <= nowMs) return undefined;
  return { name, role, expiresAt };
}

export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (!name || cookies.has(name)) continue; // the first one wins, as browsers send the most specific first
    try {
      cookies.set(name, decodeURIComponent(part.slice(eq + 1).trim()));
    } catch {
      // A malformed value is as good as none.
    }
  }
  return cookies;
}

function cookie(name: string, value: string, options: { maxAge: number; httpOnly: boolean; secure: boolean }): string {
  return [`${name}=${encodeURIComponent(value)}`, 'Path=/', `Max-Age=${options.maxAge}`, 'SameSite=Strict', ...(options.httpOnly ? ['HttpOnly'] : []), ...(options.secure ? ['Secure'] : [])].join('; ');
}

/** Over https, directly or (only ever adding Secure, so a forged header can harm nobody else) via a proxy. */
function overHttps(request: FastifyRequest): boolean {
  const forwarded = request.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return request.protocol === 'https' || first === 'https';
}

/** True when a browser tells us the request was started by another site (or by an opaque origin). */
function crossSite(request: FastifyRequest): boolean {
  const site = request.headers['sec-fetch-site'];
  if (typeof site === 'string') return site !== 'same-origin' && site !== 'none';
  const origin = request.headers.origin;
  if (origin === undefined) return false; // not a browser, or an old one on a same-origin request
  try {
    const from = new URL(origin);
    // Through URL on both sides, so a default port (":80" in Host, none in Origin) compares equal.
    return from.host !== new URL(`${from.protocol}//${request.headers.host ?? ''}`).host;
  } catch {
    return true; // "null" and other opaque origins
  }
}

function wantsHtml(request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? '';
  return SAFE_METHODS.has(request.method) && /\btext\/html\b/i.test(accept);
}

/** A local path to go back to after login; anything else (//host, /\host, absolute URLs) becomes /. */
export function safeNext(next: unknown): string {
  if (typeof next !== 'string' || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\') || /[\r\n\t]/.test(next)) return '/';
  return next;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(next: string, message?: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lifeboat: log in</title><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/ui/assets/style.css"></head>
<body><header class="top"><span class="brand">Lifeboat</span></header>
<main class="login"><h1>Log in</h1>${message ? `<p class="problem" role="alert">${escapeHtml(message)}</p>` : ''}
<form method="post" action="${LOGIN_PATH}">
<input type="hidden" name="next" value="${escapeHtml(next)}">
<label>Name <input name="name" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form></main></body></html>
`;
}

/**
 * Installs the auth on `app` itself (not in a child scope), so its hooks cover every route registered
 * after it, whichever plugin adds them. Call it before any route that must be protected.
 */
export async function installAuth(app: FastifyInstance, options: AuthOptions): Promise<void> {
  const { config, logger } = options;
  const users = config.server.ui.users;
  const key = config.server.ui.sessionSecret ? Buffer.from(config.server.ui.sessionSecret.reveal(), 'utf8') : randomBytes(32);
  const sessionSeconds = Math.round(config.server.ui.sessionHours * 3600);
  const now = options.now ?? Date.now;
  const open = new Set([...options.openRoutes, LOGIN_PATH, LOGOUT_PATH]);
  // /login needs no token (there is no session to bind it to yet); the same-site check covers login CSRF.
  const noToken = [...(options.noTokenPrefixes ?? []), LOGIN_PATH];
  const enabled = users.length > 0;
  const throttle = options.throttle ?? new LoginThrottle();
  /** 429 while the client has failed too often; no password is compared then. */
  function throttled(request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
    const wait = throttle.retryAfterSeconds(request.ip);
    if (wait === 0) return undefined;
    logger?.warn({ ip: request.ip, retryAfterSeconds: wait }, 'login refused: too many failed attempts');
    const error = `too many failed logins from ${request.ip}; try again in ${wait} s`;
    reply.code(429).header('retry-after', String(wait));
    if (request.method === 'POST' && /\btext\/html\b/i.test(request.headers.accept ?? '')) return reply.type('text/html; charset=utf-8').send(loginPage('/', error));
    return reply.send({ error });
  }

  app.decorateRequest('user', null);
  app.decorateRequest('authVia', null);

  /** The configured user with this name and password; compares in constant time and always against something. */
  function check(name: string, password: string): AuthUser | undefined {
    let found: AuthUser | undefined;
    for (const user of users) {
      // Every user is compared, so the time says nothing about which names exist.
      const nameOk = safeEqual(name, user.name);
      const passwordOk = safeEqual(password, user.password.reveal());
      if (nameOk && passwordOk && !found) found = { name: user.name, role: user.role };
    }
    return found;
  }

  /** The session's user, if the cookie is valid and the user still exists with that role. */
  function fromSession(value: string | undefined): AuthUser | undefined {
    if (!value) return undefined;
    const session = verifySession(key, value, now());
    if (!session) return undefined;
    const current = users.find((u) => u.name === session.name);
    return current && current.role === session.role ? { name: current.name, role: current.role } : undefined;
  }

  function refuse(request: FastifyRequest, reply: FastifyReply, why: string) {
    if (wantsHtml(request)) return reply.redirect(`${LOGIN_PATH}?next=${encodeURIComponent(safeNext(request.url))}`, 302);
    return reply.code(401).header('www-authenticate', 'Basic realm="lifeboat", charset="UTF-8"').send({ error: why });
  }

  app.addHook('onRequest', async (request, reply) => {
    // Same-site check first, for every unsafe request on every path but the webhook and the other open
    // routes that are not for browsers (the webhook has its own token; /login and /logout are checked).
    const route = request.routeOptions.url;
    const isOpen = route !== undefined && open.has(route);
    const forBrowsers = !isOpen || route === LOGIN_PATH || route === LOGOUT_PATH;
    if (!SAFE_METHODS.has(request.method) && forBrowsers && crossSite(request)) {
      return reply.code(403).send({ error: 'cross-site request refused' });
    }
    if (!enabled) {
      request.user = ANONYMOUS;
      request.authVia = 'anonymous';
      return;
    }
    const header = request.headers.authorization;
    if (header !== undefined && /^basic /i.test(header)) {
      const refused = throttled(request, reply);
      if (refused) return refused;
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const name = colon < 0 ? decoded : decoded.slice(0, colon);
      const user = colon < 0 ? undefined : check(name, decoded.slice(colon + 1));
      if (user) {
        request.user = user;
        request.authVia = 'basic';
        return;
      }
      throttle.failed(request.ip);
      if (isOpen) return;
      logger?.warn({ name: name.slice(0, 64), ip: request.ip, path: request.url.split('?')[0] }, 'basic auth failed');
      return refuse(request, reply, WRONG);
    }
    const cookies = parseCookies(request.headers.cookie);
    const user = fromSession(cookies.get(SESSION_COOKIE));
    if (user) {
      request.user = user;
      request.authVia = 'session';
      // Give the page its token again if the cookie went missing (the session lives on).
      const token = csrfTokenFor(key, cookies.get(SESSION_COOKIE)!);
      if (cookies.get(CSRF_COOKIE) !== token) reply.header('set-cookie', cookie(CSRF_COOKIE, token, { maxAge: sessionSeconds, httpOnly: false, secure: overHttps(request) }));
      return;
    }
    if (isOpen) return;
    return refuse(request, reply, 'authentication required');
  });

  // The token is checked once the body is parsed, so a form may send it as _csrf.
  const under = (path: string, prefixes: string[]) => prefixes.some((prefix) => path === prefix || path.startsWith(`${prefix}/`));
  app.addHook('preValidation', async (request, reply) => {
    if (SAFE_METHODS.has(request.method) || !request.user) return;
    const path = request.url.split('?')[0]!;
    if (request.user.role !== 'operator' && under(path, options.operatorPrefixes ?? [])) {
      return reply.code(403).send({ error: `forbidden: needs the operator role (you are ${request.user.role})` });
    }
    if (request.authVia !== 'session' || under(path, noToken)) return;
    const cookies = parseCookies(request.headers.cookie);
    const headerToken = request.headers[CSRF_HEADER];
    const body = request.body as { _csrf?: unknown } | undefined;
    const sent = typeof headerToken === 'string' ? headerToken : typeof body?._csrf === 'string' ? body._csrf : undefined;
    const cookieToken = cookies.get(CSRF_COOKIE);
    const expected = csrfTokenFor(key, cookies.get(SESSION_COOKIE) ?? '');
    if (sent === undefined || cookieToken === undefined || !safeEqual(sent, cookieToken) || !safeEqual(sent, expected)) {
      return reply.code(403).send({ error: 'missing or wrong CSRF token' });
    }
  });

  await app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_request, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });

    scope.get(LOGIN_PATH, async (request, reply) => {
      const next = safeNext((request.query as { next?: unknown }).next);
      if (request.user && request.authVia !== 'anonymous') return reply.redirect(next, 303);
      return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(loginPage(next, enabled ? undefined : 'No users are configured: everything is open on this loopback address.'));
    });

    scope.post(LOGIN_PATH, async (request, reply) => {
      const body = (request.body ?? {}) as { name?: unknown; password?: unknown; next?: unknown };
      const name = typeof body.name === 'string' ? body.name : '';
      const password = typeof body.password === 'string' ? body.password : '';
      const next = safeNext(body.next);
      const refused = throttled(request, reply);
      if (refused) return refused;
      const user = enabled ? check(name, password) : undefined;
      if (!user) {
        if (enabled) throttle.failed(request.ip);
        logger?.warn({ name: name.slice(0, 64), ip: request.ip }, 'login failed');
        if (/\btext\/html\b/i.test(request.headers.accept ?? '')) return reply.code(401).type('text/html; charset=utf-8').send(loginPage(next, WRONG));
        return reply.code(401).send({ error: WRONG });
      }
      const value = signSession(key, user, Math.floor(now() / 1000) + sessionSeconds);
      const secure = overHttps(request);
      logger?.info({ name: user.name, role: user.role, ip: request.ip }, 'logged in');
      return reply
        .header('set-cookie', [
          cookie(SESSION_COOKIE, value, { maxAge: sessionSeconds, httpOnly: true, secure }),
          cookie(CSRF_COOKIE, csrfTokenFor(key, value), { maxAge: sessionSeconds, httpOnly: false, secure }),
        ])
        .redirect(next, 303);
    });

    scope.post(LOGOUT_PATH, async (request, reply) => {
      const secure = overHttps(request);
      return reply
        .header('set-cookie', [cookie(SESSION_COOKIE, '', { maxAge: 0, httpOnly: true, secure }), cookie(CSRF_COOKIE, '', { maxAge: 0, httpOnly: false, secure })])
        .redirect(LOGIN_PATH, 303);
    });
  });
}
