import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { API_TARGETS_TIMEOUT_MS } from '../api/routes.js';
import { ApiError, backupListQuery, parseQuery, requireApiDataset, requireBackupId } from '../api/schemas.js';
import type { Config } from '../config/schema.js';
import { MemoryMetricsRecorder } from '../metrics/recorder.js';
import { CSRF_COOKIE, parseCookies } from '../plumbing/auth.js';
import { createDeps, type Deps } from '../plumbing/deps.js';
import { silentLogger } from '../plumbing/logger.js';
import { ASSET_PATH, isAssetName, loadAssets } from './assets.js';
import { backupDetailPage } from './backup.js';
import { datasetPage } from './dataset.js';
import { layout, type Viewer } from './layout.js';
import { overviewPage } from './overview.js';
import { errorPage, type Page, type PageContext } from './parts.js';

export interface UiOptions {
  config: Config;
  /** The targets to read; without them (demo, tests) the plugin opens its own, as apiRoutes does. */
  deps?: Deps;
}

/** No inline script or style anywhere: everything comes from /ui/assets/. */
export const CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

type Params = { dataset: string; id: string };

/**
 * The web UI: server-rendered pages that read the targets through the same functions as /api (never
 * Redis), plus app.js and style.css. The auth installed before it decides who gets in; the pages only
 * decide whether to show the operator's controls.
 */
export const uiRoutes: FastifyPluginAsync<UiOptions> = async (scope: FastifyInstance, { config, deps: given }) => {
  const deps = given ?? createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
  if (!given) scope.addHook('onClose', async () => deps.close());
  const assets = await loadAssets();
  const signal = () => AbortSignal.timeout(API_TARGETS_TIMEOUT_MS);

  // None of these routes is open: the auth hook has set the user before they run.
  const viewerOf = (request: FastifyRequest): Viewer => ({ user: request.user!, via: request.authVia!, csrf: parseCookies(request.headers.cookie).get(CSRF_COOKIE) });
  const contextOf = (request: FastifyRequest): PageContext => ({ config, now: deps.clock(), operator: request.user!.role === 'operator' });
  const send = (request: FastifyRequest, reply: FastifyReply, status: number, page: Page) =>
    reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').header('content-security-policy', CONTENT_SECURITY_POLICY).header('x-content-type-options', 'nosniff').send(layout(page, viewerOf(request), assets));

  scope.setErrorHandler(async (err, request, reply) => {
    if (err instanceof ApiError) return send(request, reply, err.statusCode, errorPage(err.statusCode, err.message, err.field));
    const status = (err as { statusCode?: number }).statusCode;
    if (status && status >= 400 && status < 500) return send(request, reply, status, errorPage(status, (err as Error).message));
    // Anything else is a target that failed us: say which and why.
    return send(request, reply, 502, errorPage(502, (err as Error).message));
  });

  scope.get('/', async (request, reply) => send(request, reply, 200, await overviewPage(deps, contextOf(request), signal())));

  scope.get<{ Params: Pick<Params, 'dataset'> }>('/datasets/:dataset', async (request, reply) => {
    const dataset = requireApiDataset(config, request.params.dataset);
    const query = parseQuery(backupListQuery, request.query);
    return send(request, reply, 200, await datasetPage(deps, contextOf(request), dataset, query, signal()));
  });

  scope.get<{ Params: Params }>('/backups/:dataset/:id', async (request, reply) => {
    const dataset = requireApiDataset(config, request.params.dataset);
    const id = requireBackupId(dataset, request.params.id);
    return send(request, reply, 200, await backupDetailPage(deps, contextOf(request), dataset, id, signal()));
  });

  scope.get<{ Params: { name: string }; Querystring: { v?: string } }>(`${ASSET_PATH}:name`, async (request, reply) => {
    const { name } = request.params;
    if (!isAssetName(name)) return reply.code(404).type('text/plain; charset=utf-8').send(`no asset ${name}`);
    const asset = assets[name];
    // A versioned URL never changes its content; an unversioned one is revalidated.
    const cache = request.query.v === asset.version ? 'public, max-age=31536000, immutable' : 'no-cache';
    return reply.type(asset.contentType).header('cache-control', cache).header('x-content-type-options', 'nosniff').send(asset.body);
  });
};
