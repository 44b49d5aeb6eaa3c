/**
 * CLI startup: what a command costs before it does any work. Whole processes under GNU time, one
 * discarded warm-up run and then the median of `--runs` (5): `node -e 0` (Node's own start, the floor),
 * `lifeboat --help`, `lifeboat config check` on docs/lifeboat.example.yaml (every section, encryption
 * included) and on a minimal config, and `lifeboat backups ls` on an empty dir target (config, deps and
 * the catalog, no network). Prints wall, CPU (user+system) and peak RSS, and each as a multiple of
 * `node -e 0`. `--config FILE` adds `config check` on that file.
 *
 *   npm run build && node dist/bench/startup.js [--runs 5] [--config FILE]
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fmt, measureShell, printTable, type Usage } from './common.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, config: { type: 'string' } } });
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs: a whole number of runs, at least 1');

const root = join(import.meta.dirname, '../..');
const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const lifeboat = (args: string) => `${quote(process.execPath)} --max-semi-space-size=2 ${quote(join(root, 'dist/lib/cli/main.js'))} ${args}`;

const dir = await mkdtemp(join(tmpdir(), 'lifeboat-bench-startup-'));
try {
  // The example config with every secret it references present: files under dir/secrets, env variables set.
  const example = await readFile(join(root, 'docs/lifeboat.example.yaml'), 'utf8');
  await mkdir(join(dir, 'secrets'));
  for (const [, name] of example.matchAll(/\$\{file:\/run\/secrets\/([\w.-]+)\}/g)) await writeFile(join(dir, 'secrets', name!), 'bench-secret\n');
  await writeFile(join(dir, 'example.yaml'), example.replaceAll('${file:/run/secrets/', `\${file:${dir}/secrets/`));
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.LIFEBOAT_CONFIG;
  for (const [, name] of example.matchAll(/\$\{env:(\w+)\}/g)) env[name!] = 'bench-value';
  await writeFile(
    join(dir, 'minimal.yaml'),
    `targets: { local: { kind: dir, path: ${JSON.stringify(join(dir, 'data'))} } }
datasets:
  - { id: pg, kind: postgres, source: { mode: direct, url: "postgres://postgres@127.0.0.1:5432/postgres" }, target: { name: local, bucket: postgres } }
`,
  );

  const commands: Array<[string, string]> = [
    ['node -e 0', `${quote(process.execPath)} -e 0`],
    ['lifeboat --help', lifeboat('--help')],
    ['lifeboat config check (example)', lifeboat(`config check -c ${quote(join(dir, 'example.yaml'))}`)],
    ['lifeboat config check (minimal)', lifeboat(`config check -c ${quote(join(dir, 'minimal.yaml'))}`)],
    ['lifeboat backups ls (empty dir)', lifeboat(`backups ls -c ${quote(join(dir, 'minimal.yaml'))}`)],
  ];
  if (values.config) commands.push([`lifeboat config check (${values.config})`, lifeboat(`config check -c ${quote(resolve(values.config))}`)]);

  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const results: Array<[string, Usage]> = [];
  for (const [name, command] of commands) {
    await measureShell(command, { env }); // warm-up: page cache, not counted
    const samples: Usage[] = [];
    for (let i = 0; i < runs; i++) samples.push(await measureShell(command, { env }));
    results.push([name, { seconds: median(samples.map((u) => u.seconds)), cpuSeconds: median(samples.map((u) => u.cpuSeconds)), maxRssMiB: median(samples.map((u) => u.maxRssMiB)) }]);
  }

  const node = results[0]![1];
  console.log(`median of ${runs} runs each; ×: a multiple of node -e 0`);
  printTable([
    ['command', 'wall s', 'CPU s', 'RSS MiB', 'wall ×', 'CPU ×', 'RSS ×'],
    ...results.map(([name, u]) => [name, fmt(u.seconds), fmt(u.cpuSeconds), fmt(u.maxRssMiB, 0), fmt(u.seconds / node.seconds, 1), fmt(u.cpuSeconds / node.cpuSeconds, 1), fmt(u.maxRssMiB / node.maxRssMiB, 1)]),
  ]);
} finally {
  await rm(dir, { recursive: true, force: true });
}
