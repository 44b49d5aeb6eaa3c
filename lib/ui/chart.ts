import type { CapacitySample } from '../catalog/capacity.js';
import { formatBytes } from '../cli/format.js';
import { html, type Html } from './html.js';

const WIDTH = 300;
const HEIGHT = 80;
const PAD = 6;
const DAY_MS = 86400_000;

/**
 * A target's used bytes over the last `days` days as an inline SVG, drawn on the server: presentation
 * attributes only (the CSP allows no style attributes). The y axis starts at 0 and ends a little above
 * the highest sample, so growth shows; the capacity is a dashed line when it falls inside.
 */
export function historyChart(history: CapacitySample[], days: number, capacityBytes: number | undefined, label: string): Html {
  const samples = history.map((s) => ({ t: Date.parse(s.at), used: s.usedBytes, at: s.at }));
  const end = Math.max(...samples.map((s) => s.t));
  const start = end - days * DAY_MS;
  const top = Math.max(1, ...samples.map((s) => s.used)) * 1.1;
  const x = (t: number) => PAD + ((t - start) / (end - start)) * (WIDTH - 2 * PAD);
  const y = (used: number) => HEIGHT - PAD - (used / top) * (HEIGHT - 2 * PAD);
  const points = samples.map((s) => `${x(s.t).toFixed(1)},${y(s.used).toFixed(1)}`).join(' ');
  const capacityY = capacityBytes !== undefined && capacityBytes <= top ? y(capacityBytes).toFixed(1) : undefined;
  return html`<svg class="chart" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${label}">
<title>${label}</title>
<rect x="0" y="0" width="${WIDTH}" height="${HEIGHT}" fill="#f6f7f9" stroke="#d0d4da"/>
<line x1="${PAD}" y1="${HEIGHT - PAD}" x2="${WIDTH - PAD}" y2="${HEIGHT - PAD}" stroke="#9aa1ab" stroke-width="1"/>
${capacityY !== undefined && html`<line x1="${PAD}" y1="${capacityY}" x2="${WIDTH - PAD}" y2="${capacityY}" stroke="#b3261e" stroke-width="1" stroke-dasharray="4 3"><title>capacity ${formatBytes(capacityBytes!)}</title></line>`}
<polyline points="${points}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>
${samples.map((s) => html`<circle cx="${x(s.t).toFixed(1)}" cy="${y(s.used).toFixed(1)}" r="2.5" fill="#1f5fbf"><title>${s.at}: ${formatBytes(s.used)}</title></circle>`)}
</svg>`;
}
