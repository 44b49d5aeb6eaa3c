import type { ApiStatus } from '../api/schemas.js';
import { age, formatBytes } from '../cli/format.js';
import type { Config } from '../config/schema.js';
import { html, type Child, type Html } from './html.js';

/** What every page renderer needs besides its data. */
export interface PageContext {
  config: Config;
  now: Date;
  /** Operators see the action buttons and forms; viewers see none of them. */
  operator: boolean;
}

/** A page's content; the layout adds the header and the assets. */
export interface Page {
  title: string;
  body: Html;
}

const STATUS_TEXT: Record<ApiStatus | 'none', string> = {
  verified: '✓ verified',
  pending: '… pending',
  corrupt: '✗ corrupt',
  'changed-since-verified': '! changed since verified',
  none: 'no backup',
};

/** A status as text and colour (never colour alone); `why` goes into the tooltip. */
export function statusBadge(status: ApiStatus | 'none', why?: string): Html {
  return html`<span class="status status-${status}" data-status="${status}"${why && html` title="${why}"`}>${STATUS_TEXT[status]}</span>`;
}

/** A drill result: ✓ ok or ✗ failed with the failed checks, and when. */
export function drillBadge(ctx: PageContext, drill: { ok: boolean; at: string; failedChecks: string[] } | undefined): Html {
  if (!drill) return html`<span class="status status-none" data-status="none">no drill</span>`;
  const state = drill.ok ? 'ok' : 'failed';
  return html`<span class="status status-${state}" data-status="${state}">${drill.ok ? '✓ ok' : '✗ failed'}</span> ${ago(ctx, drill.at)}${drill.failedChecks.length > 0 && html`<br><span class="detail">failed: ${drill.failedChecks.join(', ')}</span>`}`;
}

/** "3 h ago", with the exact time in the tooltip. */
export function ago(ctx: PageContext, iso: string): Html {
  return html`<time datetime="${iso}" title="${iso}">${age(new Date(iso), ctx.now)}</time>`;
}

/** "4.9 KiB", with the exact count in the tooltip. */
export function bytes(count: number): Html {
  return html`<span title="${count.toLocaleString('en-US')} bytes">${formatBytes(count)}</span>`;
}

/** Tables scroll sideways inside their wrapper, so a phone never scrolls the whole page. */
export function scroll(table: Html): Html {
  return html`<div class="scroll">${table}</div>`;
}

/** A red notice: a target that could not be read, a failed request. */
export function problem(text: Child): Html {
  return html`<p class="problem" role="alert">${text}</p>`;
}

export const datasetHref = (id: string) => `/datasets/${encodeURIComponent(id)}`;
export const backupHref = (dataset: string, id: string) => `/backups/${encodeURIComponent(dataset)}/${encodeURIComponent(id)}`;

/** A 4xx/5xx page that says what was wrong: the field of a bad request, the target's error. */
export function errorPage(status: number, message: string, field?: string): Page {
  const title = status === 400 ? 'Bad request' : status === 404 ? 'Not found' : status === 502 ? 'The target could not be read' : `Error ${status}`;
  return {
    title,
    body: html`<h1>${title}</h1>${problem(message)}${field && html`<p>Check <code>${field}</code>.</p>`}<p><a href="/">Back to the overview</a></p>`,
  };
}
