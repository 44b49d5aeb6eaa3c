import type { Logger } from 'pino';
import { allFunctions } from '../../functions/index.js';
import type { WorkerGroup } from '../../queue/workers.js';
import type { LoadedConfig } from '../config/load.js';
import { logReloadFailed, nextConfig } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { watchConfig } from '../config/watch.js';
import { openApp, selectFunctions, type App } from '../plumbing/app.js';

/** One config's app and the workers it runs. */
interface Generation {
  app: App;
  group: WorkerGroup;
  ended?: Promise<void>;
}

async function startGeneration(config: Config, logger: Logger, names: string[] | undefined): Promise<Generation> {
  const app = await openApp(config, logger);
  try {
    return { app, group: await app.startWorkers(names) };
  } catch (err) {
    await app.close();
    throw err;
  }
}

/** Closes the workers as WorkerGroup.close does, then the app, once; a later call can only shorten the wait. */
function endGeneration(generation: Generation, options: Parameters<WorkerGroup['close']>[0]): Promise<void> {
  const closed = generation.group.close(options);
  generation.ended ??= closed.then(() => generation.app.close());
  return generation.ended;
}

/**
 * `lifeboat worker`: consumes the queues of the named functions (default: all). A changed config file or
 * SIGHUP starts workers on the new config, then retires the old ones once their running jobs end.
 */
export async function workerCommand(
  load: () => Promise<LoadedConfig>,
  logger: Logger,
  onSignals: (stop: (force: boolean) => Promise<void>) => void,
  names?: string[],
): Promise<void> {
  const { config, source } = await load();
  selectFunctions(allFunctions, names);
  let current = await startGeneration(config, logger, names);
  const retiring = new Set<Generation>();
  logger.info({ functions: current.group.workers.map((w) => w.name) }, 'worker started');

  // Jobs running on the old workers finish there, however long they take; new jobs go to the new workers.
  const retire = (old: Generation): void => {
    retiring.add(old);
    void endGeneration(old, { waitForRunning: true })
      .catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'closing the workers of the previous config failed'))
      .finally(() => retiring.delete(old));
  };

  const reload = async (): Promise<void> => {
    const next = await nextConfig(load, current.app.config, source, logger);
    if (!next) return;
    let started: Generation;
    try {
      started = await startGeneration(next.loaded.config, logger, names);
    } catch (err) {
      logReloadFailed(logger, next.loaded.source, err);
      return;
    }
    retire(current);
    current = started;
    logger.info({ source: next.loaded.source, ...next.changes, restarted: started.group.workers.map((w) => w.name) }, 'config reloaded');
  };

  const watch = watchConfig({ source, onReload: reload, logger });
  onSignals(async (force) => {
    // A reload under way finishes first, so that no generation is left open.
    await watch.stop();
    await Promise.all([current, ...retiring].map((generation) => endGeneration(generation, { force })));
  });
}
