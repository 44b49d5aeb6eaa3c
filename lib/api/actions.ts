import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { InvalidInputError } from '../../queue/errors.js';
import type { QueueSet } from '../../queue/queues.js';
import type { Config, Dataset } from '../config/schema.js';
import { restoreTargetFor } from '../config/restoreTargets.js';
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
export const BACKUP_FUNCTION: Partial<Record<Dataset['kind'], string>> = { postgres: 'dumpPostgres', bucket: 'mirrorBucket', etcd: 'uploadEtcd' };

const datasetField = z.string().min(1);
/** Each action's body; a field another action takes is refused here too (strict), naming it. */
const actionBodies = {
  backup: z.strictObject({ dataset: datasetField }),
  verify: z.strictObject({ dataset: datasetField, backup: z.string().min(1).optional() }),
  drill: z.strictObject({ dataset: datasetField, backup: z.string().min(1).optional() }),
  restore: z.strictObject({ dataset: datasetField, backup: z.string().min(1), into: z.string().min(1), database: z.string().min(1).optional(), as: z.string().min(1).optional() }),
} as const;
type ActionName = keyof typeof actionBodies;
const ACTIONS = Object.keys(actionBodies) as ActionName[];

function parseBody<A extends ActionName>(action: A, body: unknown): z.infer<(typeof actionBodies)[A]> {
  const parsed = actionBodies[action].safeParse(body ?? {});
  if (parsed.success) return parsed.data as z.infer<(typeof actionBodies)[A]>;
  const issue = parsed.error.issues[0]!;
  const field = issue.code === 'unrecognized_keys' ? issue.keys[0]! : issue.path.join('.') || 'body';
  throw new ApiError(400, `${field}: ${issue.message}`, field);
}

function planAction(config: Config, action: string, body: unknown): { dataset: Dataset; fn: string; input: Record<string, unknown> } {
  if (!ACTIONS.includes(action as ActionName)) throw new ApiError(404, `no action ${JSON.stringify(action)} (known: ${ACTIONS.join(', ')})`, 'action');
  const name = action as ActionName;
  const data = parseBody(name, body);
  const dataset = requireApiDataset(config, data.dataset);
  switch (name) {
    case 'backup': {
      const fn = BACKUP_FUNCTION[dataset.kind];
      if (!fn) throw new ApiError(400, `dataset ${dataset.id} is a ${dataset.kind} dataset: Velero makes its own backups`, 'action');
      return { dataset, fn, input: { dataset: dataset.id } };
    }
    case 'verify':
      return { dataset, fn: 'verifyObject', input: { dataset: dataset.id, backup: (data as { backup?: string }).backup ?? 'latest' } };
    case 'drill': {
      const backup = (data as { backup?: string }).backup;
      return { dataset, fn: 'drillRestore', input: { dataset: dataset.id, ...(backup ? { backup } : {}) } };
    }
    case 'restore': {
      const restore = data as z.infer<(typeof actionBodies)['restore']>;
      const found = restoreTargetFor(config, dataset, restore.into);
      if ('problem' in found) throw new ApiError(400, found.problem, found.field);
      if (restore.as !== undefined && restore.database === undefined) throw new ApiError(400, 'as: needs database: only one database can be restored under a new name', 'as');
      if (dataset.kind !== 'postgres' && restore.database !== undefined) throw new ApiError(400, `database: dataset ${dataset.id} is a ${dataset.kind} dataset and has no databases`, 'database');
      return { dataset, fn: 'restoreBackup', input: { ...restore } };
    }
  }
}

/**
 * The web UI's buttons: back up, verify, drill or restore one dataset now, each enqueued as the job of this
 * minute's tick (a second click while it waits or runs finds the same job; once it has ended, a new one), and the state of a job. Only
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
    const { dataset, fn, input } = planAction(config, request.params.action, request.body);
    await reachable();
    const tick = new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString();
    let { job, created, state } = await queues.enqueueTick(fn, { ...input, tick });
    // This minute's job has already ended: the click asks for a new run, not for the old result.
    if (!created && (state === 'completed' || state === 'failed')) {
      job = await queues.enqueue(fn, { ...input, tick }, { jobId: `${job.id}-again-${Date.now()}` });
      created = true;
      state = await job.getState();
    }
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
