import type { Logger } from 'pino';
import { configChanges, configFingerprint, type ConfigChanges } from './diff.js';
import { ConfigError, type LoadedConfig } from './load.js';
import type { Config } from './schema.js';

export interface NextConfig {
  loaded: LoadedConfig;
  changes: ConfigChanges;
}

/**
 * The config loaded again, when it is valid and differs from the running one. Otherwise undefined,
 * logged: a broken file never replaces a working config.
 */
export async function nextConfig(load: () => Promise<LoadedConfig>, running: Config, source: string, logger: Logger): Promise<NextConfig | undefined> {
  let loaded: LoadedConfig;
  try {
    loaded = await load();
  } catch (err) {
    logReloadFailed(logger, err instanceof ConfigError ? err.source : source, err);
    return undefined;
  }
  if (configFingerprint(loaded.config) === configFingerprint(running)) {
    logger.debug({ source: loaded.source }, 'config unchanged');
    return undefined;
  }
  return { loaded, changes: configChanges(running, loaded.config) };
}

/** A reload that did not happen, and why: a ConfigError's problems, or the error that stopped it. */
export function logReloadFailed(logger: Logger, source: string, err: unknown): void {
  const problems = err instanceof ConfigError ? err.problems : [err instanceof Error ? err.message : String(err)];
  logger.error({ source, problems }, 'config reload failed: keeping the running config');
}
