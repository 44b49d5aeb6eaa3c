import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { syncSchedulers } from '../../triggers/cron.js';
import type { LoadedConfig } from '../config/load.js';
import { logReloadFailed, nextConfig } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { watchConfig } from '../config/watch.js';
import { openApp, rebuildMissingMetrics, type App, type StateKeeper } from '../plumbing/app.js';
import { BOARD_PATH, buildServer } from '../server.js';

/** One config's app and the HTTP server on it. */
interface Site {
  app: App;
  server: FastifyInstance;
}

interface Serving extends Site {
  keeper: StateKeeper;
  address: string;
}

async function openSite(config: Config, logger: Logger): Promise<Site> {
  const app = await openApp(config, logger);
  try {
    return { app, server: await newServer(app) };
  } catch (err) {
    await app.close();
    throw err;
  }
}

function newServer(app: App): Promise<FastifyInstance> {
  return buildServer({ config: app.config, recorder: app.recorder, queues: app.queues, deps: app.deps });
}

/** Makes Redis hold what this app's config asks for (job schedulers, metric state), and keeps it so. */
async function takeOverRedisState(app: App, logger: Logger): Promise<StateKeeper> {
  await syncSchedulers(app.functions, app.config, app.queues, logger);
  // Redis lost its metric state (flushed, replaced): rebuild it from the targets before the first scrape.
  const events = await rebuildMissingMetrics(app);
  if (events !== undefined) logger.info({ events }, 'metrics rebuilt from the targets');
  // And again whenever Redis comes back empty while serve runs.
  return app.keepRedisState();
}

/**
 * `lifeboat serve`: the web UI, /api, /metrics, Bull Board and the job schedulers. A changed config file
 * or SIGHUP swaps in a new app and server: the old server stops, the new one listens on the same address
 * (milliseconds without a listener) or, when server.host/port changed, on the new one.
 */
export async function serveCommand(load: () => Promise<LoadedConfig>, logger: Logger, onSignals: (stop: (force: boolean) => Promise<void>) => void): Promise<void> {
  const { config, source } = await load();
  const app = await openApp(config, logger);
  const keeper = await takeOverRedisState(app, logger);
  const server = await newServer(app);
  const address = await server.listen({ host: config.server.host, port: config.server.port });
  let current: Serving = { app, server, keeper, address };
  logger.info({ address, board: `${address}${BOARD_PATH}`, metrics: `${address}/metrics` }, 'serving');

  const reload = async (): Promise<void> => {
    const next = await nextConfig(load, current.app.config, source, logger);
    if (!next) return;
    const { config: wanted, source: from } = next.loaded;
    let site: Site;
    try {
      site = await openSite(wanted, logger);
    } catch (err) {
      logReloadFailed(logger, from, err);
      return;
    }
    const old = current;
    const moved = wanted.server.host !== old.app.config.server.host || wanted.server.port !== old.app.config.server.port;
    // Port 0 (any free port) stays the port it got.
    const oldPort = (old.server.server.address() as AddressInfo).port;
    // The same address: the old server must let go of the port first (its requests in flight, a long
    // download say, finish meanwhile: only the listener is waited for). A new address: no gap at all.
    const oldClosed = moved ? undefined : old.server.close();
    if (oldClosed) await untilNotListening(old.server, oldClosed);
    let address: string;
    try {
      address = await site.server.listen({ host: wanted.server.host, port: moved ? wanted.server.port : oldPort });
    } catch (err) {
      logReloadFailed(logger, from, err);
      await site.server.close();
      await site.app.close();
      await oldClosed;
      // A closed Fastify cannot listen again: the old app gets a new server on its address.
      if (!moved) current = { ...old, server: await relisten(old.app, oldPort) };
      return;
    }
    if (moved) {
      await old.server.close();
      logger.info({ from: old.address, to: address }, 'serving on a new address');
    }
    // The old keeper would put the old config's schedulers back.
    old.keeper.stop();
    const keeper = await takeOverRedisState(site.app, logger).catch((err: unknown) => {
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'could not sync the job schedulers with the new config; the state keeper adds the missing ones once Redis answers');
      return site.app.keepRedisState();
    });
    current = { ...site, keeper, address };
    // The old server's last requests use the old app.
    await oldClosed;
    await old.app.close();
    logger.info({ source: from, ...next.changes, address }, 'config reloaded');
  };

  const watch = watchConfig({ source, onReload: reload, logger });
  onSignals(async () => {
    // A reload under way finishes first, so that what it opened is closed here.
    await watch.stop();
    await current.server.close();
    await current.app.close();
  });
}

async function relisten(app: App, port: number): Promise<FastifyInstance> {
  const server = await newServer(app);
  await server.listen({ host: app.config.server.host, port });
  return server;
}

/** Resolves once `server` has stopped listening (its port is free), or once it has closed altogether. */
async function untilNotListening(server: FastifyInstance, closed: Promise<void>): Promise<void> {
  let done = false;
  const settled = closed.then(
    () => (done = true),
    () => (done = true),
  );
  while (!done && server.server.listening) await Promise.race([settled, new Promise((r) => setTimeout(r, 5))]);
}
