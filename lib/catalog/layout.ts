/**
 * Where things live on a target. Keys derive only from the dataset and the scheduled tick, so a re-run
 * of the same tick overwrites the same keys:
 *   <prefix><dataset>/<YYYYMMDDTHHMMSSZ>/<artifact>   plus manifest.json and verify.json beside it
 */
import type { Dataset } from '../config/schema.js';

export const MANIFEST_FILE = 'manifest.json';
export const VERIFY_FILE = 'verify.json';
export const DRILL_FILE = 'drill.json';

/** 2026-11-26T02:00:00.000Z → 20261126T020000Z (sorts by time; no colons, which some filesystems refuse). */
export function tickStamp(tick: Date): string {
  return tick.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

export function parseTickStamp(stamp: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(stamp);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m;
  const date = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/**
 * Where a dataset's backup folders live. A mirror's objects keep their keys under its target prefix, so
 * its reports live outside it, under _lifeboat/mirrors/ at the bucket root: no source key can land there.
 */
export function datasetPrefix(dataset: Pick<Dataset, 'id' | 'target' | 'kind'>): string {
  return dataset.kind === 'bucket' ? `${LIFEBOAT_RECORDS}mirrors/${dataset.id}/` : `${dataset.target.prefix}${dataset.id}/`;
}

/** Lifeboat's own records that sit beside no backup (mirror reports, capacity history, other tools' verify records). */
export const LIFEBOAT_RECORDS = '_lifeboat/';

export function backupDir(dataset: Pick<Dataset, 'id' | 'target' | 'kind'>, tick: Date): string {
  return `${datasetPrefix(dataset)}${tickStamp(tick)}/`;
}

/** The key of `name` in the same folder as `key`. */
export function siblingKey(key: string, name: string): string {
  return key.slice(0, key.lastIndexOf('/') + 1) + name;
}

/** Where uploadEtcd keeps a dataset's k3s server token (one object, replaced when the token changes). */
export function serverTokenKey(dataset: Pick<Dataset, 'id' | 'target'>): string {
  return `${dataset.target.prefix}token/${dataset.id}/server-token`;
}
