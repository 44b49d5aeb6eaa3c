import type { BackupDetail } from '../api/backups.js';
import type { Config, Dataset } from '../config/schema.js';
import { html, type Html } from './html.js';

/**
 * The operator's controls: the action buttons, the restore form, and the confirmation dialog and job
 * panel that app.js drives. Nothing here is rendered for a viewer. Each button carries the sentence the
 * dialog shows, so what is confirmed is written next to what it describes.
 */

const where = (dataset: Dataset) => `target ${dataset.target.name}, bucket ${dataset.target.bucket}${dataset.target.prefix ? `, prefix ${dataset.target.prefix}` : ''}`;

function backupSentence(dataset: Exclude<Dataset, { kind: 'velero' }>): string {
  switch (dataset.kind) {
    case 'postgres':
      return `Back up ${dataset.id} now: dumps its PostgreSQL server with pg_dumpall into a new backup on ${where(dataset)}. Existing backups are not changed.`;
    case 'bucket': {
      const deletes = dataset.mirror.deletion === 'delete' ? ' and deletes mirrored objects that are gone from the source (within mirror.maxDeletePercent)' : '; nothing is deleted (mirror.deletion is keep)';
      return `Mirror ${dataset.id} now: copies new and changed objects of bucket ${dataset.source.bucket} (${dataset.source.endpoint}) to ${where(dataset)}, overwriting the mirrored copies of changed objects${deletes}.`;
    }
    case 'etcd':
      return `Back up ${dataset.id} now: uploads the k3s snapshots in ${dataset.source.snapshotDir} that are not yet on ${where(dataset)}. Snapshots already there are not changed.`;
  }
}

const DRILL_INTO: Record<Dataset['kind'], string> = {
  postgres: 'into a throwaway PostgreSQL server',
  bucket: 'into a scratch prefix of its bucket',
  etcd: 'into a temporary directory (etcdutl, nothing is started)',
  velero: 'into a scratch namespace',
};

function verifySentence(dataset: Dataset, backup: string | undefined): string {
  const which = backup ? `backup ${backup}` : 'the newest backup';
  return `Verify ${which} of ${dataset.id} now: re-reads it from ${where(dataset)} and checks its size, sha256 and content. Only its verify.json is written.`;
}

const drillSentence = (dataset: Dataset) =>
  `Run a restore drill of ${dataset.id} now: restores its newest verified backup ${DRILL_INTO[dataset.kind]}, checks it, and removes it again. Only the drill's record (drill.json) is kept.`;

function actionButton(action: 'backup' | 'verify' | 'drill', label: string, dataset: Dataset, confirm: string, backup?: string): Html {
  return html`<button type="button" class="action" data-action="${action}" data-dataset="${dataset.id}"${backup && html` data-backup="${backup}"`} data-confirm="${confirm}">${label}</button>`;
}

/** Back up / Verify / Drill for one dataset; with `backup`, Verify checks that backup instead of the newest. */
export function actionButtons(dataset: Dataset, backup?: string): Html {
  return html`<span class="actions">${dataset.kind !== 'velero' && actionButton('backup', 'Back up now', dataset, backupSentence(dataset))}${actionButton('verify', 'Verify now', dataset, verifySentence(dataset, backup), backup)}${actionButton('drill', 'Drill now', dataset, drillSentence(dataset))}</span>`;
}

/** Databases a restore can create: the manifest's, without the ones every server has. */
function restorableDatabases(manifest: unknown): string[] {
  const listed = (manifest as { source?: { databases?: unknown } } | undefined)?.source?.databases;
  return Array.isArray(listed) ? listed.filter((d): d is string => typeof d === 'string' && !['postgres', 'template0', 'template1'].includes(d)) : [];
}

/**
 * The restore form of a postgres or bucket backup, offering only the destinations in
 * server.ui.restoreTargets of the matching kind. app.js turns the choices into the confirmation sentence
 * (from the data attributes) and POSTs them to /api/actions/restore.
 */
export function restoreSection(config: Config, dataset: Dataset, detail: BackupDetail): Html {
  if (dataset.kind !== 'postgres' && dataset.kind !== 'bucket') return html``;
  const wanted = dataset.kind === 'postgres' ? 'postgres' : 's3';
  const destinations = Object.entries(config.server.ui.restoreTargets ?? {}).filter(([, r]) => r.kind === wanted);
  if (destinations.length === 0) {
    return html`<section id="restore-section"><h2>Restore</h2><p>No restore destinations for ${dataset.kind} backups are configured: add <code>server.ui.restoreTargets</code> to the config (a name and ${wanted === 'postgres' ? html`<code>{ kind: postgres, url }</code>` : html`<code>{ kind: s3, target, bucket }</code>`}) to restore from here, or use the command above.</p></section>`;
  }
  const databases = dataset.kind === 'postgres' ? restorableDatabases(detail.manifest) : [];
  const options = destinations.map(([name, r]) =>
    r.kind === 'postgres'
      // The config refuses a password in the URL (it goes in `password`), so the URL is safe to show.
      ? html`<option value="${name}" data-url="${r.url}">${name}: ${r.url}</option>`
      : html`<option value="${name}" data-target="${r.target}" data-bucket="${r.bucket}">${name}: bucket ${r.bucket} on target ${r.target}</option>`,
  );
  return html`<section id="restore-section"><h2>Restore</h2>
<form id="restore" data-dataset="${dataset.id}" data-backup="${detail.id}" data-kind="${dataset.kind}" data-databases="${JSON.stringify(databases)}">
<label>Into <select name="into" required>${options}</select></label>
${dataset.kind === 'postgres' && databases.length > 0 && html`<fieldset><legend>What to restore</legend>
<label><input type="radio" name="scope" value="whole" checked> The whole cluster (databases ${databases.join(', ')})</label>
<label><input type="radio" name="scope" value="database"> One database:</label>
<label>Database <select name="database">${databases.map((d) => html`<option value="${d}">${d}</option>`)}</select></label>
<label>Restore as <input name="as" placeholder="the same name" autocomplete="off" spellcheck="false"></label>
</fieldset>`}
<button type="submit" class="action">Restore…</button>
</form></section>`;
}

/** The confirmation dialog and the job panel, once per page, outside <main> so a refresh keeps them. */
export function operatorChrome(): Html {
  return html`<section id="job-panel" class="job-panel" hidden><h2>Job</h2><output id="job" aria-live="polite"></output></section>
<dialog id="confirm" aria-labelledby="confirm-title"><form method="dialog"><h2 id="confirm-title">Confirm</h2><p class="what"></p>
<div class="buttons"><button value="cancel" autofocus>Cancel</button> <button value="confirm" class="danger">Confirm</button></div></form></dialog>`;
}
