import { forecast, type CapacitySample } from '../catalog/capacity.js';
import { LIFEBOAT_RECORDS } from '../catalog/layout.js';
import type { Deps } from '../plumbing/deps.js';

/** How many days of capacity history the API returns. */
export const HISTORY_DAYS = 30;

export interface ApiTarget {
  name: string;
  kind: 's3' | 'dir';
  /** The newest sample pruneCheck took (0 before its first run). */
  usedBytes: number;
  measuredAt?: string;
  capacityBytes?: number;
  growthBytesPerDay?: number;
  daysUntilFull?: number;
  history: CapacitySample[];
  /** The history could not be read (the target is unreachable). */
  error?: string;
}

/**
 * Every configured target with the capacity history pruneCheck keeps on it
 * (_lifeboat/capacity/<target>.json, in the bucket of the first dataset that writes there).
 */
export async function targetSummaries(deps: Deps, signal?: AbortSignal): Promise<ApiTarget[]> {
  const { config } = deps;
  return Promise.all(
    Object.entries(config.targets).map(async ([name, target]): Promise<ApiTarget> => {
      const capacityBytes = target.capacityBytes;
      const home = config.datasets.find((d) => d.target.name === name);
      const base: ApiTarget = { name, kind: target.kind, usedBytes: 0, capacityBytes, history: [] };
      if (!home) return base;
      let samples: CapacitySample[];
      try {
        const stored = await deps.storeFor(home).getJson<{ samples?: CapacitySample[] }>(`${LIFEBOAT_RECORDS}capacity/${name}.json`, { signal });
        samples = [...(stored?.samples ?? [])].sort((a, b) => a.at.localeCompare(b.at));
      } catch (err) {
        return { ...base, error: (err as Error).message };
      }
      const last = samples.at(-1);
      const f = forecast(samples, capacityBytes);
      const since = last ? Date.parse(last.at) - HISTORY_DAYS * 86400_000 : 0;
      return {
        ...base,
        usedBytes: last?.usedBytes ?? 0,
        measuredAt: last?.at,
        growthBytesPerDay: f.growthPerDay,
        daysUntilFull: f.daysUntilFull,
        history: samples.filter((s) => Date.parse(s.at) >= since),
      };
    }),
  );
}
