import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { InvalidInputError } from '../../queue/errors.js';
import type { QueueSet } from '../../queue/queues.js';
import type { Config, Dataset } from '../config/schema.js';
import { requireRole } from '../plumbing/auth.js';
import { redisUrlForDisplay, withinTimeout } from '../plumbing/redis.js';
import { ApiError, requireApiDataset } from './schemas.js';

/** How long an action waits for Redis before it answers 503. */
export const ACTION_REDIS_TIMEOUT_MS = 2000;

export interface ActionOptions {
  config: Config;
  queues: QueueSet;
}

/** The function a button runs for a dataset of each kind; Velero backs itself up. */
const BACKUP_FUNCTION: Partial<Record<Dataset['kind'], string>> = { postgres: 'dumpPostgres', bucket: 'mirrorBucket', etcd: 'uploadEtcd' };

const actionBody = z.strictObject({ dataset: z.string().min(1) });

function planAction(action: string, dataset: Dataset): { fn: string; input: Record<string, unknown> } {
  if (action === 'backup') {
    const fn = BACKUP_FUNCTION[dataset.kind];
    if (!fn) throw new ApiError(400, `dataset ${dataset.id} is a ${dataset.kind} dataset: Velero makes its own backups`, 'action');
    return { fn, input: { dataset: dataset.id } };
  }
  if (action === 'verify') return { fn: 'verifyObject', input: { dataset: dataset.id, backup: 'latest' } };
  if (action === 'drill') return { fn: 'drillRestore', input: { dataset: dataset.id } };
  throw new ApiError(404, `no action ${JSON.stringify(action)} (known: backup, verify, drill)`, 'action');
}

/**
 * The web UI's buttons: back up, verify or drill one dataset now, each enqueued as the job of this
 * minute's tick (a second click in the same minute finds the same job), and the state of a job. Only
 * these need Redis; operators only.
 */
export const actionRoutes: FastifyPluginAsync<ActionOptions> = async (scope: FastifyInstance, { config, queues }) => {
  const redisUrl = redisUrlForDisplay(config);
  const reachable = async () => {
    try {
      await withinTimeout(queues.connection, redisUrl, () => queues.connection.ping(), ACTION_REDIS_TIMEOUT_MS);
    } catch (err) {
      throw new ApiError(503, `the queue (Redis at ${redisUrl}) is unavailable: actions need it; the catalog pages do not (${(err as Error).message})`, 'redis');
    }
  };
  scope.setErrorHandler(async (err, _request, reply) => {
    if (err instanceof ApiError) return reply.code(err.statusCode).send(err.toJSON());
    if (err instanceof InvalidInputError) return reply.code(400).send({ error: err.message, field: 'dataset' });
    const status = (err as { statusCode?: number }).statusCode;
    if (status && status >= 400 && status < 500) return reply.code(status).send({ error: (err as Error).message, field: 'body' });
    return reply.code(502).send({ error: (err as Error).message });
  });

  scope.post<{ Params: { action: string }; Body: unknown }>('/actions/:action', { preHandler: requireRole('operator') }, async (request, reply) => {
    const body = actionBody.safeParse(request.body ?? {});
    if (!body.success) throw new ApiError(400, `body: ${body.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`, body.error.issues[0]?.path.join('.') || 'body');
    const dataset = requireApiDataset(config, body.data.dataset);
    const { fn, input } = planAction(request.params.action, dataset);
    await reachable();
    const tick = new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString();
    const { job, created, state } = await queues.enqueueTick(fn, { ...input, tick });
    return reply.code(202).send({ action: request.params.action, fn, dataset: dataset.id, tick, jobId: job.id, created, state, status: `/api/jobs/${fn}/${encodeURIComponent(job.id ?? '')}` });
  });

  scope.get<{ Params: { fn: string; id: string } }>('/jobs/:fn/:id', async (request) => {
    const { fn, id } = request.params;
    if (!queues.functions.some((f) => f.name === fn)) throw new ApiError(404, `no function ${JSON.stringify(fn)}`, 'fn');
    await reachable();
    const status = await queues.jobStatus(fn, id);
    if (!status) throw new ApiError(404, `no job ${id} of ${fn}`, 'id');
    return { fn, id, ...status };
  });
};
