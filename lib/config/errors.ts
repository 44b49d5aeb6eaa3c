import { plural } from '../text.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    // A problem may span lines (a YAML excerpt): all of it stays indented under the source.
    super(`${source}: ${plural(problems.length, 'problem')}\n${problems.map((p) => `  ${p.replaceAll('\n', '\n  ')}`).join('\n')}`);
  }
}
