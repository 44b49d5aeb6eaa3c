import type { z } from 'zod';
import { orList } from '../text.js';
import { knownKeys, schemaAt } from './schemaWalk.js';
import { closest } from './suggest.js';

/** `['datasets', 1, 'source', 'url']` → `datasets[1].source.url` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

/** The schema that refused `input`: it names the keys and kinds that would have been accepted. */
export interface IssueContext {
  schema: z.core.$ZodType;
  input: unknown;
}

/**
 * One line per problem, "path: message", never including the offending value (a key name or a kind is
 * fine to echo). With the context, unknown keys and kinds get suggestions.
 */
export function formatIssues(error: z.ZodError, context?: IssueContext): string[] {
  return error.issues.flatMap((issue) => (context && explain(issue, context)) ?? [line(issue.path, issue.message)]);
}

function line(path: readonly PropertyKey[], message: string): string {
  const at = formatPath(path);
  return at ? `${at}: ${message}` : message;
}

function explain(issue: z.core.$ZodIssue, context: IssueContext): string[] | undefined {
  if (issue.code === 'unrecognized_keys') return unknownKeys(issue.path, issue.keys, context);
  if (issue.code !== 'invalid_union') return undefined;
  if (issue.discriminator !== undefined && 'options' in issue && issue.options) return [badTag(issue.path, issue.discriminator, issue.options.map(String), context)];
  // A plain union of objects refuses a typo once per option, inside its own errors.
  const everywhere = issue.errors.map((branch) => branch.flatMap((i) => (i.code === 'unrecognized_keys' && i.path.length === 0 ? i.keys : [])));
  const unknown = everywhere[0]?.filter((key) => everywhere.every((keys) => keys.includes(key))) ?? [];
  return unknown.length > 0 ? unknownKeys(issue.path, unknown, context) : undefined;
}

/** `datasets[0].retension: unknown key; did you mean "retention"?`, else the keys known there. */
function unknownKeys(path: readonly PropertyKey[], keys: readonly string[], context: IssueContext): string[] {
  const place = schemaAt(context.schema, context.input, path);
  const known = place ? knownKeys(place.schema) : [];
  return keys.map((key) => {
    const near = closest(key, known);
    const hint = near ? `; did you mean ${JSON.stringify(near)}?` : known.length > 0 ? ` (known: ${known.join(', ')})` : '';
    return line([...path, key], `unknown key${hint}`);
  });
}

/** `datasets[2].kind: "postgress" is not a dataset kind; expected one of postgres, bucket, etcd or velero; did you mean "postgres"?` */
function badTag(path: readonly PropertyKey[], tag: string, valid: string[], context: IssueContext): string {
  // zod reports a discriminator at <object>.<tag>.
  const place = schemaAt(context.schema, context.input, path.slice(0, -1));
  const given = (place?.value as Record<string, unknown> | undefined)?.[tag];
  const expected = `expected one of ${orList(valid)}`;
  if (given === undefined) return line(path, `Required; ${expected}`);
  const field = place?.field?.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
  // "datasets" → "a dataset kind", "restoreTargets" → "a restore target kind", "source" → "a source mode".
  const noun = [place?.element ? field?.replace(/s$/, '') : field, tag].filter(Boolean).join(' ');
  const article = /^[aeiou]/.test(noun) ? 'an' : 'a';
  if (typeof given !== 'string') return line(path, `not ${article} ${noun}; ${expected}`);
  const near = closest(given, valid);
  return line(path, `${JSON.stringify(given)} is not ${article} ${noun}; ${expected}${near ? `; did you mean ${JSON.stringify(near)}?` : ''}`);
}
