import type { ApiDataset } from './datasets.js';
import type { ApiTarget } from './targets.js';

/**
 * The alerts of deploy/prometheus/lifeboat-rules.yaml that would fire now, computed from what the
 * targets say (the same reads that rebuild the metrics while Redis is down). JobsFailing and
 * LifeboatAbsent need Redis's counters or Prometheus itself and are not computed here.
 */
export interface ApiAlert {
  alert: 'BackupStale' | 'VeleroBackupStale' | 'VerifyFailed' | 'DrillFailed' | 'DrillStale' | 'TargetDiskHigh' | 'TargetFullSoon';
  severity: 'critical' | 'warning';
  dataset?: string;
  target?: string;
  summary: string;
}

/** The rules' thresholds. */
export const DRILL_STALE_SECONDS = 8 * 86400;
export const DISK_HIGH_RATIO = 0.85;
export const FULL_SOON_DAYS = 14;

const hours = (seconds: number) => `${Math.round(seconds / 360) / 10}h`;

export function currentAlerts(datasets: ApiDataset[], targets: ApiTarget[]): ApiAlert[] {
  const out: ApiAlert[] = [];
  for (const d of datasets) {
    // The rules need a backup to exist (no series, no alert); a dataset without one shows stale: true instead.
    if (d.newestGood && d.newestGood.ageSeconds > d.staleAfterHours * 3600) {
      out.push({
        alert: d.kind === 'velero' ? 'VeleroBackupStale' : 'BackupStale', severity: 'critical', dataset: d.id,
        summary: `the newest good backup of ${d.id} (${d.newestGood.id}) finished ${hours(d.newestGood.ageSeconds)} ago, past ${d.staleAfterHours}h`,
      });
    }
    if (d.corrupt > 0) out.push({ alert: 'VerifyFailed', severity: 'critical', dataset: d.id, summary: `${d.corrupt} backup${d.corrupt === 1 ? '' : 's'} of ${d.id} failed verification` });
    if (d.lastDrill && !d.lastDrill.ok) {
      out.push({ alert: 'DrillFailed', severity: 'critical', dataset: d.id, summary: `the last restore drill of ${d.id} failed${d.lastDrill.failedChecks.length ? `: ${d.lastDrill.failedChecks.join(', ')}` : ''}` });
    } else if (d.lastDrill && d.lastDrill.ageSeconds > DRILL_STALE_SECONDS) {
      out.push({ alert: 'DrillStale', severity: 'warning', dataset: d.id, summary: `no passing restore drill of ${d.id} for ${Math.floor(d.lastDrill.ageSeconds / 86400)} days` });
    }
  }
  for (const t of targets) {
    if (t.capacityBytes && t.usedBytes / t.capacityBytes > DISK_HIGH_RATIO) {
      out.push({ alert: 'TargetDiskHigh', severity: 'warning', target: t.name, summary: `target ${t.name} is ${Math.round((100 * t.usedBytes) / t.capacityBytes)}% full` });
    }
    if (t.daysUntilFull !== undefined && t.daysUntilFull < FULL_SOON_DAYS) {
      out.push({ alert: 'TargetFullSoon', severity: 'warning', target: t.name, summary: `target ${t.name} will be full in ${Math.round(t.daysUntilFull * 10) / 10} days` });
    }
  }
  return out;
}
