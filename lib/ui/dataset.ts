import { backupDetail, backupPage, type ApiBackup, type BackupPage } from '../api/backups.js';
import { apiStatuses, backupListQuery, type BackupListQuery } from '../api/schemas.js';
import { serverTokenKey } from '../catalog/layout.js';
import type { Dataset, EtcdDataset } from '../config/schema.js';
import type { MirrorResult } from '../mirror/mirror.js';
import type { Deps } from '../plumbing/deps.js';
import { actionButtons } from './actions.js';
import { html, join, type Html } from './html.js';
import { ago, backupHref, bytes, datasetHref, drillBadge, problem, scroll, statusBadge, type Page, type PageContext } from './parts.js';
import { recordTable } from './records.js';
import { copiesOf, replicaCopies } from '../replica/copies.js';
import { replicasOf } from '../replica/view.js';

type Copies = Awaited<ReturnType<typeof replicaCopies>>;

/** Verification results shown per backup; the rest are counted. */
const HISTORY_SHOWN = 3;
/** The API's defaults: left out of the paging links. */
const DEFAULTS: BackupListQuery = backupListQuery.parse({});
const NEWEST: BackupListQuery = { ...DEFAULTS, limit: 1 };

/** `/datasets/:id`: one page of its backups (filtered, sorted), and per kind the mirror report or the etcd server token. */
export async function datasetPage(deps: Deps, ctx: PageContext, dataset: Dataset, query: BackupListQuery, signal: AbortSignal): Promise<Page> {
  const [page, extra, copies] = await Promise.all([
    backupPage(deps, dataset, query, signal),
    dataset.kind === 'bucket' ? mirrorReportSection(deps, ctx, dataset, signal) : dataset.kind === 'etcd' ? serverTokenNote(deps, ctx, dataset, signal) : undefined,
    replicasOf(dataset).length > 0 ? replicaCopies(deps, dataset, signal) : undefined,
  ]);
  return {
    title: `${dataset.id} backups`,
    body: html`<h1>${dataset.id} <span class="detail">${dataset.kind} · target ${dataset.target.name}, bucket ${dataset.target.bucket}${dataset.target.prefix && `, prefix ${dataset.target.prefix}`}</span></h1>
${ctx.operator && html`<p>${actionButtons(dataset)}</p>`}
${extra}
${copies && copies.unreachable.length > 0 && problem(join(copies.unreachable.map((u) => `Replica ${u.replica} could not be read: ${u.error}`), '; '))}
<section id="backup-list"><h2>Backups</h2>
${filterForm(dataset, query)}
${pager(dataset, query, page)}
${page.backups.length > 0 ? backupTable(ctx, dataset, page.backups, copies) : html`<p class="none">${page.total === 0 && !query.status ? 'No backups yet.' : 'No backups on this page match.'}</p>`}
</section>`,
  };
}

const statusLabel = (status: string) => status.replace(/-/g, ' ');

function filterForm(dataset: Dataset, query: BackupListQuery): Html {
  const option = (value: string, label: string, selected: boolean) => html`<option value="${value}"${selected && ' selected'}>${label}</option>`;
  return html`<form id="filter" class="filter" method="get" action="${datasetHref(dataset.id)}">
<label>Status <select name="status">${option('', 'any', !query.status)}${apiStatuses.map((s) => option(s, statusLabel(s), query.status === s))}</select></label>
<label>Sort by <select name="sort">${option('time', 'time', query.sort === 'time')}${option('size', 'size', query.sort === 'size')}</select></label>
<label>Order <select name="order">${option('desc', 'descending', query.order === 'desc')}${option('asc', 'ascending', query.order === 'asc')}</select></label>
<label>Per page <input type="number" name="limit" min="1" max="500" value="${query.limit}"></label>
<button type="submit">Show</button>
</form>`;
}

/** The same listing at another offset; defaults are left out of the URL. */
function pageHref(dataset: Dataset, query: BackupListQuery, offset: number): string {
  const params = new URLSearchParams();
  if (query.status) params.set('status', query.status);
  if (query.sort !== DEFAULTS.sort) params.set('sort', query.sort);
  if (query.order !== DEFAULTS.order) params.set('order', query.order);
  if (query.limit !== DEFAULTS.limit) params.set('limit', String(query.limit));
  if (offset > 0) params.set('offset', String(offset));
  const search = params.toString();
  return `${datasetHref(dataset.id)}${search ? `?${search}` : ''}`;
}

function pager(dataset: Dataset, query: BackupListQuery, page: BackupPage): Html {
  const count = (n: number) => n.toLocaleString('en-US');
  const shown = page.backups.length > 0 ? `${count(page.offset + 1)}–${count(page.offset + page.backups.length)} of ${count(page.total)}` : `0 of ${count(page.total)}`;
  const prev = page.offset > 0 && html`<a rel="prev" href="${pageHref(dataset, query, Math.max(0, page.offset - page.limit))}">← previous</a>`;
  const next = page.offset + page.limit < page.total && html`<a rel="next" href="${pageHref(dataset, query, page.offset + page.limit)}">next →</a>`;
  return html`<nav class="pager" aria-label="pages"><span class="shown">${shown}</span> ${prev} ${next}</nav>`;
}

/** Where else a backup exists: the replicas holding it ("usb2", "cloud (unverified)"), and those that could not be read. */
function copiesCell(copies: Copies, id: string): Html {
  const all = copiesOf(copies, id);
  return all.length > 0 ? html`${all.join(', ')}` : html`<span class="none">none</span>`;
}

function backupTable(ctx: PageContext, dataset: Dataset, backups: ApiBackup[], copies?: Copies): Html {
  return scroll(html`<table id="backups"><thead><tr><th scope="col">Backup</th><th scope="col">Finished</th><th scope="col">Size</th><th scope="col">sha256</th><th scope="col">Status</th><th scope="col">Verification</th><th scope="col">Drill</th>${copies && html`<th scope="col">Copies</th>`}</tr></thead>
<tbody>${backups.map((b) => html`<tr data-backup="${b.id}" data-status="${b.status}">
<th scope="row"><a href="${backupHref(dataset.id, b.id)}">${b.id}</a></th>
<td><time datetime="${b.finishedAt}">${b.finishedAt.replace(/\.\d+Z$/, 'Z')}</time><br><span class="detail">${ago(ctx, b.finishedAt)}</span></td>
<td>${bytes(b.size)}</td>
<td><code title="${b.sha256}">${b.sha256.slice(0, 12)}</code></td>
<td>${statusBadge(b.status, b.changedSinceVerified)}</td>
<td>${verifyHistory(ctx, b)}</td>
<td>${drillBadge(ctx, b.drill)}</td>
${copies && html`<td data-copies>${copiesCell(copies, b.id)}</td>`}
</tr>`)}</tbody></table>`);
}

function verifyHistory(ctx: PageContext, b: ApiBackup): Html {
  const h = b.verifyHistory;
  if (h.length === 0) return html`<span class="none">never checked</span>`;
  const entries = h.slice(0, HISTORY_SHOWN).map((e) => html`<span class="${e.ok ? 'yes' : 'no'}"${e.reason && html` title="${e.reason}"`}>${e.ok ? '✓' : '✗'} ${e.trigger ?? 'check'} ${ago(ctx, e.checkedAt)}</span>`);
  return html`${h.length} check${h.length === 1 ? '' : 's'}: ${join(entries, ', ')}${h.length > HISTORY_SHOWN && ', …'}`;
}

type MirrorReport = MirrorResult & { format: string; ok: boolean; deletion: string; finishedAt: string };

/** The newest mirror run's counts, failures and sample check, from its report (the backup's artifact). */
async function mirrorReportSection(deps: Deps, ctx: PageContext, dataset: Dataset, signal: AbortSignal): Promise<Html> {
  const [newest] = (await backupPage(deps, dataset, NEWEST, signal)).backups;
  const heading = html`<h2>Newest mirror run</h2>`;
  if (!newest) return html`<section id="mirror-report">${heading}<p class="none">No mirror run yet.</p></section>`;
  const report = (await backupDetail(deps, dataset, newest.id, signal)).report as MirrorReport | undefined;
  const link = html`<a href="${backupHref(dataset.id, newest.id)}">${newest.id}</a>`;
  if (report?.format !== 'lifeboat.mirror-report/v1') return html`<section id="mirror-report">${heading}${problem(html`The report of run ${link} could not be read from the target.`)}</section>`;
  const tally = (label: string, t: { count: number; bytes: number }) => html`<tr><th scope="row">${label}</th><td>${t.count.toLocaleString('en-US')}</td><td>${bytes(t.bytes)}</td></tr>`;
  const { listing, sample } = report.verification;
  return html`<section id="mirror-report">${heading}
<p>Run ${link}, finished ${ago(ctx, report.finishedAt)}: <span class="status status-${report.ok ? 'ok' : 'failed'}" data-status="${report.ok ? 'ok' : 'failed'}">${report.ok ? '✓ ok' : '✗ not ok'}</span> · deletion ${report.deletion}</p>
${scroll(html`<table class="counts"><thead><tr><th scope="col"></th><th scope="col">Objects</th><th scope="col">Bytes</th></tr></thead><tbody>
${tally('Source', report.source)}${tally('Mirror before the run', report.destination)}${tally('Copied', report.copied)}${tally('Unchanged', report.skipped)}${tally('Deleted', report.deleted)}${tally('Mirror after the run', listing.destination)}
<tr><th scope="row">Failed</th><td${report.failed.count > 0 && ' class="no"'}>${report.failed.count.toLocaleString('en-US')}</td><td></td></tr>
</tbody></table>`)}
<p>Listing check: <span class="${listing.ok ? 'yes' : 'no'}">${listing.ok ? '✓ source and mirror match' : '✗ differ'}</span> (${listing.missing} missing, ${listing.sizeMismatch} of another size, ${listing.extra} extra).
Sample check: ${sample.checked} of ${sample.requested} objects compared by sha256, <span class="${sample.mismatches.length === 0 ? 'yes' : 'no'}">${sample.mismatches.length} mismatched</span>.</p>
${report.failed.first.length > 0 && html`<h3>First failures</h3>${recordTable({ failures: report.failed.first })}`}
${sample.mismatches.length > 0 && html`<h3>Sample mismatches</h3>${recordTable({ mismatches: sample.mismatches })}`}
</section>`;
}

/** The k3s server token is one object per dataset (not per snapshot): its presence is checked once per page. */
async function serverTokenNote(deps: Deps, ctx: PageContext, dataset: EtcdDataset, signal: AbortSignal): Promise<Html> {
  if (!dataset.source.uploadToken) {
    return html`<p id="server-token" data-token="not-uploaded">The k3s server token is not uploaded (<code>source.uploadToken</code> is off): a restore onto a new host needs the old server's token (/var/lib/rancher/k3s/server/token).</p>`;
  }
  const key = serverTokenKey(dataset);
  const head = await deps.storeFor(dataset).head(key, { signal });
  return head
    ? html`<p id="server-token" data-token="present">✓ The k3s server token is on the target (<code>${key}</code>, uploaded ${ago(ctx, head.lastModified.toISOString())}); <code>lifeboat restore</code> writes it beside the snapshot.</p>`
    : html`<p id="server-token" data-token="absent" class="problem">✗ The k3s server token is missing on the target (<code>${key}</code>) although <code>source.uploadToken</code> is on: a restore onto a new host needs the old server's token.</p>`;
}
