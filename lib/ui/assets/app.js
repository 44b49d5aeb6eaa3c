// Lifeboat web UI: the operator's actions (confirm, POST, poll the job, refresh the page's data) and the
// copy button. Plain script, no build step, no other host. Handlers are delegated from document, so they
// keep working on the <main> that a refresh swaps in.
'use strict';
(() => {
  const CSRF_COOKIE = 'lifeboat_csrf';
  const POLL_MS = 1000;
  /** Failed polls in a row (Redis restarting, a network blip) before the panel gives up. */
  const MAX_POLL_ERRORS = 10;
  const VERB = { backup: 'Back up', verify: 'Verify', drill: 'Drill', restore: 'Restore' };
  const STATE_TEXT = { waiting: 'waiting in the queue', active: 'running', completed: 'completed', failed: 'failed', error: 'did not run' };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function csrfToken() {
    for (const part of document.cookie.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === CSRF_COOKIE) {
        try {
          return decodeURIComponent(part.slice(eq + 1).trim());
        } catch {
          return undefined;
        }
      }
    }
    return undefined;
  }

  // The same units as formatBytes in lib/cli/format.ts (this script cannot import it).
  function formatBytes(bytes) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props);
    node.append(...children.filter((c) => c !== undefined && c !== null && c !== ''));
    return node;
  }

  /** The <dialog id="confirm">, or the browser's confirm() where dialogs are not supported. */
  function confirmAction(message, label) {
    const dialog = document.getElementById('confirm');
    if (!dialog || typeof dialog.showModal !== 'function') return Promise.resolve(window.confirm(message));
    dialog.querySelector('.what').textContent = message;
    dialog.querySelector('button[value="confirm"]').textContent = label;
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true }));
  }

  // --- The job panel: <output id="job" data-state="waiting|active|completed|failed|error"> ---

  /** A new action stops the polling of the one before. */
  let generation = 0;

  function show(state, title, lines, extra = []) {
    const output = document.getElementById('job');
    document.getElementById('job-panel').hidden = false;
    output.dataset.state = state;
    output.replaceChildren(el('p', {}, el('span', { className: 'job-state' }, `${title}: ${STATE_TEXT[state]}`)), ...lines.filter(Boolean).map((line) => el('p', {}, line)), ...extra);
  }

  /** BullMQ's other states (delayed between attempts, prioritized, waiting-children) are still waiting. */
  const panelState = (state) => (state === 'active' || state === 'completed' || state === 'failed' ? state : 'waiting');

  function progressText(progress) {
    if (typeof progress === 'number') return progress > 0 ? `${progress}%` : undefined;
    if (!progress || typeof progress !== 'object') return undefined;
    let text = typeof progress.phase === 'string' ? progress.phase : 'working';
    if (typeof progress.bytes === 'number') {
      text += ` ${formatBytes(progress.bytes)}`;
      if (typeof progress.total === 'number' && progress.total > 0) text += ` of ${formatBytes(progress.total)} (${Math.min(100, Math.round((100 * progress.bytes) / progress.total))}%)`;
    }
    if (typeof progress.objects === 'number') text += `${typeof progress.bytes === 'number' ? ',' : ''} ${progress.objects}${typeof progress.totalObjects === 'number' ? ` of ${progress.totalObjects}` : ''} objects`;
    return text;
  }

  /** The result's plain fields in one line (ok, key, bytes, databases…); the whole of it goes into a <details>. */
  function resultSummary(result) {
    if (result === undefined || result === null) return 'No result was returned.';
    if (typeof result !== 'object') return String(result);
    const parts = [];
    for (const [key, value] of Object.entries(result)) {
      if (typeof value === 'number') parts.push(`${key}: ${/(bytes|size)$/i.test(key) ? formatBytes(value) : value}`);
      else if (typeof value === 'string') parts.push(`${key}: ${/^[0-9a-f]{64}$/.test(value) ? `${value.slice(0, 12)}…` : value}`);
      else if (typeof value === 'boolean') parts.push(`${key}: ${value ? 'yes' : 'no'}`);
      else if (Array.isArray(value) && value.every((v) => typeof v !== 'object')) parts.push(`${key}: ${value.length ? value.join(', ') : 'none'}`);
      else if (value && typeof value.count === 'number') parts.push(`${key}: ${value.count}`);
    }
    return parts.length ? parts.join(' · ') : 'See the details.';
  }

  const rawJson = (summary, value) => el('details', { className: 'raw' }, el('summary', {}, summary), el('pre', {}, JSON.stringify(value, null, 2)));

  const httpError = (response, body) =>
    `The server answered HTTP ${response.status}: ${(body && body.error) || response.statusText}${body && body.field ? ` (field: ${body.field})` : ''}`;

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return {};
    }
  }

  /**
   * Re-reads this page and swaps in its <main>, so the status data is current without a reload; the job
   * panel and dialog sit outside <main> and stay. Returns what went wrong, if anything.
   */
  async function refreshMain() {
    try {
      const response = await fetch(location.href, { headers: { accept: 'text/html' }, credentials: 'same-origin', cache: 'no-store' });
      // A redirect here is the login page: the session ended.
      if (response.redirected) return 'The page could not be refreshed (log in again and reload it).';
      const fresh = new DOMParser().parseFromString(await response.text(), 'text/html');
      const main = fresh.querySelector('main');
      const old = document.querySelector('main');
      if (!main || !old) return `The page could not be refreshed (HTTP ${response.status}); reload it.`;
      old.replaceWith(document.adoptNode(main));
      document.title = fresh.title;
      return response.ok ? undefined : `The refreshed page reports an error (HTTP ${response.status}).`;
    } catch (err) {
      return `The page could not be refreshed (${err.message}); reload it.`;
    }
  }

  async function finish(state, title, lines, extra) {
    show(state, title, [...lines, 'Updating the page…'], extra);
    const problem = await refreshMain();
    show(state, title, [...lines, problem || `Page updated ${new Date().toLocaleTimeString()}.`], extra);
  }

  async function poll(started, title, mine) {
    // Tick jobs' ids start with their function's name already.
    const name = String(started.jobId).startsWith(started.fn) ? `Job ${started.jobId}` : `${started.fn} job ${started.jobId}`;
    const job = `${name}${started.created === false ? ' (the job of this minute, already queued)' : ''}`;
    let errors = 0;
    for (;;) {
      if (mine !== generation) return;
      let status;
      try {
        const response = await fetch(started.status, { headers: { accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' });
        const body = await readJson(response);
        if (response.ok) status = body;
        else if (response.status === 404 || ++errors >= MAX_POLL_ERRORS) return show('error', title, [job, `Lost track of the job. ${httpError(response, body)}`]);
        else show(document.getElementById('job').dataset.state || 'waiting', title, [job, `Asking again (${httpError(response, body)})`]);
      } catch (err) {
        if (++errors >= MAX_POLL_ERRORS) return show('error', title, [job, `Lost track of the job: ${err.message}`]);
      }
      if (mine !== generation) return;
      if (status) {
        errors = 0;
        const state = panelState(status.state);
        const attempts = status.attemptsMade > 0 ? `Attempts made: ${status.attemptsMade}.` : undefined;
        // The last progress report stays: how far a failed job got, how much a finished one moved.
        const progress = progressText(status.progress);
        if (state === 'completed') return finish('completed', title, [job, progress, resultSummary(status.result)], [rawJson('Result (JSON)', status.result ?? null)]);
        if (state === 'failed') return finish('failed', title, [job, progress, `Error: ${status.failedReason || 'no reason given'}`, attempts]);
        const retrying = status.state === 'delayed' && status.failedReason ? `Attempt ${status.attemptsMade} failed (${status.failedReason}); it will be retried.` : undefined;
        show(state, title, [job, progress, retrying]);
      }
      await sleep(POLL_MS);
    }
  }

  async function runAction(action, body, title) {
    const mine = ++generation;
    show('waiting', title, ['Sending…']);
    const token = csrfToken();
    let response;
    let answer;
    try {
      response = await fetch(`/api/actions/${action}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', ...(token ? { 'x-csrf-token': token } : {}) },
        body: JSON.stringify(body),
        credentials: 'same-origin',
      });
      answer = await readJson(response);
    } catch (err) {
      return show('error', title, [`Could not reach the server: ${err.message}`]);
    }
    if (response.status !== 202) return show('error', title, [httpError(response, answer)]);
    return poll(answer, title, mine);
  }

  // --- The controls ---

  async function onActionButton(button) {
    const { action, dataset, backup, confirm } = button.dataset;
    if (!(await confirmAction(confirm, VERB[action] || action))) return;
    await runAction(action, backup ? { dataset, backup } : { dataset }, `${VERB[action] || action} ${dataset}${backup ? ` backup ${backup}` : ''}`);
  }

  async function onRestore(form) {
    const { dataset, backup, kind } = form.dataset;
    const option = form.elements.namedItem('into').selectedOptions[0];
    if (!option) return;
    const into = option.value;
    const body = { dataset, backup, into };
    let message;
    if (kind === 'postgres') {
      const scope = form.elements.namedItem('scope');
      const where = `${into} (${option.dataset.url})`;
      if (scope && scope.value === 'database') {
        const database = form.elements.namedItem('database').value;
        const as = form.elements.namedItem('as').value.trim();
        body.database = database;
        if (as) body.as = as;
        const created = as && as !== database ? `${as} (from ${database})` : database;
        message = `Restore backup ${backup} of ${dataset} into ${where}: creates database ${created}; the restore stops without changing anything if it already exists there.`;
      } else {
        const databases = JSON.parse(form.dataset.databases || '[]');
        const created = databases.length ? `creates databases ${databases.join(', ')}` : 'creates the databases of the backup';
        message = `Restore backup ${backup} of ${dataset} into ${where}: ${created}; the restore stops without changing anything if any of them already exists there.`;
      }
    } else {
      message = `Restore backup ${backup} of ${dataset} into ${into}: writes the mirrored objects into bucket ${option.dataset.bucket} on target ${option.dataset.target}; an object already there with the same content is skipped, one changed there after the mirror's copy is kept, an older different one is replaced; objects only at the destination are never deleted.`;
    }
    if (!(await confirmAction(message, 'Restore'))) return;
    await runAction('restore', body, `Restore ${dataset} backup ${backup} into ${into}`);
  }

  async function copyCommand(button) {
    const code = document.getElementById(button.dataset.copy);
    const status = button.parentElement.querySelector('.copy-status');
    const say = (text) => {
      if (status) status.textContent = text;
    };
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(code.textContent);
        return say('Copied.');
      } catch {
        // Refused (permissions): fall through to selecting it.
      }
    }
    // Plain http on a LAN address has no clipboard API: select the command so Ctrl+C (or a long press) copies it.
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    let copied = false;
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
    say(copied ? 'Copied.' : 'Selected: press Ctrl+C (⌘C) to copy.');
  }

  document.addEventListener('click', (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const button = target && target.closest('button[data-action]');
    if (button) {
      event.preventDefault();
      onActionButton(button);
      return;
    }
    const copy = target && target.closest('#copy-restore');
    if (copy) copyCommand(copy);
  });

  document.addEventListener('submit', (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.id === 'restore') {
      event.preventDefault();
      onRestore(form);
    } else if (form.classList.contains('logout')) {
      // The cookie may have been renewed since the page was rendered.
      const token = csrfToken();
      if (token) form.elements.namedItem('_csrf').value = token;
    }
  });

  // Choosing a database or a new name means restoring one database.
  document.addEventListener('input', (event) => {
    const field = event.target;
    if (!(field instanceof HTMLElement) || !field.form || field.form.id !== 'restore' || (field.name !== 'database' && field.name !== 'as')) return;
    const radio = field.form.querySelector('input[name="scope"][value="database"]');
    if (radio) radio.checked = true;
  });
})();
