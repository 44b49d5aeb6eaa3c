import { createHash } from 'node:crypto';
import type { Config } from './schema.js';
import { Secret } from './secret.js';

/** What a reload changes, by dataset id and by top-level section. */
export interface ConfigChanges {
  added: string[];
  removed: string[];
  /** Datasets whose settings, or whose target's, differ. */
  changed: string[];
  /** Other top-level sections that differ (redis, targets, server, ...). */
  sections: string[];
}

/**
 * A stable text of a parsed config: keys sorted, each secret as a hash of its resolved value, so a
 * rotated secret file or environment variable counts as a change while no value is ever kept in clear.
 */
export function configFingerprint(value: unknown): string {
  return JSON.stringify(canonical(value));
}

function canonical(value: unknown): unknown {
  if (value instanceof Secret) return `secret:${createHash('sha256').update(value.reveal()).digest('hex')}`;
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries.map(([k, v]) => [k, canonical(v)]));
  }
  return value;
}

export function configChanges(before: Config, after: Config): ConfigChanges {
  const datasetPrint = (config: Config, id: string) => {
    const dataset = config.datasets.find((d) => d.id === id)!;
    return configFingerprint({ dataset, target: config.targets[dataset.target.name] });
  };
  const beforeIds = new Set(before.datasets.map((d) => d.id));
  const afterIds = new Set(after.datasets.map((d) => d.id));
  const keys = new Set([...Object.keys(before), ...Object.keys(after)].filter((k) => k !== 'datasets'));
  return {
    added: [...afterIds].filter((id) => !beforeIds.has(id)),
    removed: [...beforeIds].filter((id) => !afterIds.has(id)),
    changed: [...afterIds].filter((id) => beforeIds.has(id) && datasetPrint(before, id) !== datasetPrint(after, id)),
    sections: [...keys].filter((k) => configFingerprint(before[k as keyof Config]) !== configFingerprint(after[k as keyof Config])).sort(),
  };
}
