import { backupDetail, type BackupDetail } from '../api/backups.js';
import type { Dataset } from '../config/schema.js';
import type { Deps } from '../plumbing/deps.js';
import { actionButtons, restoreSection } from './actions.js';
import { html, type Html } from './html.js';
import { ago, bytes, datasetHref, drillBadge, problem, scroll, statusBadge, type Page, type PageContext } from './parts.js';
import { recordSection } from './records.js';
import { copiesOf, replicaCopies } from '../replica/copies.js';
import { replicasOf } from '../replica/view.js';

/** `/backups/:dataset/:id`: one backup's records, its download, the restore command and (operators) the actions. */
export async function backupDetailPage(deps: Deps, ctx: PageContext, dataset: Dataset, id: string, signal: AbortSignal): Promise<Page> {
  const detail = await backupDetail(deps, dataset, id, signal);
  const copies = replicasOf(dataset).length > 0 ? await replicaCopies(deps, dataset, signal) : undefined;
  return {
    title: `${dataset.id} ${id}`,
    body: html`<h1><a href="${datasetHref(dataset.id)}">${dataset.id}</a> / ${id}</h1>
${summary(ctx, detail, copies && (copiesOf(copies, id, { errors: true }).join(', ') || 'none yet'))}
${ctx.operator && html`<p>${actionButtons(dataset, id)}</p>`}
<section id="get"><h2>Download and restore</h2>
${download(dataset, detail)}
<p>Restore with the CLI (fill in what is in capitals):</p>
<div class="command"><code id="restore-command">${detail.restoreCommand}</code> <button type="button" id="copy-restore" data-copy="restore-command">Copy</button> <span class="copy-status" role="status"></span></div>
</section>
${ctx.operator && restoreSection(ctx.config, dataset, detail)}
${recordSection('manifest', 'Manifest', detail.manifest, dataset.kind === 'velero' ? 'Velero writes its own metadata: there is no Lifeboat manifest.' : 'No manifest.json.')}
${recordSection('verify', 'Verification (verify.json)', detail.verify, 'Not verified yet: no verify.json.')}
${recordSection('drill', 'Restore drill (drill.json)', detail.drill, 'No restore drill of this backup.')}
${dataset.kind === 'bucket' && recordSection('report', 'Mirror report (report.json)', detail.report, 'The report could not be read from the target.')}`,
  };
}

function summary(ctx: PageContext, detail: BackupDetail, copies?: string): Html {
  const b = detail.backup;
  const row = (label: string, value: Html | string) => html`<tr><th scope="row">${label}</th><td>${value}</td></tr>`;
  return html`<section id="summary" data-status="${detail.status}"><h2>Summary</h2>${scroll(html`<table class="record"><tbody>
${row('Status', html`${statusBadge(detail.status, b.changedSinceVerified)}${b.changedSinceVerified && html` <span class="detail">${b.changedSinceVerified}</span>`}`)}
${row('Kind', detail.kind)}
${row('Finished', html`<time datetime="${b.finishedAt}">${b.finishedAt}</time> (${ago(ctx, b.finishedAt)})`)}
${row('Size', bytes(b.size))}
${row('sha256', html`<code>${b.sha256}</code>`)}
${row('Key', html`<code>${b.key}</code>`)}
${row('Last checked', b.checkedAt ? ago(ctx, b.checkedAt) : 'never')}
${row('Drill', drillBadge(ctx, b.drill))}
${copies !== undefined && row('Copies on replicas', copies)}
${encryptionOf(detail) && row('Encryption', encryptionOf(detail)!)}
</tbody></table>`)}</section>`;
}

/** "age, to 1 recipient (3f9a0c1be2d47a65)" for an encrypted artifact. */
function encryptionOf(detail: BackupDetail): string | undefined {
  const e = (detail.manifest as { artifact?: { encryption?: { scheme: string; recipients: string[] } } } | undefined)?.artifact?.encryption;
  return e && `${e.scheme}, to ${e.recipients.length === 1 ? '1 recipient' : `${e.recipients.length} recipients`} (${e.recipients.join(', ')})`;
}

function download(dataset: Dataset, detail: BackupDetail): Html {
  const d = detail.download;
  if (dataset.kind === 'velero') return html`<p>Velero keeps its own backups: download one with <code>velero backup download ${detail.id}</code>.</p>`;
  if (!d) return problem(`The artifact ${detail.backup.key} is missing from target ${dataset.target.name}: nothing to download.`);
  const file = detail.backup.key.slice(detail.backup.key.lastIndexOf('/') + 1);
  if ('url' in d) {
    return html`<p><a id="download" href="${d.url}" rel="noreferrer">Download ${file}</a> (${bytes(detail.backup.size)}; a presigned link to the target, valid until <time datetime="${d.expiresAt}">${d.expiresAt}</time>)</p>`;
  }
  return html`<p><a id="download" href="${d.path}" download="${file}">Download ${file}</a> (${bytes(detail.backup.size)}, streamed from target ${dataset.target.name} by this server)</p>`;
}
