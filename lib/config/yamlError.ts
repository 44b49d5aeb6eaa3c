import type { YAMLError } from 'yaml';

/**
 * `file:7:3: YAML: message`, then the offending line with a caret under the column. Only that line
 * (and the one before when it is blank): the file could hold a secret by mistake.
 */
export function describeYamlError(file: string, text: string, error: YAMLError): string {
  // prettyErrors appends " at line 7, column 3:" and an excerpt of its own.
  const message = error.message.split('\n')[0]!.replace(/ at line \d+, column \d+:$/, '');
  const pos = error.linePos?.[0];
  if (!pos) return `${file}: YAML: ${message}`;
  const lines = text.split(/\r?\n/);
  const at = lines[pos.line - 1] ?? '';
  const width = String(pos.line).length;
  const gutter = (n: number | string, content: string) => `  ${String(n).padStart(width)} | ${content}`.trimEnd();
  // An unclosed bracket is reported on the (often empty) line after it.
  const before = at.trim() === '' && pos.line > 1 ? [gutter(pos.line - 1, lines[pos.line - 2]!)] : [];
  const caret = `${at.slice(0, pos.col - 1).replace(/[^\t]/g, ' ')}^`;
  return [`${file}:${pos.line}:${pos.col}: YAML: ${message}`, ...before, gutter(pos.line, at), gutter('', caret)].join('\n');
}
