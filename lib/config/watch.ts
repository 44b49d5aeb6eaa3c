import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, isAbsolute } from 'node:path';
import type { Logger } from 'pino';

/** Edits come in bursts (write, chmod, rename): one reload for all of them. */
export const RELOAD_DEBOUNCE_MS = 300;

/** Kubernetes updates a mounted ConfigMap by swapping this symlink, never touching the file's own name. */
const CONFIGMAP_SWAP = '..data';

export interface ConfigWatch {
  /** No more reloads; resolves once a running one has finished. */
  stop(): Promise<void>;
}

/**
 * Calls `onReload` on SIGHUP and whenever the config file changes, debounced; one reload at a time, and
 * requests during a reload make one more after it. `source` is the loaded config's: a file (an absolute
 * path) is watched, the embedded defaults are not. The directory is watched, not the file, so an editor
 * that saves by renaming a new file over the old one is seen too.
 */
export function watchConfig(options: { source: string; onReload: () => Promise<void>; logger: Logger; debounceMs?: number }): ConfigWatch {
  const { source, onReload, logger, debounceMs = RELOAD_DEBOUNCE_MS } = options;
  const file = isAbsolute(source) ? source : undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;

  const run = (): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = onReload()
      .catch((err: unknown) => logger.error({ source, problems: [err instanceof Error ? err.message : String(err)] }, 'config reload failed: keeping the running config'))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          run();
        }
      });
  };
  const request = (): void => {
    clearTimeout(timer);
    timer = setTimeout(run, debounceMs);
  };

  process.on('SIGHUP', request);
  let watcher: FSWatcher | undefined;
  if (file) {
    const name = basename(file);
    watcher = watch(dirname(file), (_event, changed) => {
      if (changed === name || changed === CONFIGMAP_SWAP) request();
    });
    watcher.on('error', (err) => logger.warn({ file, err: err.message }, 'cannot watch the config file any more; reload with SIGHUP'));
  }

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      process.off('SIGHUP', request);
      watcher?.close();
      await running;
    },
  };
}
