import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../lib/config/load.js';
import { Secret } from '../lib/config/secret.js';
import { configProblems, runCli } from './helpers.js';

const validDataset = {
  id: 'main',
  kind: 'postgres',
  source: { mode: 'direct', url: 'postgres://postgres@db:5432/postgres', password: '${env:PGPASS}' },
  target: { name: 'hub', bucket: 'postgres' },
  schedule: '0 2 * * *',
};
const validHub = { kind: 's3', endpoint: 'http://pi.lan:9000', accessKeyId: '${env:HUB_KEY}', secretAccessKey: '${env:HUB_SECRET}' };
const hubEnv = { HUB_KEY: 'k', HUB_SECRET: 's' };

describe('config validation', () => {
  it('names every bad field by its path', () => {
    const found = configProblems({
      targets: { hub: { kind: 's3', endpoint: 'not a url' }, local: { kind: 'dir', path: '/srv' } },
      datasets: [
        { ...validDataset, source: { ...validDataset.source, password: undefined }, target: { name: 'local', bucket: 'postgres' } },
        { id: 'Bad_ID', kind: 'postgres', source: { mode: 'direct' }, target: { name: 'nowhere', bucket: 'b' }, schedule: 'every night' },
      ],
      server: { timezone: 'Mars/Olympus' },
    });
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^targets\.hub\.endpoint: /),
        'targets.hub.accessKeyId: Required',
        'targets.hub.secretAccessKey: Required',
        expect.stringMatching(/^datasets\[1\]\.id: must be/),
        'datasets[1].source.url: Required',
        expect.stringMatching(/^datasets\[1\]\.target\.bucket: must be a valid S3 bucket name/),
        expect.stringMatching(/^datasets\[1\]\.schedule: must be a cron pattern/),
        expect.stringMatching(/^server\.timezone: must be an IANA time zone/),
      ]),
    );
    // datasets[0] is fine apart from nothing: it must not be blamed.
    expect(found.filter((p) => p.startsWith('datasets[0]'))).toEqual([]);
  });

  it('reports a dataset whose target does not exist, and duplicate ids', () => {
    const found = configProblems(
      { targets: { hub: validHub }, datasets: [validDataset, { ...validDataset, target: { name: 'pi', bucket: 'postgres' } }] },
      { PGPASS: 'x', ...hubEnv },
    );
    expect(found).toContain('datasets[1].id: duplicate dataset id "main" (also datasets[0])');
    expect(found).toContain('datasets[1].target.name: unknown target "pi" (known: hub)');
  });

  it('refuses datasets whose prefixes nest in one bucket (one dataset\'s objects would count as another\'s), naming both', () => {
    const velero = (id: string, target: Record<string, string>) => ({ id, kind: 'velero', target: { name: 'hub', bucket: 'backups', ...target } });
    const found = configProblems(
      {
        targets: { hub: validHub, nas: { kind: 'dir', path: '/srv' } },
        datasets: [
          { ...validDataset, id: 'pg', target: { name: 'hub', bucket: 'backups' } },
          velero('k3s', { bucket: 'etcd' }),
          velero('db', { prefix: 'db/' }),
          velero('velero-a', { bucket: 'velero', prefix: 'a/' }),
          velero('velero-a2', { bucket: 'velero', prefix: 'a/' }),
          velero('velero-ab', { bucket: 'velero', prefix: 'ab/' }),
          velero('velero-a-x', { bucket: 'velero', prefix: 'a/x/' }),
          velero('nas-copy', { name: 'nas' }),
        ],
      },
      { PGPASS: 'x', ...hubEnv },
    );
    const hint = "give each dataset its own bucket or a prefix that is not a prefix of another's";
    expect(found).toEqual([
      `datasets[2].target.prefix: "db/" (dataset "db") overlaps dataset "pg" (datasets[0], prefix "") in target hub bucket backups; ${hint}`,
      `datasets[4].target.prefix: "a/" (dataset "velero-a2") overlaps dataset "velero-a" (datasets[3], prefix "a/") in target hub bucket velero; ${hint}`,
      `datasets[6].target.prefix: "a/x/" (dataset "velero-a-x") overlaps dataset "velero-a" (datasets[3], prefix "a/") in target hub bucket velero; ${hint}`,
      `datasets[6].target.prefix: "a/x/" (dataset "velero-a-x") overlaps dataset "velero-a2" (datasets[4], prefix "a/") in target hub bucket velero; ${hint}`,
    ]);
    // Own buckets, sibling prefixes ("a/" and "ab/") and another target are fine.
    const apart = configProblems(
      { targets: { hub: validHub }, datasets: [velero('one', { prefix: 'a/' }), velero('two', { prefix: 'ab/' }), velero('three', { bucket: 'other' })] },
      hubEnv,
    );
    expect(apart).toEqual([]);
  });

  it('keeps Lifeboat\'s records out of every mirror: a bucket dataset needs a prefix, and no dataset may live under _lifeboat/', () => {
    const mirror = { id: 'photos', kind: 'bucket', source: { endpoint: 'http://rgw:80', bucket: 'photos', accessKeyId: '${env:HUB_KEY}', secretAccessKey: '${env:HUB_SECRET}' } };
    const found = configProblems(
      { targets: { hub: validHub }, datasets: [{ ...mirror, target: { name: 'hub', bucket: 'rgw' } }, { ...validDataset, target: { name: 'hub', bucket: 'pgs', prefix: '_lifeboat/x/' } }] },
      { PGPASS: 'x', ...hubEnv },
    );
    expect(found).toEqual([
      expect.stringMatching(/^datasets\[0\]\.target\.prefix: a mirror needs a prefix of its own in the hub bucket \(for example photos\/\)/),
      'datasets[1].target.prefix: must not start with _lifeboat/: that is where Lifeboat keeps its own records',
    ]);
    expect(configProblems({ targets: { hub: validHub }, datasets: [{ ...mirror, target: { name: 'hub', bucket: 'rgw', prefix: 'photos/' } }] }, hubEnv)).toEqual([]);
  });

  it('rejects unknown keys, so a typo is not silently ignored', () => {
    expect(configProblems({ targets: {}, datasets: [], sever: {} })).toEqual(['sever: unknown key; did you mean "server"?']);
  });

  it('names a missing environment variable and an unreadable secret file, never a value', () => {
    const found = configProblems({ targets: { hub: { ...validHub, secretAccessKey: '${file:/run/secrets/hub}' } } }, { HUB_KEY: undefined });
    expect(found).toContain('targets.hub.accessKeyId: environment variable HUB_KEY is not set');
    expect(found).toContain('targets.hub.secretAccessKey: secret file /run/secrets/hub cannot be read (ENOENT)');
  });

  it('refuses an inline secret without echoing it', () => {
    const found = configProblems({ targets: { hub: { ...validHub, secretAccessKey: 'hunter2-inline-secret' } } }, hubEnv);
    expect(found).toContain('targets.hub.secretAccessKey: must be a ${env:NAME} or ${file:/path} reference');
    expect(found.join('\n')).not.toContain('hunter2');
  });

  it('refuses a password inside the postgres URL', () => {
    const found = configProblems({ targets: { hub: validHub }, datasets: [{ ...validDataset, source: { mode: 'direct', url: 'postgres://u:topsecret@db/postgres' } }] }, { ...hubEnv, PGPASS: 'p' });
    expect(found).toEqual([expect.stringMatching(/^datasets\[0\]\.source\.url: must be a valid URL without a password/)]);
    expect(found.join('\n')).not.toContain('topsecret');
  });

  it('resolves secrets into values that never print', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lb-config-'));
    await writeFile(join(dir, 'hub'), 'file-secret-value\n');
    const config = parseConfig({ targets: { hub: { ...validHub, secretAccessKey: `\${file:${join(dir, 'hub')}}` } } }, 'test', { env: { HUB_KEY: 'env-secret-value' } });
    const hub = config.targets.hub!;
    if (hub.kind !== 's3') throw new Error('expected s3');
    expect(hub.accessKeyId).toBeInstanceOf(Secret);
    expect(hub.accessKeyId.reveal()).toBe('env-secret-value');
    expect(hub.secretAccessKey.reveal()).toBe('file-secret-value');
    const printed = JSON.stringify(config) + inspect(config, { depth: 10 }) + String(hub.secretAccessKey);
    expect(printed).not.toContain('env-secret-value');
    expect(printed).not.toContain('file-secret-value');
  });

  it('fills defaults', () => {
    const config = parseConfig({ targets: { hub: validHub }, datasets: [validDataset] }, 'test', { env: { ...hubEnv, PGPASS: 'p' } });
    expect(config.redis).toEqual({ url: 'redis://127.0.0.1:6379', prefix: 'lifeboat' });
    expect(config.server).toMatchObject({ host: '127.0.0.1', port: 9465, timezone: 'UTC' });
    expect(config.datasets[0]).toMatchObject({ compression: 'gzip', retention: { daily: 14 }, target: { prefix: '' } });
  });
});

describe('config error messages', () => {
  const env = { PGPASS: 'x', ...hubEnv };
  /** A valid postgres dataset in a bucket of its own (nested prefixes in one bucket are a problem of their own). */
  const postgres = (id: string, fields: Record<string, unknown> = {}) => ({ ...validDataset, id, target: { name: 'hub', bucket: `pg-${id}` }, ...fields });
  const mirror = { id: 'photos', kind: 'bucket', source: { endpoint: 'http://rgw:80', bucket: 'photos', accessKeyId: '${env:HUB_KEY}', secretAccessKey: '${env:HUB_SECRET}' }, target: { name: 'hub', bucket: 'rgw', prefix: 'photos/' } };

  it('suggests the key an unknown one was likely meant to be, at every level, by its full path', () => {
    const found = configProblems(
      {
        serverr: {},
        targets: { hub: { ...validHub, regoin: 'eu' } },
        datasets: [{ ...validDataset, retension: {}, schedul: '0 2 * * *' }, { ...mirror, mirror: { concurency: 4 } }],
        server: { ui: { users: [{ name: 'ann', password: '${env:PGPASS}', role: 'viewer', rol: 'operator' }] } },
      },
      env,
    );
    expect(found.sort()).toEqual([
      'datasets[0].retension: unknown key; did you mean "retention"?',
      'datasets[0].schedul: unknown key; did you mean "schedule"?',
      'datasets[1].mirror.concurency: unknown key; did you mean "concurrency"?',
      'server.ui.users[0].rol: unknown key; did you mean "role"?',
      'serverr: unknown key; did you mean "server"?',
      'targets.hub.regoin: unknown key; did you mean "region"?',
    ]);
  });

  it('lists the known keys when no key is close, and follows unions to the option the value is', () => {
    const kubernetes = { mode: 'kubernetes', namespace: 'db', pod: 'pg-0' };
    const found = configProblems(
      {
        colour: 'blue',
        targets: { hub: validHub },
        datasets: [
          postgres('main', { foo: 1 }),
          postgres('k8s', { source: { ...kubernetes, password: { fromPodEnvv: 'PGPASSWORD' } } }),
          postgres('k8s2', { source: { ...kubernetes, password: { fromSecret: { name: 's', keyy: 'pw' } } } }),
        ],
      },
      env,
    );
    expect(found).toEqual([
      'datasets[0].foo: unknown key (known: id, kind, staleAfterHours, source, target, schedule, compression, compressionLevel, encryption, replicas, retention, drill)',
      'datasets[1].source.password.fromPodEnvv: unknown key; did you mean "fromPodEnv"?',
      'datasets[2].source.password.fromSecret.keyy: unknown key; did you mean "key"?',
      'colour: unknown key (known: redis, replication, worker, prune, verify, targets, datasets, server)',
    ]);
  });

  it('never echoes the value of an unknown key', () => {
    const found = configProblems({ targets: { hub: { ...validHub, secretAccesKey: 'hunter2-inline-secret' } } }, hubEnv);
    expect(found).toEqual(['targets.hub.secretAccesKey: unknown key; did you mean "secretAccessKey"?']);
  });

  it('names the valid kinds in words, with a suggestion when one is close', () => {
    const found = configProblems(
      {
        targets: { hub: validHub, nas: { kind: 'dirr', path: '/srv' }, cloud: { kind: 'gcs' } },
        datasets: [postgres('a', { kind: 'postgress' }), postgres('b', { kind: 'mongo' }), postgres('c', { kind: undefined }), postgres('d', { source: { mode: 'kube' } })],
        server: { ui: { restoreTargets: { scratch: { kind: 'postgresql', url: 'postgres://db/postgres' } } } },
      },
      env,
    );
    expect(found).toEqual([
      'targets.nas.kind: "dirr" is not a target kind; expected one of s3 or dir; did you mean "dir"?',
      'targets.cloud.kind: "gcs" is not a target kind; expected one of s3 or dir',
      'datasets[0].kind: "postgress" is not a dataset kind; expected one of postgres, bucket, etcd or velero; did you mean "postgres"?',
      'datasets[1].kind: "mongo" is not a dataset kind; expected one of postgres, bucket, etcd or velero',
      'datasets[2].kind: Required; expected one of postgres, bucket, etcd or velero',
      'datasets[3].source.mode: "kube" is not a source mode; expected one of direct or kubernetes',
      'server.ui.restoreTargets.scratch.kind: "postgresql" is not a restore target kind; expected one of postgres or s3; did you mean "postgres"?',
    ]);
  });

  it('counts problems, targets and datasets in words: config check', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lb-config-'));
    const write = async (name: string, yaml: string) => {
      await writeFile(join(dir, name), yaml);
      return join(dir, name);
    };
    const one = await write('one.yaml', `targets:\n  nas: { kind: dir, path: ${dir} }\ndatasets:\n  - { id: v, kind: velero, target: { name: nas, bucket: velero } }\n`);
    const two = await write('two.yaml', `targets:\n  a: { kind: dir, path: ${dir} }\n  b: { kind: dir, path: ${dir} }\n`);
    const bad = await write('bad.yaml', 'targets: {}\nservr: {}\n');
    const [ranOne, ranTwo, ranBad] = await Promise.all([one, two, bad].map((file) => runCli(['config', 'check', '-c', file])));
    expect(ranOne).toMatchObject({ code: 0, stdout: `${one}: ok (1 target, 1 dataset: v [velero])\n` });
    expect(ranTwo).toMatchObject({ code: 0, stdout: `${two}: ok (2 targets, 0 datasets: none)\n` });
    expect(ranBad).toMatchObject({ code: 2, stderr: `${bad}: 1 problem\n  servr: unknown key; did you mean "server"?\n` });
  });
});

describe('loadConfig', () => {
  it('uses ./lifeboat.yaml, else LIFEBOAT_CONFIG, else the embedded defaults', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'lb-config-'));
    const defaults = await loadConfig({ cwd: empty, env: {} });
    expect(defaults.source).toBe('embedded defaults');
    expect(defaults.config.targets.local).toEqual({ kind: 'dir', path: join(empty, '.lifeboat/data') });

    await writeFile(join(empty, 'lifeboat.yaml'), 'targets:\n  local: { kind: dir, path: backups }\n');
    expect((await loadConfig({ cwd: empty, env: {} })).config.targets.local).toEqual({ kind: 'dir', path: join(empty, 'backups') });

    await writeFile(join(empty, 'other.yaml'), 'targets: {}\n');
    expect((await loadConfig({ cwd: empty, env: { LIFEBOAT_CONFIG: 'other.yaml' } })).config.targets).toEqual({});
  });

  it('fails on a named file that does not exist, and on broken YAML', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lb-config-'));
    await expect(loadConfig({ cwd: dir, file: 'missing.yaml' })).rejects.toThrow(/cannot read config file \(ENOENT\)/);
    await writeFile(join(dir, 'broken.yaml'), 'targets: [unclosed\n');
    await expect(loadConfig({ cwd: dir, file: 'broken.yaml' })).rejects.toThrow(/YAML:/);
  });

  it('points at a YAML syntax error with file:line:col, the line and a caret, and shows no other line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lb-config-'));
    const file = join(dir, 'lifeboat.yaml');
    await writeFile(file, 'targets:\n  hub:\n    accessKeyId: ${env:HUB_KEY}\n    kind: s3\n    kind: dir\ndatasets: []\n');
    const err: ConfigError = await loadConfig({ file }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.problems).toEqual([`${file}:5:5: YAML: Map keys must be unique\n  5 |     kind: dir\n    |     ^`]);
    expect(err.message).toBe(`${file}: 1 problem\n  ${file}:5:5: YAML: Map keys must be unique\n    5 |     kind: dir\n      |     ^`);
    expect(err.message).not.toContain('HUB_KEY');
  });

  it('shows the line before a YAML error reported on an empty line (an unclosed bracket)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lb-config-'));
    const file = join(dir, 'lifeboat.yaml');
    await writeFile(file, 'redis: { url: "redis://127.0.0.1:6379" }\ntargets: [unclosed\n');
    const err: ConfigError = await loadConfig({ file }).catch((e) => e);
    expect(err.problems).toEqual([`${file}:3:1: YAML: Flow sequence in block collection must be sufficiently indented and end with a ]\n  2 | targets: [unclosed\n  3 |\n    | ^`]);
  });
});

describe('docs/lifeboat.example.yaml', () => {
  it('is a valid config (with its secrets provided)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lb-example-'));
    const files: Record<string, string> = {};
    // Point the example's secret files at temp files, as a deployment would mount them.
    let yaml = await readFile('docs/lifeboat.example.yaml', 'utf8');
    for (const match of yaml.matchAll(/\$\{file:([^}]+)\}/g)) {
      const file = join(dir, match[1]!.replace(/\//g, '_'));
      files[match[1]!] = file;
      await writeFile(file, 'secret\n');
    }
    for (const [from, to] of Object.entries(files)) yaml = yaml.replaceAll(`\${file:${from}}`, `\${file:${to}}`);
    await writeFile(join(dir, 'lifeboat.yaml'), yaml);
    const { config } = await loadConfig({ cwd: dir, env: { HUB_POSTGRES_ACCESS_KEY: 'k', RGW_READER_ACCESS_KEY: 'r' } });
    expect(config.datasets.map((d) => d.id)).toEqual(['main-postgres', 'cluster-postgres', 'rgw-photos', 'k3s-etcd', 'velero']);
    expect(config.server.timezone).toBe('Europe/Berlin');
  });
});
