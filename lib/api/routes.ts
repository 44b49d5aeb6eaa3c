import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Config } from '../config/schema.js';
import { MemoryMetricsRecorder } from '../metrics/recorder.js';
import { createDeps, type Deps } from '../plumbing/deps.js';
import { silentLogger } from '../plumbing/logger.js';
import { currentAlerts } from './alerts.js';
import { artifactStream, backupDetail, backupPage } from './backups.js';
import { datasetSummaries } from './datasets.js';
import { ApiError, backupListQuery, parseQuery, requireApiDataset, requireBackupId } from './schemas.js';
import { targetSummaries } from './targets.js';

/** How long one API request may spend reading the targets. */
export const API_TARGETS_TIMEOUT_MS = 30_000;

export interface ApiOptions {
  config: Config;
  /** The targets to read; without them (demo, tests) the plugin opens its own, without Redis. */
  deps?: Deps;
}

type Params = { dataset: string; id: string };

/**
 * The read-only JSON API of the web UI, under /api/. It reads only the targets, never Redis, so it
 * answers while Redis is down.
 */
export const apiRoutes: FastifyPluginAsync<ApiOptions> = async (scope: FastifyInstance, { config, deps: given }) => {
  const deps = given ?? createDeps({ config, logger: silentLogger(), metrics: new MemoryMetricsRecorder() });
  if (!given) scope.addHook('onClose', async () => deps.close());
  const signal = () => AbortSignal.timeout(API_TARGETS_TIMEOUT_MS);

  scope.setErrorHandler(async (err, _request, reply) => {
    if (err instanceof ApiError) return reply.code(err.statusCode).send(err.toJSON());
    const status = (err as { statusCode?: number }).statusCode;
    // Fastify's own 4xx (a malformed URL) keep their status; anything else is the target failing us.
    if (status && status >= 400 && status < 500) return reply.code(status).send({ error: (err as Error).message });
    return reply.code(502).send({ error: (err as Error).message });
  });
  scope.setNotFoundHandler(async (request, reply) => reply.code(404).send({ error: `no API route ${request.method} ${request.url}`, field: 'path' }));

  scope.get('/datasets', async () => {
    const s = signal();
    return { generatedAt: deps.clock().toISOString(), datasets: await datasetSummaries(deps, s) };
  });

  scope.get<{ Params: Pick<Params, 'dataset'> }>('/datasets/:dataset/backups', async (request) => {
    const dataset = requireApiDataset(config, request.params.dataset);
    const query = parseQuery(backupListQuery, request.query);
    return backupPage(deps, dataset, query, signal());
  });

  scope.get<{ Params: Params }>('/backups/:dataset/:id', async (request) => {
    const dataset = requireApiDataset(config, request.params.dataset);
    return backupDetail(deps, dataset, requireBackupId(dataset, request.params.id), signal());
  });

  scope.get<{ Params: Params }>('/backups/:dataset/:id/download', async (request, reply) => {
    const dataset = requireApiDataset(config, request.params.dataset);
    const id = requireBackupId(dataset, request.params.id);
    // No timeout here: a large artifact streams for as long as it takes; a client that leaves aborts it.
    const controller = new AbortController();
    request.raw.on('close', () => controller.abort());
    const { body, size, contentType, disposition } = await artifactStream(deps, dataset, id, controller.signal);
    return reply.header('content-length', size).header('content-disposition', disposition).type(contentType).send(body);
  });

  scope.get('/targets', async () => ({ targets: await targetSummaries(deps, signal()) }));

  scope.get('/alerts', async () => {
    const s = signal();
    const [datasets, targets] = await Promise.all([datasetSummaries(deps, s), targetSummaries(deps, s)]);
    return { generatedAt: deps.clock().toISOString(), alerts: currentAlerts(datasets, targets) };
  });
};
