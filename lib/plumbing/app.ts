import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import type { AnyFunction } from '../../queue/define.js';
import { errorMessage } from '../../queue/errors.js';
import { QueueSet } from '../../queue/queues.js';
import type { Emit } from '../../queue/runner.js';
import { WorkerGroup, type WorkerGroupOptions } from '../../queue/workers.js';
import { missingSchedulers, syncSchedulers } from '../../triggers/cron.js';
import type { Config } from '../config/schema.js';
import { createDeps, type Deps } from './deps.js';
import { RedisMetricsRecorder, type MetricsRecorder } from '../metrics/recorder.js';
import { rebuildMetrics } from '../metrics/rebuild.js';
import { checkRedis, createRedis, metricsKey, metricsRebuildKey, REDIS_CHECK_TIMEOUT_MS, redisUrlForDisplay, RedisWatch, withinTimeout } from './redis.js';

// Lives in deps.ts, so that commands needing no Redis do not load bullmq, ioredis and the functions with this module.
export { openLocal } from './deps.js';

/** How often serve checks that Redis still has its job schedulers and metric state. */
export const STATE_CHECK_INTERVAL_MS = 30_000;

/** Stall detection of the workers (tests shorten it); BullMQ's defaults otherwise. */
export type StallOptions = Pick<WorkerGroupOptions, 'lockDurationMs' | 'stalledIntervalMs' | 'maxStalledCount'>;

/** What a state check put back into Redis. */
export interface RestoredState {
  /** Job schedulers upserted (0: none were missing). */
  schedulers: number;
  /** Events replayed from the targets into the metric state; absent when it was there (or another replica rebuilds it). */
  metricEvents?: number;
}

/** Keeps serve's state in Redis; see App.keepRedisState. */
export interface StateKeeper {
  /** Checks now (a check already running is joined, not repeated); what it restored, if anything. */
  check(): Promise<RestoredState | undefined>;
  stop(): void;
}

/** The wired-up process: deps, queues and the fan-out; what the CLI commands share. */
export interface App {
  config: Config;
  functions: readonly AnyFunction[];
  deps: Deps;
  redis: Redis;
  queues: QueueSet;
  recorder: MetricsRecorder;
  emit: Emit;
  /** The state of the Redis connection; logs its losses and recoveries. */
  watch: RedisWatch;
  startWorkers(names?: string[], stall?: StallOptions): Promise<WorkerGroup>;
  /**
   * Restores the job schedulers and the metric state whenever Redis comes back without them (restarted
   * without persistence, FLUSHALL): checked after every reconnect and every `intervalMs`. For serve.
   */
  keepRedisState(options?: { intervalMs?: number }): StateKeeper;
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

/**
 * Connects to Redis and wires the app. Throws RedisUnavailableError (the CLI exits 3) when Redis does
 * not answer within a few seconds, before any of the connections that wait for Redis forever exist.
 */
export async function openApp(config: Config, logger: Logger, options: { functions?: readonly AnyFunction[]; clock?: () => Date } = {}): Promise<App> {
  const functions = options.functions ?? allFunctions;
  await checkRedis(config);
  const redis = createRedis(config);
  const watch = new RedisWatch(redis, redisUrlForDisplay(config), logger);
  // Ready before anything uses it; bounded, since this connection would wait for Redis forever.
  await withinTimeout(redis, watch.url, () => redis.ping(), REDIS_CHECK_TIMEOUT_MS).catch((err: unknown) => {
    watch.close();
    redis.disconnect();
    throw err;
  });
  const recorder = new RedisMetricsRecorder(redis, metricsKey(config));
  const deps = createDeps({ config, logger, metrics: recorder, clock: options.clock });
  const queues = new QueueSet(functions, redis, config.redis.prefix);
  // A Queue re-emits its connection's errors; the watch has already reported the outage.
  for (const [fn, queue] of queues.queues) queue.on('error', (err) => watch.reportError(err, { queue: fn }));
  const emit = queues.emitter(config, recorder);
  const groups: WorkerGroup[] = [];
  const keepers: StateKeeper[] = [];
  const app: App = {
    config,
    functions,
    deps,
    redis,
    queues,
    recorder,
    emit,
    watch,
    // The config's stall settings unless a caller (a test) gives its own.
    async startWorkers(names, stall = config.worker) {
      const group = new WorkerGroup({
        functions: selectFunctions(functions, names),
        deps,
        emit,
        connection: redis,
        prefix: config.redis.prefix,
        shutdownGraceMs: config.server.shutdownGraceMs,
        onError: (err, context) => watch.reportError(err, context),
        ...stall,
      });
      await group.waitUntilReady();
      groups.push(group);
      return group;
    },
    keepRedisState(keepOptions = {}) {
      const keeper = keepRedisState(app, logger, keepOptions.intervalMs ?? STATE_CHECK_INTERVAL_MS);
      keepers.push(keeper);
      return keeper;
    },
    async close() {
      for (const keeper of keepers) keeper.stop();
      await Promise.all(groups.map((g) => g.close()));
      await queues.close();
      await deps.close();
      watch.close();
      redis.disconnect();
    },
  };
  return app;
}

/**
 * Rebuilds the metric state from the targets when Redis has none. Returns the events replayed, or
 * undefined when there was state, or another serve replica is rebuilding it: two replays would count
 * a failed drill twice.
 */
export async function rebuildMissingMetrics(app: App): Promise<number | undefined> {
  if (await app.recorder.hasState()) return undefined;
  const claimed = await app.redis.set(metricsRebuildKey(app.config), randomUUID(), 'PX', 60_000, 'NX');
  if (claimed !== 'OK') return undefined;
  return rebuildMetrics(app.deps);
}

/** Puts back what an empty Redis lost: the job schedulers (from the config), the metric state (from the targets). */
export async function restoreRedisState(app: App, logger: Logger): Promise<RestoredState | undefined> {
  const missing = await missingSchedulers(app.functions, app.config, app.queues);
  const schedulers = missing > 0 ? (await syncSchedulers(app.functions, app.config, app.queues, logger)).upserted.length : 0;
  const metricEvents = await rebuildMissingMetrics(app);
  return schedulers > 0 || metricEvents !== undefined ? { schedulers, metricEvents } : undefined;
}

function keepRedisState(app: App, logger: Logger, intervalMs: number): StateKeeper {
  const once = async (): Promise<RestoredState | undefined> => {
    // Down: nothing to check; the reconnect triggers the next check.
    if (!app.watch.up) return undefined;
    try {
      const restored = await restoreRedisState(app, logger);
      if (restored) logger.warn({ redis: app.watch.url, ...restored }, 'Redis came back without the job schedulers or the metric state; restored them');
      return restored;
    } catch (err) {
      logger.warn({ redis: app.watch.url, err: errorMessage(err) }, 'could not check the state in Redis');
      return undefined;
    }
  };
  let running: Promise<RestoredState | undefined> | undefined;
  const check = (): Promise<RestoredState | undefined> => {
    running ??= once().finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  const stopListening = app.watch.onReconnect(() => void check());
  return {
    check,
    stop() {
      clearInterval(timer);
      stopListening();
    },
  };
}
