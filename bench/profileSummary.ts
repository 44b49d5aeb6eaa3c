/**
 * Where a CPU profile's time went: self time by package (or Node's internals, GC, idle) and the top
 * functions, as shares of the sampled time.
 *   node dist/bench/profileSummary.js <file.cpuprofile> [--top 25]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fmt, printTable } from './common.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfMicros = new Map<number, number>();
profile.samples.forEach((id, i) => selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

/** "@aws-sdk/client-s3", "lifeboat lib/mirror", "node:internal/streams", "(garbage collector)". */
function area(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  const own = /\/dist\/([^/]+(?:\/[^/]+)?)\//.exec(url);
  return own ? `lifeboat ${own[1]}` : url;
}

const total = [...selfMicros.values()].reduce((a, b) => a + b, 0);
const busy = total - [...selfMicros].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
const areas = new Map<string, number>();
const functions = new Map<string, number>();
for (const [id, micros] of selfMicros) {
  const frame = byId.get(id)!.callFrame;
  if (frame.functionName === '(idle)') continue;
  areas.set(area(frame), (areas.get(area(frame)) ?? 0) + micros);
  const name = `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, '')}:${frame.lineNumber + 1}`;
  functions.set(name, (functions.get(name) ?? 0) + micros);
}
const top = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top));
console.log(`${positionals[0]}: ${fmt(total / 1e6)} s sampled, ${fmt(busy / 1e6)} s busy (not idle)`);
printTable([['self time by area', 's', '% of busy'], ...top(areas).map(([k, v]) => [k, fmt(v / 1e6), fmt((100 * v) / busy, 1)])]);
console.log('');
printTable([['top functions (self)', 's', '% of busy'], ...top(functions).map(([k, v]) => [k.slice(0, 110), fmt(v / 1e6), fmt((100 * v) / busy, 1)])]);
