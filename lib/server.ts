import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from './config/schema.js';
import { renderMetrics, type QueueDepth } from './metrics/exporter.js';
import { samplesFromTargets } from './metrics/rebuild.js';
import type { MetricsRecorder, Sample } from './metrics/recorder.js';
import type { Deps } from './plumbing/deps.js';
import { redisUrlForDisplay, withinTimeout } from './plumbing/redis.js';
import { installAuth } from './plumbing/auth.js';
import { ASSET_PATH } from './ui/assets.js';
import type { QueueSet } from '../queue/queues.js';
import { registerWebhook } from '../triggers/webhook.js';

export const BOARD_PATH = '/queues';
/** How long /healthz waits for Redis's PING. */
export const HEALTH_REDIS_TIMEOUT_MS = 1000;
/** How long a scrape waits for Redis before it falls back to the targets. */
export const METRICS_REDIS_TIMEOUT_MS = 1000;
/** How long a scrape without Redis reads the targets; what was not read by then is left out. */
export const METRICS_TARGETS_TIMEOUT_MS = 2000;

export interface ServerOptions {
  config: Config;
  recorder: MetricsRecorder;
  queues: QueueSet;
  /** For /metrics while Redis is down: the targets to rebuild the state from. Without it, only the config's series. */
  deps?: Deps;
}

/** The HTTP side of `lifeboat serve`: /metrics, Bull Board, /healthz, /livez. */
export async function buildServer({ config, recorder, queues, deps }: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
  const redis = queues.connection;
  const redisUrl = redisUrlForDisplay(config);
  // First, so its hooks cover every route added below (the UI, /api, Bull Board); these stay open.
  // The UI's stylesheet and script too: the login page uses them, and they hold nothing about the backups.
  const openRoutes = ['/healthz', '/livez', '/metrics', `${ASSET_PATH}:name`, ...(config.server.webhook.enabled ? [config.server.webhook.path] : [])];
  await installAuth(app, { config, openRoutes, noTokenPrefixes: [BOARD_PATH], operatorPrefixes: [BOARD_PATH], logger: deps?.logger });

  // Readiness: this process can do its work, which needs Redis. A bounded PING, never a hanging one.
  app.get('/healthz', async (_request, reply) => {
    try {
      await withinTimeout(redis, redisUrl, () => redis.ping(), HEALTH_REDIS_TIMEOUT_MS);
      return { ok: true, redis: 'up' };
    } catch (err) {
      return reply.code(503).send({ ok: false, redis: 'down', url: redisUrl, error: (err as Error).message });
    }
  });
  // Liveness: the process answers. Redis being down is no reason to restart it (it would exit 3).
  app.get('/livez', async () => ({ ok: true }));
  await registerWebhook(app, { config, queues, recorder });
  await app.register((await import('./api/actions.js')).actionRoutes, { prefix: '/api', config, queues }); // the UI's buttons: jobs, operators only
  await app.register((await import('./api/routes.js')).apiRoutes, { prefix: '/api', config, deps }); // the web UI's read-only JSON API (lib/api/): targets only, never Redis
  await app.register((await import('./ui/routes.js')).uiRoutes, { config, deps }); // the web UI's pages and assets (lib/ui/): targets only, never Redis

  /** The stored state and queue depths from Redis, or, while Redis does not answer, what the targets say. */
  async function metricState(): Promise<{ stored: Sample[]; queueDepths: QueueDepth[]; redisUp: boolean }> {
    try {
      const [stored, queueDepths] = await withinTimeout(redis, redisUrl, () => Promise.all([recorder.samples(), queues.depths()]), METRICS_REDIS_TIMEOUT_MS);
      return { stored, queueDepths, redisUp: true };
    } catch {
      const stored = deps ? await samplesFromTargets(deps, AbortSignal.timeout(METRICS_TARGETS_TIMEOUT_MS)) : [];
      // Counters live only in Redis: a 0 now and the old value later would look like new failures to increase().
      return { stored: stored.filter((s) => !isCounter(s)), queueDepths: [], redisUp: false };
    }
  }

  app.get('/metrics', async (_request, reply) => {
    const { stored, queueDepths, redisUp } = await metricState();
    const fromConfig = [
      ...config.datasets.map((d) => ({ name: 'lifeboat_backup_stale_threshold_seconds', labels: { dataset: d.id, kind: d.kind }, value: d.staleAfterHours * 3600 })),
      // 0 until a check fails, so the alert compares against a series that exists.
      ...config.datasets.map((d) => ({ name: 'lifeboat_backups_corrupt', labels: { dataset: d.id, kind: d.kind }, value: 0 })),
      // Every function's failure counter exists from the start at 0, so increase() sees its first failure.
      ...(redisUp ? [...queues.queues.keys()].map((fn) => ({ name: 'lifeboat_job_failures_total', labels: { fn }, value: 0 })) : []),
      { name: 'lifeboat_redis_up', labels: {}, value: redisUp ? 1 : 0 },
    ];
    const { contentType, body } = await renderMetrics({ stored, queueDepths, fromConfig, datasets: new Set(config.datasets.map((d) => d.id)) });
    return reply.type(contentType).send(body);
  });

  const board = new FastifyAdapter();
  const systemFonts = { 'font-sans': SYSTEM_SANS, 'font-mono': SYSTEM_MONO };
  createBullBoard({
    queues: [...queues.queues.values()].map((q) => new BullMQAdapter(q)),
    serverAdapter: board,
    options: { uiConfig: { boardTitle: 'Lifeboat queues', miscLinks: [{ text: 'Back to Lifeboat', url: '/' }], theme: { light: systemFonts, dark: systemFonts } } },
  });
  board.setBasePath(BOARD_PATH);
  // Behind the auth installed above (server.board is one of its users now).
  await app.register(
    async (scope) => {
      // Its page asks Google for its fonts, which an offline LAN never answers: drop the request, use the system's.
      scope.addHook('onSend', async (_request, reply, payload) => (typeof payload === 'string' && /^text\/html/.test(String(reply.getHeader('content-type'))) ? withoutWebFonts(payload) : payload));
      await scope.register(board.registerPlugin());
    },
    { prefix: BOARD_PATH },
  );
  return app;
}

const isCounter = (sample: Sample) => sample.name.endsWith('_total');

const SYSTEM_SANS = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const SYSTEM_MONO = 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace';

/** An HTML page without its stylesheet links to web-font services. */
export function withoutWebFonts(html: string): string {
  return html.replace(/<link\b[^>]*\bhref="https:\/\/fonts\.(?:googleapis|gstatic)\.com[^"]*"[^>]*>\s*/g, '');
}
