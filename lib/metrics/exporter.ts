import { Counter, Gauge, Registry } from 'prom-client';
import { LIFEBOAT_VERSION } from '../catalog/manifest.js';
import type { Sample } from './recorder.js';

const HELP: Record<string, string> = {
  lifeboat_backup_last_success_timestamp_seconds: 'Unix time the newest complete backup of the dataset finished.',
  lifeboat_backup_last_failure_timestamp_seconds: 'Unix time a job for the dataset last failed for good (retries exhausted or permanent).',
  lifeboat_backup_size_bytes: 'Size of the newest backup artifact as stored; for a mirror, whose artifact is its report, the bytes it mirrored.',
  lifeboat_backup_duration_seconds: 'Duration of the newest backup.',
  lifeboat_verify_last_success_timestamp_seconds: 'Unix time an artifact of the dataset last passed verification.',
  lifeboat_verify_last_failure_timestamp_seconds: 'Unix time an artifact of the dataset last failed verification.',
  lifeboat_verify_failures_total: 'Artifacts found corrupt by verification.',
  lifeboat_backups_corrupt: 'Backups of the dataset whose newest verification failed (scrub included); they never fill a retention slot.',
  lifeboat_job_failures_total: 'Jobs that failed for good, per function.',
  lifeboat_backup_stale_threshold_seconds: 'How old the last success may get before BackupStale fires (staleAfterHours).',
  lifeboat_target_used_bytes: 'Bytes the datasets on a target hold (measured by pruneCheck).',
  lifeboat_target_capacity_bytes: 'The configured size of a target.',
  lifeboat_target_days_until_full: 'Days until the target is full at the recent growth rate (absent when not growing).',
  lifeboat_dataset_bytes: 'Bytes a dataset holds on its target.',
  lifeboat_webhook_events_total: 'Bucket notification records received, by what became of them.',
  lifeboat_orphan_uploads_aborted_total: 'Incomplete multipart uploads (or temp files) aborted by pruneCheck.',
  lifeboat_replica_last_success_timestamp_seconds: 'Tick (Unix time) of the newest backup verified on the replica.',
  lifeboat_replica_lag_seconds: "How far the replica's newest verified backup is behind the primary's newest, in seconds.",
  lifeboat_replica_pending_backups: "Verified backups on the primary that the replica's retention wants and the replica still lacks.",
  lifeboat_replica_failures_total: 'replicateBackup runs that could not bring the replica up to date (unreachable target, a copy that failed its check).',
  lifeboat_drill_last_success_timestamp_seconds: 'Unix time a restore drill of the dataset last passed.',
  lifeboat_drill_last_failure_timestamp_seconds: 'Unix time a restore drill of the dataset last failed.',
  lifeboat_drill_duration_seconds: 'Duration of the last passing restore drill (restore plus checks).',
  lifeboat_drill_failures_total: 'Restore drills that failed a check.',
  lifeboat_redis_up: 'Whether this scrape read its state from Redis (1); 0: Redis is down, the series come from the targets, without counters and queue depths.',
};

export interface QueueDepth {
  fn: string;
  /** Jobs per BullMQ state, `delayed` without the job schedulers' next runs, which are `scheduled`. */
  counts: Record<string, number>;
}

export interface MetricsInput {
  /** The stored state: from Redis, or rebuilt from the targets while Redis is down. */
  stored: Sample[];
  /** Jobs per queue and state; none while Redis is down. */
  queueDepths: QueueDepth[];
  /** Series every install has (thresholds, zeros); stored state of the same series overrides them. */
  fromConfig?: Sample[];
  /** Datasets in the config: state left over from removed ones is not exported, so it cannot alert forever. */
  datasets?: Set<string>;
}

/** Renders the Prometheus exposition; a fresh registry per scrape, so nothing is cached. */
export async function renderMetrics({ stored: all, queueDepths, fromConfig = [], datasets }: MetricsInput): Promise<{ contentType: string; body: string }> {
  const registry = new Registry();
  const byName = new Map<string, Sample[]>();
  const stored = all.filter((s) => !datasets || s.labels.dataset === undefined || datasets.has(s.labels.dataset));
  for (const sample of [...fromConfig, ...stored]) {
    const list = byName.get(sample.name) ?? [];
    list.push(sample);
    byName.set(sample.name, list);
  }
  for (const [name, samples] of byName) {
    const labelNames = [...new Set(samples.flatMap((s) => Object.keys(s.labels)))].sort();
    const help = HELP[name] ?? name;
    if (name.endsWith('_total')) {
      const counter = new Counter({ name, help, labelNames, registers: [registry] });
      for (const s of samples) counter.inc(s.labels, s.value);
    } else {
      const gauge = new Gauge({ name, help, labelNames, registers: [registry] });
      for (const s of samples) gauge.set(s.labels, s.value);
    }
  }
  const depth = new Gauge({
    name: 'lifeboat_queue_jobs',
    help: 'Jobs per function queue and state; scheduled: the job schedulers\' next runs, which delayed does not count.',
    labelNames: ['fn', 'state'],
    registers: [registry],
  });
  for (const { fn, counts } of queueDepths) {
    for (const [state, count] of Object.entries(counts)) depth.set({ fn, state }, count);
  }
  new Gauge({ name: 'lifeboat_info', help: 'Lifeboat build information.', labelNames: ['version'], registers: [registry] }).set({ version: LIFEBOAT_VERSION }, 1);
  return { contentType: registry.contentType, body: await registry.metrics() };
}
