/** One measurement of how much a target holds. */
export interface CapacitySample {
  at: string;
  usedBytes: number;
}

export interface Forecast {
  /** Bytes per day, from a least-squares fit over the recent samples; undefined with fewer than 2 days of data. */
  growthPerDay?: number;
  /** Days until used reaches capacity at that rate; undefined when not growing or capacity is unknown. */
  daysUntilFull?: number;
}

/** Least-squares growth over the samples (at most the last `window` days), and when the disk fills at that rate. */
export function forecast(samples: CapacitySample[], capacityBytes: number | undefined, window = 14): Forecast {
  const sorted = [...samples].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  const last = sorted.at(-1);
  if (!last) return {};
  const since = Date.parse(last.at) - window * 86400_000;
  const recent = sorted.filter((s) => Date.parse(s.at) >= since);
  const xs = recent.map((s) => Date.parse(s.at) / 86400_000);
  if (recent.length < 2 || Math.max(...xs) - Math.min(...xs) < 1) return {};
  const ys = recent.map((s) => s.usedBytes);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const sxx = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  const sxy = xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0);
  const growthPerDay = sxy / sxx;
  if (capacityBytes === undefined || growthPerDay <= 0) return { growthPerDay };
  return { growthPerDay, daysUntilFull: Math.max(0, (capacityBytes - last.usedBytes) / growthPerDay) };
}

/** Keeps one sample per day (the latest) for the last `days` days. */
export function appendSample(history: CapacitySample[], sample: CapacitySample, days = 90): CapacitySample[] {
  const dayOf = (s: CapacitySample) => s.at.slice(0, 10);
  const byDay = new Map(history.map((s) => [dayOf(s), s]));
  byDay.set(dayOf(sample), sample);
  const cutoff = Date.parse(sample.at) - days * 86400_000;
  return [...byDay.values()].filter((s) => Date.parse(s.at) >= cutoff).sort((a, b) => a.at.localeCompare(b.at));
}
