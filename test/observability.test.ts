import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { openApp, type App } from '../lib/plumbing/app.js';
import { buildServer } from '../lib/server.js';
import { closeApps, logger, testConfig } from './helpers.js';
import { binary, getJson, RULES, startPrometheus, type LivePrometheus, withoutGrafanaVariables } from './livePrometheus.js';

// Prometheus rules, their promtool tests, the Grafana alerts and dashboard, and a live Prometheus that
// scrapes an in-process `lifeboat serve` and fires alerts from the rule file as shipped.
// Needs Debian's `prometheus` package (prometheus and promtool); without it every test here fails.

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RULE_TESTS = join(ROOT, 'deploy/prometheus/lifeboat-rules.test.yaml');
const GRAFANA_ALERTS = join(ROOT, 'deploy/grafana/alerting/lifeboat-alerts.yaml');
const DASHBOARD = join(ROOT, 'deploy/grafana/dashboards/lifeboat.json');

/** Every metric Lifeboat exports or is about to export; a name outside this list is a typo. */
const KNOWN_METRICS = new Set([
  'lifeboat_backup_last_success_timestamp_seconds',
  'lifeboat_backup_last_failure_timestamp_seconds',
  'lifeboat_backup_size_bytes',
  'lifeboat_backup_duration_seconds',
  'lifeboat_backup_stale_threshold_seconds',
  'lifeboat_verify_last_success_timestamp_seconds',
  'lifeboat_verify_last_failure_timestamp_seconds',
  'lifeboat_verify_failures_total',
  'lifeboat_backups_corrupt',
  'lifeboat_drill_last_success_timestamp_seconds',
  'lifeboat_drill_last_failure_timestamp_seconds',
  'lifeboat_drill_duration_seconds',
  'lifeboat_drill_failures_total',
  'lifeboat_job_failures_total',
  'lifeboat_queue_jobs',
  'lifeboat_info',
  'lifeboat_target_used_bytes',
  'lifeboat_target_capacity_bytes',
  'lifeboat_target_days_until_full',
  'lifeboat_dataset_bytes',
  'lifeboat_replica_last_success_timestamp_seconds',
  'lifeboat_replica_lag_seconds',
]);

interface PromRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface GrafanaQuery {
  refId: string;
  datasourceUid: string;
  relativeTimeRange?: { from: number; to: number };
  model: { refId: string; expr?: string; instant?: boolean; type?: string; expression?: string };
}

interface GrafanaRule {
  uid: string;
  title: string;
  condition: string;
  data: GrafanaQuery[];
  for: string;
  noDataState: string;
  execErrState: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr: string; datasource?: { uid: string } }>;
  panels?: Panel[];
}

function promtool(...args: string[]): { ok: boolean; output: string } {
  const r = spawnSync(binary('promtool'), args, { encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { ok: r.status === 0, output: `promtool ${args.join(' ')} exited ${r.status}\n${r.stdout}${r.stderr}` };
}

const normalise = (expr: string) => expr.replace(/\s+/g, ' ').trim();
const metricNames = (text: string) => [...new Set(text.match(/\blifeboat_[a-z_]+/g) ?? [])];

function promRules(): PromRule[] {
  const doc = parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: PromRule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

function grafanaRules(): GrafanaRule[] {
  const doc = parse(readFileSync(GRAFANA_ALERTS, 'utf8')) as { apiVersion: number; groups: Array<{ orgId: number; name: string; folder: string; interval: string; rules: GrafanaRule[] }> };
  expect(doc.apiVersion).toBe(1);
  for (const g of doc.groups) {
    expect(g.orgId, `group ${g.name}`).toBe(1);
    expect(g.folder, `group ${g.name}`).toBeTruthy();
    expect(g.interval, `group ${g.name}`).toMatch(/^\d+[smh]$/);
  }
  return doc.groups.flatMap((g) => g.rules);
}

function dashboardPanels(dashboard: { panels: Panel[] }): Panel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Runs `promtool check rules` on the expressions as recording rules; fails naming where each came from. */
function expectExpressionsParse(exprs: Array<{ where: string; expr: string }>, dir: string): void {
  const file = join(dir, `expressions-${Date.now()}.yaml`);
  const rules = exprs.map((e, i) => ({ record: `check_${i}`, expr: e.expr }));
  writeFileSync(file, stringify({ groups: [{ name: 'expressions', rules }] }));
  const r = promtool('check', 'rules', file);
  const legend = exprs.map((e, i) => `check_${i}: ${e.where}: ${normalise(e.expr)}`).join('\n');
  expect(r.ok, `${r.output}\n${legend}`).toBe(true);
}

const scratch: string[] = [];
function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lifeboat-observability-'));
  scratch.push(dir);
  return dir;
}

afterAll(() => {
  for (const dir of scratch.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('Prometheus rules', () => {
  it('pass `promtool check rules`', () => {
    const r = promtool('check', 'rules', RULES);
    expect(r.ok, r.output).toBe(true);
    expect(r.output).toMatch(/SUCCESS: 10 rules found/);
  });

  it('pass their unit tests (`promtool test rules`)', () => {
    const r = promtool('test', 'rules', RULE_TESTS);
    expect(r.ok, r.output).toBe(true);
  });

  it('every alert has a severity, a summary and a description, and uses only known metrics', () => {
    for (const rule of promRules()) {
      expect(['critical', 'warning'], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      expect(rule.annotations?.description, rule.alert).toBeTruthy();
      if (rule.alert !== 'LifeboatAbsent') expect(rule.annotations?.summary, rule.alert).toMatch(/\{\{ \$labels\.(dataset|target|fn) \}\}/);
      for (const name of metricNames(rule.expr)) expect(KNOWN_METRICS, `${rule.alert} uses ${name}`).toContain(name);
    }
  });

  it('every alert has a unit test where it fires and one where it does not', () => {
    const doc = parse(readFileSync(RULE_TESTS, 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }> };
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of promRules()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${alert} never fires in a test`).toBe(true);
      expect(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${alert} has no quiet case`).toBe(true);
    }
  });
});

describe('Grafana provisioning', () => {
  it('the alert rules are the Prometheus alerts: same titles, expressions, `for` and labels', () => {
    const prom = new Map(promRules().map((r) => [r.alert, r]));
    const grafana = grafanaRules();
    expect(grafana.map((r) => r.title).sort()).toEqual([...prom.keys()].sort());
    for (const rule of grafana) {
      const twin = prom.get(rule.title)!;
      const queries = rule.data.filter((d) => d.datasourceUid !== '__expr__');
      expect(queries, rule.title).toHaveLength(1);
      const query = queries[0]!;
      expect(query.datasourceUid, rule.title).toBe('${DS_PROMETHEUS}');
      expect(query.model.instant, rule.title).toBe(true);
      expect(normalise(query.model.expr ?? ''), rule.title).toBe(normalise(twin.expr));
      expect(rule.for, rule.title).toBe(twin.for ?? '0m');
      expect(rule.labels, rule.title).toEqual(twin.labels);
      expect(rule.annotations.summary, rule.title).toBeTruthy();
      expect(rule.annotations.description, rule.title).toBeTruthy();
      // Grafana's $value is not the query's number, so the Prometheus wording with it cannot be reused.
      expect(JSON.stringify(rule.annotations), rule.title).not.toContain('$value');
    }
  });

  it('the alert rules are well formed: unique uids, a condition that exists, an __expr__ step', () => {
    const rules = grafanaRules();
    expect(new Set(rules.map((r) => r.uid)).size).toBe(rules.length);
    for (const rule of rules) {
      expect(rule.uid.length, rule.uid).toBeLessThanOrEqual(40);
      const refIds = rule.data.map((d) => d.refId);
      expect(refIds, rule.title).toContain(rule.condition);
      for (const d of rule.data) expect(d.model.refId, rule.title).toBe(d.refId);
      const steps = rule.data.filter((d) => d.datasourceUid === '__expr__');
      expect(steps.length, rule.title).toBeGreaterThan(0);
      for (const s of steps) expect(['math', 'threshold', 'reduce', 'classic_conditions'], rule.title).toContain(s.model.type);
      expect(['OK', 'NoData', 'Alerting', 'KeepLast'], rule.title).toContain(rule.noDataState);
      expect(['OK', 'Error', 'Alerting', 'KeepLast'], rule.title).toContain(rule.execErrState);
    }
  });

  it('the dashboard is valid JSON with a datasource variable, and every panel query uses it', () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
      uid: string;
      schemaVersion: number;
      __inputs: Array<{ name: string; pluginId: string }>;
      templating: { list: Array<{ name: string; type: string; query: unknown }> };
      panels: Panel[];
    };
    expect(dashboard.uid).toBe('lifeboat');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.__inputs).toContainEqual(expect.objectContaining({ name: 'DS_PROMETHEUS', pluginId: 'prometheus' }));
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
    const panels = dashboardPanels(dashboard);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    const queried = panels.filter((p) => p.type !== 'row');
    expect(queried.length).toBeGreaterThan(10);
    for (const panel of queried) {
      expect(panel.datasource?.uid, panel.title).toBe('${datasource}');
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const t of panel.targets ?? []) {
        expect(t.datasource?.uid, `${panel.title} ${t.refId}`).toBe('${datasource}');
        for (const name of metricNames(t.expr)) expect(KNOWN_METRICS, `${panel.title} uses ${name}`).toContain(name);
      }
    }
    const shown = new Set(queried.flatMap((p) => (p.targets ?? []).flatMap((t) => metricNames(t.expr))));
    // Everything Lifeboat exports has a place on the dashboard.
    expect([...KNOWN_METRICS].filter((m) => !shown.has(m))).toEqual([]);
  });

  it('every PromQL expression in the alerts and the dashboard parses (promtool)', () => {
    const exprs: Array<{ where: string; expr: string }> = [];
    for (const rule of grafanaRules()) {
      for (const d of rule.data) if (d.model.expr !== undefined) exprs.push({ where: `alert ${rule.title} ${d.refId}`, expr: d.model.expr });
    }
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] };
    for (const panel of dashboardPanels(dashboard)) {
      for (const t of panel.targets ?? []) exprs.push({ where: `panel "${panel.title}" ${t.refId}`, expr: withoutGrafanaVariables(t.expr) });
    }
    expect(exprs.length).toBeGreaterThan(30);
    expectExpressionsParse(exprs, scratchDir());
  });
});

// --- live: a real Prometheus scraping a real /metrics ---

describe('live Prometheus with the shipped rules', () => {
  const apps: App[] = [];
  let http: FastifyInstance | undefined;
  let prometheus: LivePrometheus | undefined;

  afterAll(async () => {
    await prometheus?.stop();
    await http?.close();
    await closeApps(apps);
  });

  it('scrapes `lifeboat serve` and fires BackupStale and VerifyFailed', async () => {

    // lifeboat serve, in process: the real app on real Redis and the real HTTP server.
    const config = testConfig({
      redisPrefix: `lbtest-observability-${Date.now()}`,
      datasets: [{ id: 'live', kind: 'postgres', source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1/postgres' }, target: { name: 'hub', bucket: 'postgres' } }],
    });
    const app = await openApp(config, logger());
    apps.push(app);
    http = await buildServer({ config, recorder: app.recorder, queues: app.queues });
    await http.listen({ host: '127.0.0.1', port: 0 });
    const lifeboatPort = (http.server.address() as AddressInfo).port;

    // A backup that finished 30 h ago (past the default 26 h), and a corrupt artifact found just now.
    const now = Date.now();
    const finishedAt = new Date(now - 30 * 3600_000).toISOString();
    const key = `live/${finishedAt}/pg_dumpall.sql.gz`;
    await app.emit('backup.uploaded', {
      dataset: 'live', kind: 'postgres', target: 'hub', bucket: 'postgres', key, size: 1234,
      startedAt: new Date(now - 30 * 3600_000 - 60_000).toISOString(), finishedAt,
    });
    await app.emit('backup.corrupt', { dataset: 'live', kind: 'postgres', key, checkedAt: new Date(now).toISOString(), reason: 'sha256 mismatch' });
    const metrics = (await http.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain('lifeboat_backup_last_success_timestamp_seconds{dataset="live",kind="postgres"}');
    expect(metrics).toContain('lifeboat_verify_last_failure_timestamp_seconds{dataset="live",kind="postgres"}');

    prometheus = await startPrometheus(lifeboatPort);
    const base = prometheus.base;
    // Both alerts have `for: 0m`, so they fire at the first evaluation after the first scrape.
    const alerts = await prometheus.waitForFiring(['BackupStale', 'VerifyFailed']);
    const firing = (name: string) => alerts.find((a) => a.labels.alertname === name && a.state === 'firing');

    const stale = firing('BackupStale')!;
    expect(stale.labels).toEqual({ alertname: 'BackupStale', dataset: 'live', kind: 'postgres', severity: 'critical' });
    expect(stale.annotations.summary).toBe('Backup of live (postgres) is stale');
    expect(stale.annotations.description).toContain('`lifeboat backups ls --dataset live`');
    // The value is the backup's age: 30 h and the few seconds this test has run.
    expect(Number(stale.value)).toBeGreaterThanOrEqual(30 * 3600);
    expect(Number(stale.value)).toBeLessThan(30 * 3600 + 120);

    const corrupt = firing('VerifyFailed')!;
    expect(corrupt.labels).toEqual({ alertname: 'VerifyFailed', dataset: 'live', kind: 'postgres', severity: 'critical' });
    expect(corrupt.annotations.summary).toBe('A backup of live (postgres) failed verification');

    // The scrape works, so the dead man's switch is quiet, and nothing else has a reason to fire.
    expect(alerts.filter((a) => a.state === 'firing').map((a) => a.labels.alertname).sort()).toEqual(['BackupStale', 'VerifyFailed']);

    // Every dashboard query runs on this Prometheus, and the overview counts what the alerts saw.
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] };
    const results = new Map<string, Array<{ metric: Record<string, string>; value: [number, string] }>>();
    for (const panel of dashboardPanels(dashboard)) {
      for (const t of panel.targets ?? []) {
        const url = `${base}/api/v1/query?query=${encodeURIComponent(withoutGrafanaVariables(t.expr))}`;
        const answer = await getJson<{ status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } }>(url);
        expect(answer.status, `${panel.title} ${t.refId}`).toBe('success');
        results.set(`${panel.title} ${t.refId}`, answer.data.result);
      }
    }
    expect(results.get('Stale backups A')?.map((r) => r.value[1])).toEqual(['1']);
    expect(results.get('Failed verifications A')?.map((r) => r.value[1])).toEqual(['1']);
    expect(results.get('Freshness per dataset A')?.map((r) => r.metric.dataset)).toEqual(['live']);
  }, 120_000);
});
