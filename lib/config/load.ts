import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError } from './errors.js';
import { embeddedDefaults } from './defaults.js';
import { formatIssues } from './issues.js';
import { configSchema, crossReferenceIssues, type Config } from './schema.js';
import { describeYamlError } from './yamlError.js';

export const DEFAULT_CONFIG_FILE = 'lifeboat.yaml';

// In a module of its own so the CLI can catch it without loading the schema (zod, yaml, cron-parser).
export { ConfigError };

export interface LoadedConfig {
  config: Config;
  /** The file read, or "embedded defaults". */
  source: string;
}

export interface LoadOptions {
  /** -c FILE; otherwise LIFEBOAT_CONFIG; otherwise ./lifeboat.yaml if it exists; otherwise the embedded defaults. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export async function loadConfig(options: LoadOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const named = options.file ?? env.LIFEBOAT_CONFIG;
  const file = resolve(cwd, named ?? DEFAULT_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && named === undefined) {
      return { config: parseConfig(embeddedDefaults, 'embedded defaults', { env, baseDir: cwd }), source: 'embedded defaults' };
    }
    throw new ConfigError(file, [`cannot read config file (${code ?? String(err)})`]);
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => describeYamlError(file, text, e)));
  }
  return { config: parseConfig(doc.toJS() ?? {}, file, { env, baseDir: dirname(file) }), source: file };
}

/** Validates a raw config object. Relative `dir` target paths resolve against baseDir. */
export function parseConfig(raw: unknown, source: string, options: { env?: NodeJS.ProcessEnv; baseDir?: string } = {}): Config {
  const schema = configSchema(options.env);
  const result = schema.safeParse(raw);
  const problems = [...(result.success ? [] : formatIssues(result.error, { schema, input: raw })), ...crossReferenceIssues(raw)];
  if (!result.success || problems.length > 0) throw new ConfigError(source, problems);
  const config = result.data;
  const baseDir = options.baseDir ?? process.cwd();
  for (const target of Object.values(config.targets)) {
    if (target.kind === 'dir' && !isAbsolute(target.path)) target.path = resolve(baseDir, target.path);
  }
  return config;
}

export function findDataset(config: Config, id: string) {
  return config.datasets.find((d) => d.id === id);
}
