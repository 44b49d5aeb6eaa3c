import { currentAlerts, DISK_HIGH_RATIO, FULL_SOON_DAYS, type ApiAlert } from '../api/alerts.js';
import { datasetSummaries, type ApiDataset } from '../api/datasets.js';
import { HISTORY_DAYS, targetSummaries, type ApiTarget } from '../api/targets.js';
import { formatBytes } from '../cli/format.js';
import type { Deps } from '../plumbing/deps.js';
import { actionButtons } from './actions.js';
import { historyChart } from './chart.js';
import { html, type Html } from './html.js';
import { ago, backupHref, bytes, datasetHref, drillBadge, problem, scroll, statusBadge, type Page, type PageContext } from './parts.js';

/** `/`: every dataset's state, the targets' capacity, and the alerts that would fire now, all read from the targets. */
export async function overviewPage(deps: Deps, ctx: PageContext, signal: AbortSignal): Promise<Page> {
  const [datasets, targets] = await Promise.all([datasetSummaries(deps, signal), targetSummaries(deps, signal)]);
  const unreadable = datasets.filter((d) => d.error).length;
  return {
    title: 'Overview',
    body: html`<h1>Overview</h1>
${unreadable > 0 && problem(`${unreadable} of ${datasets.length} datasets could not be read from their target; their rows show the error.`)}
<section id="datasets"><h2>Datasets</h2>${datasets.length === 0 ? html`<p>No datasets are configured.</p>` : datasetTable(ctx, datasets)}</section>
${alertSection(currentAlerts(datasets, targets))}
${targetSection(ctx, targets)}`,
  };
}

function datasetTable(ctx: PageContext, datasets: ApiDataset[]): Html {
  return scroll(html`<table class="datasets"><thead><tr><th scope="col">Dataset</th><th scope="col">Kind</th><th scope="col">Newest backup</th><th scope="col">Status</th><th scope="col">Last drill</th><th scope="col">Stale after</th>${ctx.operator && html`<th scope="col">Actions</th>`}</tr></thead>
<tbody>${datasets.map((d) => datasetRow(ctx, d))}</tbody></table>`);
}

function datasetRow(ctx: PageContext, d: ApiDataset): Html {
  const dataset = ctx.config.datasets.find((c) => c.id === d.id)!;
  const classes = [d.stale && 'stale', d.error && 'error'].filter(Boolean).join(' ');
  return html`<tr data-dataset="${d.id}" data-stale="${String(d.stale)}"${classes && html` class="${classes}"`}>
<th scope="row"><a href="${datasetHref(d.id)}">${d.id}</a></th>
<td>${d.kind}</td>
<td data-field="newest">${newestCell(ctx, d)}</td>
<td data-field="status" data-status="${d.newest?.status ?? 'none'}">${statusCell(ctx, d)}</td>
<td data-field="drill" data-drill="${d.lastDrill ? (d.lastDrill.ok ? 'ok' : 'failed') : 'none'}">${drillBadge(ctx, d.lastDrill && { ok: d.lastDrill.ok, at: d.lastDrill.at, failedChecks: d.lastDrill.failedChecks })}</td>
<td data-field="stale">${d.staleAfterHours} h${d.stale && html`<br><span class="status status-stale" data-status="stale">✗ stale</span> <span class="detail">${d.newestGood ? html`newest good backup finished ${ago(ctx, d.newestGood.finishedAt)}` : 'no good backup yet'}</span>`}</td>
${ctx.operator && html`<td>${actionButtons(dataset)}</td>`}
</tr>`;
}

function newestCell(ctx: PageContext, d: ApiDataset): Html {
  if (d.error) return html`<span class="problem">target ${d.target.name} could not be read: ${d.error}</span>`;
  const n = d.newest;
  if (!n) return html`<span class="none">no backup yet</span>`;
  // A mirror's artifact is its small report; what it holds is the mirrored bytes.
  const size = n.dataBytes !== undefined ? html`${bytes(n.dataBytes)} mirrored` : bytes(n.size);
  return html`<a href="${backupHref(d.id, n.id)}">${ago(ctx, n.finishedAt)}</a> · ${size}<br><span class="detail">${d.backups} backup${d.backups === 1 ? '' : 's'}${d.corrupt > 0 && `, ${d.corrupt} corrupt`}</span>`;
}

function statusCell(ctx: PageContext, d: ApiDataset): Html {
  if (d.error) return html`<span class="none">unknown</span>`;
  const checked = d.newest?.checkedAt ? html`<br><span class="detail">checked ${ago(ctx, d.newest.checkedAt)}</span>` : '';
  const scrub = d.lastScrub ? html`${d.lastScrub.ok ? '✓' : '✗'} ${ago(ctx, d.lastScrub.at)}` : 'never';
  return html`${statusBadge(d.newest?.status ?? 'none')}${checked}<br><span class="detail">scrub: ${scrub}</span>`;
}

function alertSection(alerts: ApiAlert[]): Html {
  return html`<section id="alerts"><h2>Alerts</h2>
${alerts.length === 0 ? html`<p class="ok">No alerts: none of the rules would fire now.</p>` : html`<ul class="alerts">${alerts.map((a) => html`<li data-alert="${a.alert}" class="severity-${a.severity}"><strong>${a.severity} · ${a.alert}</strong> ${a.summary}</li>`)}</ul>`}
</section>`;
}

function targetSection(ctx: PageContext, targets: ApiTarget[]): Html {
  return html`<section id="targets"><h2>Targets</h2><div class="targets">${targets.map((t) => targetPanel(ctx, t))}</div></section>`;
}

function targetPanel(ctx: PageContext, t: ApiTarget): Html {
  const cap = t.capacityBytes;
  const usage = cap
    ? html`<p>${bytes(t.usedBytes)} of ${bytes(cap)} used (${Math.round((100 * t.usedBytes) / cap)}%)</p>
<meter min="0" max="${cap}" value="${Math.min(t.usedBytes, cap)}" high="${cap * DISK_HIGH_RATIO}" optimum="0">${formatBytes(t.usedBytes)} of ${formatBytes(cap)}</meter>`
    : html`<p>${bytes(t.usedBytes)} used; no capacity configured (<code>targets.${t.name}.capacityBytes</code>)</p>`;
  return html`<div class="target" data-target="${t.name}"><h3>${t.name} <span class="detail">${t.kind}</span></h3>
${t.error ? problem(`The capacity history of target ${t.name} could not be read: ${t.error}`) : html`${usage}${forecastLine(t)}
${t.history.length > 0
    ? html`${historyChart(t.history, HISTORY_DAYS, cap, `Used bytes of target ${t.name}, last ${HISTORY_DAYS} days`)}<p class="detail">Last ${HISTORY_DAYS} days, ${t.history.length} sample${t.history.length === 1 ? '' : 's'}${t.measuredAt && html`, newest ${ago(ctx, t.measuredAt)}`}.</p>`
    : html`<p class="detail">No capacity samples yet: pruneCheck takes one a day.</p>`}`}
</div>`;
}

function forecastLine(t: ApiTarget): Html {
  const growth = t.growthBytesPerDay;
  if (t.daysUntilFull !== undefined) {
    const when = t.daysUntilFull <= 0 ? 'Full now.' : `Full in about ${Math.round(t.daysUntilFull * 10) / 10} days at the recent growth (${formatBytes(growth ?? 0)}/day).`;
    return html`<p class="${t.daysUntilFull < FULL_SOON_DAYS ? 'problem' : 'detail'}">${when}</p>`;
  }
  if (growth === undefined) return html`<p class="detail">No forecast yet: it needs samples from at least two days.</p>`;
  if (growth <= 0) return html`<p class="detail">Not growing recently: no full-by date.</p>`;
  return html`<p class="detail">Growing ${formatBytes(growth)}/day; no capacity to forecast against.</p>`;
}
