import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import type { AnyFunction } from '../../queue/define.js';
import { QueueSet } from '../../queue/queues.js';
import type { Emit } from '../../queue/runner.js';
import { WorkerGroup } from '../../queue/workers.js';
import type { Config } from '../config/schema.js';
import { createDeps, type Deps } from './deps.js';
import { MemoryMetricsRecorder, RedisMetricsRecorder, type MetricsRecorder } from '../metrics/recorder.js';
import { createRedis, metricsKey } from './redis.js';

/** The wired-up process: deps, queues and the fan-out; what the CLI commands share. */
export interface App {
  config: Config;
  functions: readonly AnyFunction[];
  deps: Deps;
  redis: Redis;
  queues: QueueSet;
  recorder: MetricsRecorder;
  emit: Emit;
  startWorkers(names?: string[]): Promise<WorkerGroup>;
  close(): Promise<void>;
}

export function selectFunctions(functions: readonly AnyFunction[], names?: string[]): AnyFunction[] {
  if (!names || names.length === 0) return [...functions];
  return names.map((name) => {
    const fn = functions.find((f) => f.name === name);
    if (!fn) throw new Error(`unknown function "${name}" (known: ${functions.map((f) => f.name).join(', ')})`);
    return fn;
  });
}

export async function openApp(config: Config, logger: Logger, options: { functions?: readonly AnyFunction[]; clock?: () => Date } = {}): Promise<App> {
  const functions = options.functions ?? allFunctions;
  const redis = createRedis(config);
  // Fail fast with a clear message instead of ioredis retrying forever in the background.
  await redis.ping().catch((err: unknown) => {
    redis.disconnect();
    throw new Error(`cannot reach Redis at ${config.redis.url}: ${(err as Error).message}`);
  });
  const recorder = new RedisMetricsRecorder(redis, metricsKey(config));
  const deps = createDeps({ config, logger, metrics: recorder, clock: options.clock });
  const queues = new QueueSet(functions, redis, config.redis.prefix);
  const emit = queues.emitter(config, recorder);
  const groups: WorkerGroup[] = [];
  return {
    config,
    functions,
    deps,
    redis,
    queues,
    recorder,
    emit,
    async startWorkers(names) {
      const group = new WorkerGroup({
        functions: selectFunctions(functions, names),
        deps,
        emit,
        connection: redis,
        prefix: config.redis.prefix,
        shutdownGraceMs: config.server.shutdownGraceMs,
      });
      await group.waitUntilReady();
      groups.push(group);
      return group;
    },
    async close() {
      await Promise.all(groups.map((g) => g.close()));
      await queues.close();
      await deps.close();
      redis.disconnect();
    },
  };
}

/** Deps for work that needs no Redis: inline runs, restores, listings. */
export function openLocal(config: Config, logger: Logger, options: { clock?: () => Date } = {}): Deps {
  return createDeps({ config, logger, metrics: new MemoryMetricsRecorder(), clock: options.clock });
}
