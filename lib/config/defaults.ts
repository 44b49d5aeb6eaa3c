/**
 * The embedded defaults: used when no config file is given and ./lifeboat.yaml does not exist.
 * Local Redis, local Postgres, and a local directory as the target, so the demo needs nothing else.
 */
export const DEFAULT_DATA_DIR = '.lifeboat/data';

export const embeddedDefaults = {
  targets: {
    local: { kind: 'dir', path: DEFAULT_DATA_DIR },
  },
  datasets: [
    {
      id: 'demo',
      kind: 'postgres',
      source: { mode: 'direct', url: 'postgres://postgres@127.0.0.1:5432/postgres' },
      target: { name: 'local', bucket: 'postgres' },
      schedule: '0 2 * * *',
    },
  ],
};
