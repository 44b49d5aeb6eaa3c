import type { Redis } from 'ioredis';
import type { EventName, EventPayload } from '../../queue/events.js';

/** A stored sample: metric name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Turns events and job failures into metric state. The state lives outside the process (Redis), so it
 * survives restarts and agrees across replicas; /metrics only reads it.
 */
export interface MetricsRecorder {
  onEvent<E extends EventName>(event: E, payload: EventPayload<E>): Promise<void>;
  /**
   * Counts a job that failed for good under its function; a job of a configured dataset also sets that
   * dataset's last-failure time. A dataset the config does not know gets no series: it has no kind.
   */
  jobFailed(fn: string, dataset: { id: string; kind: string } | undefined, at: Date): Promise<void>;
  /** Adds to a counter (name ends in _total). */
  count(name: string, labels: Record<string, string>, by?: number): Promise<void>;
  samples(): Promise<Sample[]>;
  /** Whether any state exists (false after Redis was flushed or replaced, until a rebuild). */
  hasState(): Promise<boolean>;
  /** Notes that the state was rebuilt from the targets, so state exists even when they had nothing to say. */
  markRebuilt(at: Date): Promise<void>;
}

const seconds = (iso: string) => Date.parse(iso) / 1000;

// Sets several fields, but only if ARGV[2] (a timestamp) is at least the one stored in ARGV[1]:
// a retried or late event for an older backup must not move "last success" or "size" backwards.
const SET_IF_NEWER = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1`;

/** A failure counted once per failure: only when its time is newer than the last one counted (a replay is not). */
const COUNT_IF_NEWER = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[3], 1)
return 1`;

function field(name: string, labels: Record<string, string>): string {
  return JSON.stringify([name, labels]);
}

/** One marker per backup whose newest check failed; exported only as a count per dataset. */
const CORRUPT_MARKER = '_corrupt_backup';
export const CORRUPT_GAUGE = 'lifeboat_backups_corrupt';
/** When the state was last rebuilt from the targets; never exported. */
const REBUILT_MARKER = '_rebuilt_from_targets';

abstract class BaseRecorder implements MetricsRecorder {
  protected abstract setIfNewer(tsField: string, ts: number, others: Array<[string, number]>): Promise<void>;
  protected abstract increment(field: string, by: number): Promise<void>;
  /** Sets `tsField` to `ts` and adds 1 to `counter`, only if `ts` is newer than `tsField`. */
  protected abstract countIfNewer(tsField: string, ts: number, counter: string): Promise<void>;
  protected abstract set(field: string, value: number): Promise<void>;
  protected abstract unset(field: string): Promise<void>;
  protected abstract fieldNames(): Promise<string[]>;
  abstract hasState(): Promise<boolean>;
  abstract samples(): Promise<Sample[]>;

  async onEvent<E extends EventName>(event: E, payload: EventPayload<E>): Promise<void> {
    if (event === 'backup.uploaded') {
      const p = payload as EventPayload<'backup.uploaded'>;
      const labels = { dataset: p.dataset, kind: p.kind };
      await this.setIfNewer(field('lifeboat_backup_last_success_timestamp_seconds', labels), seconds(p.takenAt ?? p.finishedAt), [
        [field('lifeboat_backup_size_bytes', labels), p.dataBytes ?? p.size],
        [field('lifeboat_backup_duration_seconds', labels), (Date.parse(p.finishedAt) - Date.parse(p.startedAt)) / 1000],
      ]);
    } else if (event === 'backup.observed') {
      const p = payload as EventPayload<'backup.observed'>;
      const labels = { dataset: p.dataset, kind: p.kind };
      await this.setIfNewer(field('lifeboat_backup_last_success_timestamp_seconds', labels), seconds(p.finishedAt), p.size === undefined ? [] : [[field('lifeboat_backup_size_bytes', labels), p.size]]);
    } else if (event === 'backup.verified') {
      const p = payload as EventPayload<'backup.verified'>;
      await this.setIfNewer(field('lifeboat_verify_last_success_timestamp_seconds', { dataset: p.dataset, kind: p.kind }), seconds(p.checkedAt), []);
      await this.unset(field(CORRUPT_MARKER, { dataset: p.dataset, kind: p.kind, key: p.key }));
    } else if (event === 'backup.replicated') {
      const p = payload as EventPayload<'backup.replicated'>;
      const labels = { dataset: p.dataset, replica: p.replica };
      await this.setIfNewer(field('lifeboat_replica_last_success_timestamp_seconds', labels), seconds(p.backupAt), []);
      // Lag and pending are measured against the primary now, so they change while the replica's newest copy stays.
      await this.set(field('lifeboat_replica_lag_seconds', labels), p.lagSeconds);
      if (p.pendingBackups !== undefined) await this.set(field('lifeboat_replica_pending_backups', labels), p.pendingBackups);
    } else if (event === 'catalog.measured') {
      const p = payload as EventPayload<'catalog.measured'>;
      for (const name of await this.fieldNames()) {
        const [metric, labels] = JSON.parse(name) as [string, Record<string, string>];
        if (metric === CORRUPT_MARKER && labels.dataset === p.dataset && !p.corruptKeys.includes(labels.key ?? '')) await this.unset(name);
      }
      for (const key of p.corruptKeys) await this.set(field(CORRUPT_MARKER, { dataset: p.dataset, kind: p.kind, key }), seconds(p.measuredAt));
    } else if (event === 'drill.completed') {
      const p = payload as EventPayload<'drill.completed'>;
      const labels = { dataset: p.dataset, kind: p.kind };
      if (p.ok) {
        await this.setIfNewer(field('lifeboat_drill_last_success_timestamp_seconds', labels), seconds(p.finishedAt), [
          [field('lifeboat_drill_duration_seconds', labels), (Date.parse(p.finishedAt) - Date.parse(p.startedAt)) / 1000],
        ]);
      } else {
        // pruneCheck and a rebuild replay the newest drill: the same failure must not count again.
        await this.countIfNewer(field('lifeboat_drill_last_failure_timestamp_seconds', labels), seconds(p.finishedAt), field('lifeboat_drill_failures_total', labels));
      }
    } else if (event === 'capacity.measured') {
      const p = payload as EventPayload<'capacity.measured'>;
      const labels = { target: p.target };
      await this.set(field('lifeboat_target_used_bytes', labels), p.usedBytes);
      if (p.capacityBytes !== undefined) await this.set(field('lifeboat_target_capacity_bytes', labels), p.capacityBytes);
      if (p.daysUntilFull !== undefined) await this.set(field('lifeboat_target_days_until_full', labels), p.daysUntilFull);
      else await this.unset(field('lifeboat_target_days_until_full', labels));
      for (const d of p.datasets) await this.set(field('lifeboat_dataset_bytes', { dataset: d.dataset, kind: d.kind }), d.bytes);
    } else if (event === 'backup.corrupt') {
      const p = payload as EventPayload<'backup.corrupt'>;
      const labels = { dataset: p.dataset, kind: p.kind };
      await this.increment(field('lifeboat_verify_failures_total', labels), 1);
      await this.setIfNewer(field('lifeboat_verify_last_failure_timestamp_seconds', labels), seconds(p.checkedAt), []);
      await this.set(field(CORRUPT_MARKER, { ...labels, key: p.key }), seconds(p.checkedAt));
    }
  }

  async jobFailed(fn: string, dataset: { id: string; kind: string } | undefined, at: Date): Promise<void> {
    await this.increment(field('lifeboat_job_failures_total', { fn }), 1);
    if (dataset) {
      await this.setIfNewer(field('lifeboat_backup_last_failure_timestamp_seconds', { dataset: dataset.id, kind: dataset.kind, fn }), at.getTime() / 1000, []);
    }
  }

  async count(name: string, labels: Record<string, string>, by = 1): Promise<void> {
    await this.increment(field(name, labels), by);
  }

  async markRebuilt(at: Date): Promise<void> {
    await this.set(field(REBUILT_MARKER, {}), at.getTime() / 1000);
  }

  protected static parse(entries: Iterable<[string, string]>): Sample[] {
    const out: Sample[] = [];
    const corrupt = new Map<string, Sample>();
    for (const [key, value] of entries) {
      const [name, labels] = JSON.parse(key) as [string, Record<string, string>];
      if (name === REBUILT_MARKER) continue;
      if (name !== CORRUPT_MARKER) {
        out.push({ name, labels, value: Number(value) });
        continue;
      }
      const gauge = { dataset: labels.dataset ?? '', kind: labels.kind ?? '' };
      const id = field(CORRUPT_GAUGE, gauge);
      corrupt.set(id, { name: CORRUPT_GAUGE, labels: gauge, value: (corrupt.get(id)?.value ?? 0) + 1 });
    }
    return [...out, ...corrupt.values()];
  }
}

/** Metric state in one Redis hash. */
export class RedisMetricsRecorder extends BaseRecorder {
  constructor(
    private readonly redis: Redis,
    private readonly key: string,
  ) {
    super();
  }
  protected async setIfNewer(tsField: string, ts: number, others: Array<[string, number]>): Promise<void> {
    await this.redis.eval(SET_IF_NEWER, 1, this.key, tsField, String(ts), ...others.flatMap(([f, v]) => [f, String(v)]));
  }
  protected async increment(f: string, by: number): Promise<void> {
    await this.redis.hincrbyfloat(this.key, f, by);
  }
  protected async countIfNewer(tsField: string, ts: number, counter: string): Promise<void> {
    await this.redis.eval(COUNT_IF_NEWER, 1, this.key, tsField, String(ts), counter);
  }
  protected async set(f: string, value: number): Promise<void> {
    await this.redis.hset(this.key, f, String(value));
  }
  protected async unset(f: string): Promise<void> {
    await this.redis.hdel(this.key, f);
  }
  protected async fieldNames(): Promise<string[]> {
    return this.redis.hkeys(this.key);
  }
  async hasState(): Promise<boolean> {
    return (await this.redis.exists(this.key)) === 1;
  }
  async samples(): Promise<Sample[]> {
    return BaseRecorder.parse(Object.entries(await this.redis.hgetall(this.key)));
  }
}

/** For inline runs without Redis: state dies with the process. */
export class MemoryMetricsRecorder extends BaseRecorder {
  readonly state = new Map<string, string>();
  protected async setIfNewer(tsField: string, ts: number, others: Array<[string, number]>): Promise<void> {
    const current = this.state.get(tsField);
    if (current !== undefined && Number(current) > ts) return;
    this.state.set(tsField, String(ts));
    for (const [f, v] of others) this.state.set(f, String(v));
  }
  protected async increment(f: string, by: number): Promise<void> {
    this.state.set(f, String(Number(this.state.get(f) ?? 0) + by));
  }
  protected async countIfNewer(tsField: string, ts: number, counter: string): Promise<void> {
    const current = this.state.get(tsField);
    if (current !== undefined && Number(current) >= ts) return;
    this.state.set(tsField, String(ts));
    await this.increment(counter, 1);
  }
  protected async set(f: string, value: number): Promise<void> {
    this.state.set(f, String(value));
  }
  protected async unset(f: string): Promise<void> {
    this.state.delete(f);
  }
  protected async fieldNames(): Promise<string[]> {
    return [...this.state.keys()];
  }
  async hasState(): Promise<boolean> {
    return this.state.size > 0;
  }
  async samples(): Promise<Sample[]> {
    return BaseRecorder.parse(this.state.entries());
  }
}
