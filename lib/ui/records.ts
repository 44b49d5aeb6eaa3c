import { formatBytes } from '../cli/format.js';
import { html, join, type Html } from './html.js';
import { scroll } from './parts.js';

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** Nested objects become dotted keys (artifact.sha256); arrays stay values, rendered as lists or tables. */
function flatten(value: Record<string, unknown>, prefix = ''): Array<[string, unknown]> {
  return Object.entries(value).flatMap(([key, v]): Array<[string, unknown]> => (isObject(v) && Object.keys(v).length > 0 ? flatten(v, `${prefix}${key}.`) : [[`${prefix}${key}`, v]]));
}

/** Sizes read better in KiB/MiB; the exact count stays beside them. */
const isByteCount = (key: string, value: unknown): value is number => typeof value === 'number' && /(^|\.)(size|bytes)$|Bytes$/.test(key);

function cell(key: string, value: unknown): Html {
  if (value === null || value === undefined) return html`<span class="none">—</span>`;
  if (Array.isArray(value)) {
    if (value.length === 0) return html`<span class="none">none</span>`;
    if (value.every(isObject)) return objectsTable(value);
    return join(value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))), ', ');
  }
  if (isObject(value)) return html`<span class="none">{}</span>`;
  if (typeof value === 'boolean') return value ? html`<span class="yes">✓ true</span>` : html`<span class="no">✗ false</span>`;
  if (isByteCount(key, value)) return html`${value} (${formatBytes(value)})`;
  return html`${String(value)}`;
}

/** An array of objects: one row each, one column per (dotted) key any of them has. */
function objectsTable(items: Array<Record<string, unknown>>): Html {
  const rows = items.map((item) => new Map(flatten(item)));
  const columns = [...new Set(rows.flatMap((row) => [...row.keys()]))];
  return scroll(html`<table class="nested"><thead><tr>${columns.map((c) => html`<th scope="col">${c}</th>`)}</tr></thead>
<tbody>${rows.map((row) => html`<tr>${columns.map((c) => html`<td>${cell(c, row.get(c))}</td>`)}</tr>`)}</tbody></table>`);
}

/** A stored JSON record (manifest, verify.json, drill.json, a mirror report) as a key/value table. */
export function recordTable(value: unknown): Html {
  if (!isObject(value)) return html`<p>${cell('', value)}</p>`;
  return scroll(html`<table class="record"><tbody>${flatten(value).map(([key, v]) => html`<tr><th scope="row">${key}</th><td>${cell(key, v)}</td></tr>`)}</tbody></table>`);
}

/** A record's section: its table, and the JSON as stored behind a toggle. */
export function recordSection(id: string, heading: string, value: unknown, missing: string): Html {
  return html`<section id="${id}"><h2>${heading}</h2>
${value === undefined ? html`<p class="none">${missing}</p>` : html`${recordTable(value)}<details class="raw"><summary>Raw JSON</summary><pre>${JSON.stringify(value, null, 2)}</pre></details>`}
</section>`;
}
