import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from './config/schema.js';
import { renderMetrics, type QueueDepth } from './metrics/exporter.js';
import type { MetricsRecorder } from './metrics/recorder.js';
import { safeEqual } from './plumbing/secure.js';
import type { QueueSet } from '../queue/queues.js';
import { registerWebhook } from '../triggers/webhook.js';

export const BOARD_PATH = '/queues';

export interface ServerOptions {
  config: Config;
  recorder: MetricsRecorder;
  queues: QueueSet;
}

/** The HTTP side of `lifeboat serve`: /metrics, Bull Board, /healthz. */
export async function buildServer({ config, recorder, queues }: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
  const depths = (): Promise<QueueDepth[]> => queues.depths();

  app.get('/healthz', async () => ({ ok: true }));
  await registerWebhook(app, { config, queues, recorder });

  app.get('/metrics', async (_request, reply) => {
    const fromConfig = [
      ...config.datasets.map((d) => ({ name: 'lifeboat_backup_stale_threshold_seconds', labels: { dataset: d.id, kind: d.kind }, value: d.staleAfterHours * 3600 })),
      // 0 until a check fails, so the alert compares against a series that exists.
      ...config.datasets.map((d) => ({ name: 'lifeboat_backups_corrupt', labels: { dataset: d.id, kind: d.kind }, value: 0 })),
      // Every function's failure counter exists from the start at 0, so increase() sees its first failure.
      ...[...queues.queues.keys()].map((fn) => ({ name: 'lifeboat_job_failures_total', labels: { fn }, value: 0 })),
    ];
    const { contentType, body } = await renderMetrics(recorder, depths, fromConfig, new Set(config.datasets.map((d) => d.id)));
    return reply.type(contentType).send(body);
  });

  const board = new FastifyAdapter();
  createBullBoard({ queues: [...queues.queues.values()].map((q) => new BullMQAdapter(q)), serverAdapter: board });
  board.setBasePath(BOARD_PATH);
  const auth = config.server.board;
  await app.register(
    async (scope) => {
      if (auth) {
        scope.addHook('onRequest', async (request, reply) => {
          const header = request.headers.authorization ?? '';
          const [user, ...pass] = Buffer.from(header.replace(/^Basic /, ''), 'base64').toString('utf8').split(':');
          const ok = header.startsWith('Basic ') && safeEqual(user ?? '', auth.username) && safeEqual(pass.join(':'), auth.password.reveal());
          if (!ok) return reply.code(401).header('www-authenticate', 'Basic realm="lifeboat"').send('authentication required');
        });
      }
      await scope.register(board.registerPlugin());
    },
    { prefix: BOARD_PATH },
  );
  return app;
}
