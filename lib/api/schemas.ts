import { z } from 'zod';
import type { Config, Dataset } from '../config/schema.js';
import { parseTickStamp } from '../catalog/layout.js';

/** A 4xx answer of the API: `{ error, field }`, field naming the parameter that was wrong. */
export class ApiError extends Error {
  constructor(readonly statusCode: 400 | 404 | 503, message: string, readonly field?: string) {
    super(message);
  }
  toJSON() {
    return { error: this.message, field: this.field };
  }
}

/** What the API calls a backup's state; the catalog's "unverified" splits into never checked and changed since. */
export const apiStatuses = ['verified', 'pending', 'corrupt', 'changed-since-verified'] as const;
export type ApiStatus = (typeof apiStatuses)[number];

export const backupListQuery = z.strictObject({
  offset: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  sort: z.enum(['time', 'size']).default('time'),
  order: z.enum(['asc', 'desc']).default('desc'),
  status: z.enum(apiStatuses).optional(),
});
export type BackupListQuery = z.infer<typeof backupListQuery>;

/** Query strings come as strings (or arrays when repeated); an empty value counts as not given. */
export function parseQuery<T extends z.ZodType>(schema: T, query: unknown): z.infer<T> {
  const raw = Object.fromEntries(Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== ''));
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.code === 'unrecognized_keys' ? issue.keys[0] : issue.path.map(String).join('.');
  throw new ApiError(400, `${field}: ${issue.message}`, field);
}

/** A Velero backup or k3s etcd snapshot name: DNS-label-like, never a path. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export function requireApiDataset(config: Config, id: string): Dataset {
  const dataset = config.datasets.find((d) => d.id === id);
  if (!dataset) throw new ApiError(404, `dataset "${id}" is not in the config (known: ${config.datasets.map((d) => d.id).join(', ') || 'none'})`, 'dataset');
  return dataset;
}

/**
 * A backup id as the URL gives it: a tick stamp (20261126T020000Z), or for etcd and Velero a snapshot or
 * backup name. Anything else (slashes, dots only, `..`) is refused before it reaches a key.
 */
export function requireBackupId(dataset: Dataset, id: string): string {
  if (parseTickStamp(id)) return id;
  const named = dataset.kind === 'etcd' || dataset.kind === 'velero';
  if (named && SNAPSHOT_NAME.test(id) && !id.includes('..')) return id;
  throw new ApiError(400, named ? `backup id "${id}" is neither a tick stamp (YYYYMMDDTHHMMSSZ) nor a snapshot name` : `backup id "${id}" is not a tick stamp (YYYYMMDDTHHMMSSZ)`, 'id');
}
