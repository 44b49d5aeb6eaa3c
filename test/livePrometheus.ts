import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';

/** A real Prometheus (Debian's `prometheus`) scraping one Lifeboat /metrics with the shipped rules. */

export const RULES = join(fileURLToPath(new URL('..', import.meta.url)), 'deploy/prometheus/lifeboat-rules.yaml');

/** A binary from PATH or /usr/bin; a clear error (never a skip) when it is missing. */
export function binary(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin']) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found on PATH or in /usr/bin: install Debian's "prometheus" package (apt-get install prometheus), which provides prometheus and promtool`);
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
  if (!response.ok) throw new Error(`GET ${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

/** SIGTERM, then SIGKILL if it has not exited within 10 s. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export interface PromAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  value: string;
}

export interface LivePrometheus {
  base: string;
  /** Polls /api/v1/alerts until every named alert fires (45 s at most); returns all alerts then. */
  waitForFiring(names: string[]): Promise<PromAlert[]>;
  stop(): Promise<void>;
}

/** 1 s scrapes and evaluations, the rule file as shipped, job "lifeboat" as the rules assume. Ready when it returns. */
export async function startPrometheus(lifeboatPort: number): Promise<LivePrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'lifeboat-prometheus-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [RULES],
      scrape_configs: [{ job_name: 'lifeboat', static_configs: [{ targets: [`127.0.0.1:${lifeboatPort}`] }] }],
    }),
  );
  const child = spawn(binary('prometheus'), [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const base = `http://127.0.0.1:${port}`;
  const close = async () => {
    await stop(child);
    rmSync(dir, { recursive: true, force: true });
  };

  const readyBy = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      await close();
      throw new Error(`prometheus exited with ${child.exitCode}:\n${log}`);
    }
    if (await fetch(`${base}/-/ready`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)) break;
    if (Date.now() > readyBy) {
      await close();
      throw new Error(`prometheus not ready within 30 s:\n${log}`);
    }
    await sleep(200);
  }

  return {
    base,
    async waitForFiring(names) {
      let alerts: PromAlert[] = [];
      const deadline = Date.now() + 45_000;
      while (!names.every((n) => alerts.some((a) => a.labels.alertname === n && a.state === 'firing'))) {
        if (Date.now() > deadline) {
          const targets = await getJson<unknown>(`${base}/api/v1/targets`).catch((err: unknown) => String(err));
          throw new Error(`${names.join(', ')} not all firing within 45 s.\nalerts: ${JSON.stringify(alerts, null, 1)}\ntargets: ${JSON.stringify(targets)}\nprometheus log:\n${log}`);
        }
        await sleep(500);
        alerts = (await getJson<{ data: { alerts: PromAlert[] } }>(`${base}/api/v1/alerts`)).data.alerts;
      }
      return alerts;
    },
    stop: close,
  };
}

/** Replaces the dashboard's Grafana variables with values Prometheus accepts; an unknown one is an error. */
export function withoutGrafanaVariables(expr: string): string {
  const values: Record<string, string> = { dataset: '.*', __rate_interval: '5m', __interval: '1m', __range: '1h' };
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`unknown Grafana variable ${whole} in ${expr}`);
    return value;
  });
}
