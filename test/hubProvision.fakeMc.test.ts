// nix/hub-provision.sh (what lifeboat-hub-provision.service runs on the Pi) against a stand-in `mc`:
// MinIO cannot run here. The stand-in is a small Node script first on PATH that logs every call's argv
// and keeps the "server" in a JSON file, with the MinIO behaviour the script depends on:
// - the ARNs `mc event ls` prints carry the server's region, and its ARN filter is an exact string match;
// - `mc event add` of the same ARN, events and prefix again is rejected as overlapping, unless
//   --ignore-existing; an ARN for a target the server has not loaded (no restart yet) is rejected;
// - `mc mb` of an existing bucket fails without --ignore-existing; `policy attach` of an attached policy fails;
// - `admin config set notify_webhook:…` fails while the endpoint is down (MinIO dials it first).
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const script = join(root, 'nix/hub-provision.sh');
const hubNix = join(root, 'nix/hub.nix');

const fakeMc = String.raw`
const { appendFileSync, readFileSync, writeFileSync } = require('node:fs');
const argv = process.argv.slice(2);
const env = process.env;
appendFileSync(env.FAKE_MC_LOG, JSON.stringify(argv) + '\n');
const state = JSON.parse(readFileSync(env.FAKE_MC_STATE, 'utf8'));
const save = () => writeFileSync(env.FAKE_MC_STATE, JSON.stringify(state, null, 2));
const fail = (message) => { process.stderr.write('mc: <ERROR> ' + message + '\n'); process.exit(1); };
const print = (text) => process.stdout.write(text + '\n');

const valued = new Set(['event', 'prefix', 'suffix', 'user']);
const flags = {};
const args = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i].startsWith('--')) {
    const name = argv[i].slice(2);
    flags[name] = valued.has(name) ? argv[++i] : true;
  } else args.push(argv[i]);
}

// Every command names an alias; its credentials come from MC_HOST_<alias> and must be the root's.
function connect(target) {
  const alias = target.split('/')[0];
  const host = env['MC_HOST_' + alias];
  if (!host) fail('alias ' + alias + ' not found');
  const url = new URL(host);
  if (decodeURIComponent(url.username) !== state.root.user || decodeURIComponent(url.password) !== state.root.password)
    fail('The Access Key Id you provided does not exist in our records.');
  if (state.down) fail('Unable to connect: connection refused');
  return target.split('/').slice(1).join('/');
}
const bucketOf = (target) => {
  const name = connect(target);
  if (!state.buckets[name]) fail('Bucket ' + name + ' does not exist.');
  return state.buckets[name];
};
const eventNames = { put: 's3:ObjectCreated:*', delete: 's3:ObjectRemoved:*', get: 's3:ObjectAccessed:*' };

const [a, b, c] = args;
const command = [a, b, c].join(' ');
if (a === 'admin' && b === 'info') {
  connect(c);
  print('127.0.0.1:9000 online');
} else if (a === 'mb') {
  const name = connect(b);
  if (state.buckets[name]) {
    if (!flags['ignore-existing']) fail('Unable to make bucket ' + b + '. Your previous request to create the named bucket succeeded and you already own it.');
  } else state.buckets[name] = { versioning: 'Unversioned', lifecycle: null, events: [] };
  save();
} else if (a === 'version' && b === 'enable') {
  bucketOf(c).versioning = 'Enabled';
  save();
} else if (command === 'ilm rule import') {
  const bucket = bucketOf(args[3]);
  const config = JSON.parse(readFileSync(0, 'utf8'));
  if (!Array.isArray(config.Rules)) fail('invalid lifecycle configuration');
  bucket.lifecycle = config; // import replaces the whole configuration
  save();
} else if (command === 'admin policy create') {
  connect(args[3]);
  state.policies[args[4]] = JSON.parse(readFileSync(args[5], 'utf8'));
  save();
} else if (command === 'admin policy info') {
  connect(args[3]);
  const policy = state.policies[args[4]];
  if (!policy) fail('The canned policy does not exist.');
  print(JSON.stringify({ status: 'success', policy: args[4], policyInfo: { PolicyName: args[4], Policy: policy } }, null, 1));
} else if (command === 'admin policy attach') {
  connect(args[3]);
  const user = state.users[flags.user];
  if (!state.policies[args[4]] || !user) fail('The specified policy or user does not exist.');
  if (user.policies.includes(args[4])) fail('The specified policy change is already in effect.');
  user.policies.push(args[4]);
  save();
} else if (command === 'admin user add') {
  connect(args[3]);
  const secret = args[5] ?? '';
  if (secret.length < 8 || secret.length > 40) fail('The secret key must be 8-40 characters.');
  state.users[args[4]] = { secret, policies: state.users[args[4]]?.policies ?? [], status: 'enabled' };
  save();
} else if (command === 'admin user info') {
  connect(args[3]);
  const user = state.users[args[4]];
  if (!user) fail('The specified user does not exist.');
  print(flags.json ? JSON.stringify({ status: 'success', accessKey: args[4], userStatus: user.status, policyName: user.policies.join(',') }) : 'AccessKey: ' + args[4]);
} else if (command === 'admin config set') {
  connect(args[3]);
  const key = args[4];
  const settings = Object.fromEntries(args.slice(5).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  if (key.startsWith('notify_webhook:') && env.FAKE_MC_WEBHOOK_DOWN === '1')
    fail('Unable to set ' + key + ' to server: dial tcp: connect: connection refused.');
  state.config[key] = settings;
  state.restartNeeded = true;
  save();
  print("Successfully applied new settings. Please restart your server 'mc admin service restart " + args[3] + "'.");
} else if (command === 'admin config get') {
  connect(args[3]);
  const settings = state.config[args[4]] ?? { endpoint: '' };
  // MinIO does not show secrets back.
  print(args[4] + ' ' + Object.entries(settings).filter(([k]) => k !== 'auth_token').map(([k, v]) => k + '=' + v).join(' '));
} else if (command === 'admin service restart') {
  connect(args[3]);
  state.activeTargets = Object.keys(state.config).filter((k) => k.startsWith('notify_webhook:')).map((k) => k.slice('notify_webhook:'.length));
  state.restartNeeded = false;
  state.restarts += 1;
  save();
} else if (a === 'event' && b === 'add') {
  const bucket = bucketOf(c);
  const match = /^arn:minio:sqs:([^:]*):([^:]+):webhook$/.exec(args[3] ?? '');
  if (!match || (match[1] && match[1] !== state.region) || !state.activeTargets.includes(match[2]))
    fail('A specified destination ARN does not exist or is not well-formed. Verify the destination ARN.');
  const arn = 'arn:minio:sqs:' + state.region + ':' + match[2] + ':webhook';
  const events = String(flags.event ?? 'put,delete,get').split(',').map((e) => eventNames[e]);
  const prefix = flags.prefix ?? '';
  const suffix = flags.suffix ?? '';
  const overlaps = bucket.events.some((e) => e.arn === arn && e.prefix === prefix && e.suffix === suffix && e.event.some((x) => events.includes(x)));
  if (overlaps) {
    if (!flags['ignore-existing']) fail('An object key name filtering rule defined with overlapping prefixes, overlapping suffixes, or overlapping combinations of prefixes and suffixes for the same event types.');
  } else bucket.events.push({ arn, event: events, prefix, suffix });
  save();
} else if (a === 'event' && (b === 'ls' || b === 'list')) {
  const bucket = bucketOf(c);
  for (const e of bucket.events.filter((e) => args[3] === undefined || e.arn === args[3])) {
    print(flags.json ? JSON.stringify({ status: 'success', id: '', event: e.event, prefix: e.prefix, suffix: e.suffix, arn: e.arn }, null, ' ') : e.arn + '   ' + e.event.join(',') + '   Filter: prefix="' + e.prefix + '"');
  }
} else {
  process.stderr.write('stand-in mc: unsupported command: ' + argv.join(' ') + '\n');
  process.exit(2);
}
`;

type Bucket = { versioning: string; lifecycle: { Rules: Array<Record<string, unknown>> } | null; events: Array<{ arn: string; event: string[]; prefix: string }> };
type ServerState = {
  root: { user: string; password: string };
  region: string;
  down?: boolean;
  buckets: Record<string, Bucket>;
  policies: Record<string, unknown>;
  users: Record<string, { secret: string; policies: string[]; status: string }>;
  config: Record<string, Record<string, string>>;
  activeTargets: string[];
  restartNeeded: boolean;
  restarts: number;
};

const rootPassword = 'root p@ss/w:rd%';
const writerSecrets = { lifeboat: 'lifeboat-secret-key', velero: 'velero-secret-key' };
const webhookToken = 'token-for-the-stand-in';
const buckets = ['postgres', 'rgw', 'etcd', 'velero'];

const writerPolicy = (bucketsOfWriter: string[], allowDelete: boolean) => ({
  Version: '2012-10-17',
  Statement: [
    { Effect: 'Allow', Action: ['s3:ListBucket', 's3:ListBucketMultipartUploads'], Resource: bucketsOfWriter.map((b) => `arn:aws:s3:::${b}`) },
    {
      Effect: 'Allow',
      Action: ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts', ...(allowDelete ? ['s3:DeleteObject'] : [])],
      Resource: bucketsOfWriter.map((b) => `arn:aws:s3:::${b}/*`),
    },
  ],
});

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh stand-in server and everything the script reads, as hub.nix would set it up. */
function hub(region = 'us-east-1') {
  const dir = mkdtempSync(join(tmpdir(), 'lifeboat-hub-provision-'));
  dirs.push(dir);
  for (const d of ['bin', 'secrets', 'state', 'policies']) mkdirSync(join(dir, d));
  writeFileSync(join(dir, 'bin/mc'), `#!${process.execPath}\n${fakeMc}`);
  chmodSync(join(dir, 'bin/mc'), 0o755);
  const statePath = join(dir, 'server.json');
  const initial: ServerState = { root: { user: 'root', password: rootPassword }, region, buckets: {}, policies: {}, users: {}, config: {}, activeTargets: [], restartNeeded: false, restarts: 0 };
  writeFileSync(statePath, JSON.stringify(initial));
  for (const [name, secret] of Object.entries(writerSecrets)) writeFileSync(join(dir, `secrets/writer-${name}`), secret);
  writeFileSync(join(dir, 'secrets/webhook-token'), webhookToken);
  writeFileSync(join(dir, 'policies/lifeboat.json'), JSON.stringify(writerPolicy(buckets, true)));
  writeFileSync(join(dir, 'policies/velero.json'), JSON.stringify(writerPolicy(['velero'], true)));
  const logPath = join(dir, 'mc-calls.log');
  writeFileSync(logPath, '');

  const env: Record<string, string> = {
    PATH: `${join(dir, 'bin')}:${process.env.PATH}`,
    HOME: dir,
    FAKE_MC_STATE: statePath,
    FAKE_MC_LOG: logPath,
    MINIO_ROOT_USER: 'root',
    MINIO_ROOT_PASSWORD: rootPassword,
    HUB_ALIAS: 'hub',
    HUB_ENDPOINT: 'http://127.0.0.1:9000',
    HUB_REGION: region,
    HUB_BUCKETS: buckets.join(' '),
    HUB_NONCURRENT_EXPIRY_DAYS: '30',
    HUB_WRITERS: `lifeboat:${join(dir, 'policies/lifeboat.json')} velero:${join(dir, 'policies/velero.json')}`,
    HUB_SECRETS_DIR: join(dir, 'secrets'),
    HUB_STATE_DIR: join(dir, 'state'),
    HUB_WEBHOOK_ENDPOINT: 'http://lifeboat.lan:9465/hooks/s3',
    HUB_WEBHOOK_QUEUE_DIR: '/var/lib/minio/lifeboat-events',
    HUB_WEBHOOK_QUEUE_LIMIT: '100000',
    HUB_WEBHOOK_BUCKETS: 'postgres rgw etcd velero/backups/',
    HUB_WAIT_SECONDS: '2',
  };
  let logOffset = 0;
  return {
    env,
    mcPath: join(dir, 'bin/mc'),
    server: () => JSON.parse(readFileSync(statePath, 'utf8')) as ServerState,
    setServer: (change: (s: ServerState) => void) => {
      const s = JSON.parse(readFileSync(statePath, 'utf8')) as ServerState;
      change(s);
      writeFileSync(statePath, JSON.stringify(s));
    },
    /** Runs the script once; returns its result and the mc calls it made. */
    run(extraEnv: Record<string, string> = {}) {
      const result = spawnSync('bash', [script], { env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 30_000 });
      const log = readFileSync(logPath, 'utf8');
      const calls = log.slice(logOffset).split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]);
      logOffset = log.length;
      return { status: result.status, stdout: result.stdout, stderr: result.stderr, calls };
    },
  };
}

const joined = (calls: string[][]) => calls.map((c) => c.join(' '));
/** Calls that add or replace something a re-run must not repeat. */
const addingCalls = (calls: string[][]) =>
  joined(calls).filter((c) => /^(event add|admin policy create|admin policy attach|admin user add|admin config set|admin service restart)\b/.test(c) || (/^mb\b/.test(c) && !c.includes('--ignore-existing')));

describe('hub provisioning against a stand-in mc (nix/hub-provision.sh)', () => {
  it('three runs: the first provisions, the second and third add nothing, all exit 0 with the same end state', () => {
    const h = hub();
    const runs = [h.run()];
    const afterFirst = h.server();
    runs.push(h.run());
    const afterSecond = h.server();
    runs.push(h.run());
    const afterThird = h.server();

    for (const [i, r] of runs.entries()) expect(r.status, `run ${i + 1}: ${r.stderr}`).toBe(0);

    // The first run creates everything.
    const first = joined(runs[0]!.calls);
    for (const b of buckets) expect(first).toContain(`mb --ignore-existing hub/${b}`);
    expect(first.filter((c) => c.startsWith('admin policy create hub lifeboat-writer-'))).toHaveLength(2);
    expect(first.filter((c) => c.startsWith('admin user add hub '))).toHaveLength(2);
    expect(first).toContain('admin policy attach hub lifeboat-writer-velero --user velero');
    expect(first.filter((c) => c.startsWith('admin config set hub notify_webhook:lifeboat'))).toHaveLength(1);
    const eventAdds = runs[0]!.calls.filter((c) => c[0] === 'event' && c[1] === 'add');
    expect(eventAdds).toHaveLength(4);
    for (const add of eventAdds) {
      expect(add).toContain('--ignore-existing');
      expect(add[3]).toBe('arn:minio:sqs:us-east-1:lifeboat:webhook');
    }
    expect(eventAdds.find((c) => c[2] === 'hub/velero')).toEqual(expect.arrayContaining(['--prefix', 'backups/']));

    // The second and third add nothing: no duplicate event, user, policy, attachment, target or restart.
    for (const r of runs.slice(1)) {
      expect(addingCalls(r.calls)).toEqual([]);
      expect(r.stdout).toContain('the hub is provisioned');
    }
    expect(afterSecond).toEqual(afterFirst);
    expect(afterThird).toEqual(afterFirst);

    // The end state of every run: versioned buckets with the one lifecycle rule, users with their
    // policies, one put event per notifying bucket, the target loaded.
    for (const b of buckets) {
      expect(afterThird.buckets[b]!.versioning).toBe('Enabled');
      expect(afterThird.buckets[b]!.lifecycle!.Rules).toEqual([
        { ID: 'lifeboat-noncurrent-expiry', Status: 'Enabled', Filter: { Prefix: '' }, NoncurrentVersionExpiration: { NoncurrentDays: 30 }, Expiration: { ExpiredObjectDeleteMarker: true } },
      ]);
      expect(afterThird.buckets[b]!.events).toEqual([
        { arn: 'arn:minio:sqs:us-east-1:lifeboat:webhook', event: ['s3:ObjectCreated:*'], prefix: b === 'velero' ? 'backups/' : '', suffix: '' },
      ]);
    }
    for (const r of runs) for (const b of buckets) expect(joined(r.calls)).toContain(`ilm rule import hub/${b}`);
    expect(afterThird.users.lifeboat).toEqual({ secret: writerSecrets.lifeboat, policies: ['lifeboat-writer-lifeboat'], status: 'enabled' });
    expect(afterThird.users.velero!.policies).toEqual(['lifeboat-writer-velero']);
    expect(afterThird.policies['lifeboat-writer-velero']).toEqual(writerPolicy(['velero'], true));
    expect(afterThird.config['notify_webhook:lifeboat']).toEqual({
      endpoint: 'http://lifeboat.lan:9465/hooks/s3',
      queue_dir: '/var/lib/minio/lifeboat-events',
      queue_limit: '100000',
      auth_token: webhookToken,
    });
    expect(afterThird.activeTargets).toEqual(['lifeboat']);
    expect(afterThird.restarts).toBe(1);

    // Root credentials travel in mc's environment, never on its command line; nothing secret is printed.
    for (const r of runs) {
      expect(joined(r.calls).join('\n')).not.toContain(rootPassword);
      for (const secret of [rootPassword, webhookToken, ...Object.values(writerSecrets)]) expect(r.stdout + r.stderr).not.toContain(secret);
    }
  });

  it('the region MinIO is configured with is the ARN’s; an event listed under another region counts as present', () => {
    const h = hub('pi-hub');
    expect(h.run().status).toBe(0);
    expect(h.server().buckets.postgres!.events[0]!.arn).toBe('arn:minio:sqs:pi-hub:lifeboat:webhook');

    // Matching on `:lifeboat:webhook` in any region: no second event after a region change.
    h.setServer((s) => {
      for (const b of Object.values(s.buckets)) for (const e of b.events) e.arn = 'arn:minio:sqs:us-east-1:lifeboat:webhook';
    });
    const again = h.run();
    expect(again.status, again.stderr).toBe(0);
    expect(addingCalls(again.calls)).toEqual([]);
  });

  it('a changed writer secret or policy is written again, and only that', () => {
    const h = hub();
    expect(h.run().status).toBe(0);
    writeFileSync(join(h.env.HUB_SECRETS_DIR!, 'writer-velero'), 'a-rotated-velero-key');
    writeFileSync(h.env.HUB_WRITERS!.split(' ')[0]!.split(':')[1]!, JSON.stringify(writerPolicy(buckets, false)));
    const r = h.run();
    expect(r.status, r.stderr).toBe(0);
    expect(addingCalls(r.calls)).toEqual(['admin policy create hub lifeboat-writer-lifeboat ' + h.env.HUB_WRITERS!.split(' ')[0]!.split(':')[1], 'admin user add hub velero a-rotated-velero-key']);
    expect(h.server().users.velero).toEqual({ secret: 'a-rotated-velero-key', policies: ['lifeboat-writer-velero'], status: 'enabled' });
  });

  it('lifeboat serve down: everything but the webhook is provisioned, the run exits non-zero saying why; the retry completes it', () => {
    const h = hub();
    const down = h.run({ FAKE_MC_WEBHOOK_DOWN: '1' });
    expect(down.status).toBe(75);
    expect(down.stderr).toContain('MinIO refused the webhook target notify_webhook:lifeboat (endpoint http://lifeboat.lan:9465/hooks/s3)');
    expect(down.stderr).toContain('Restart=on-failure');
    expect(down.stderr).not.toContain(webhookToken);
    const partial = h.server();
    for (const b of buckets) {
      expect(partial.buckets[b]!.versioning).toBe('Enabled');
      expect(partial.buckets[b]!.lifecycle!.Rules).toHaveLength(1);
      expect(partial.buckets[b]!.events).toEqual([]);
    }
    expect(Object.keys(partial.users).sort()).toEqual(['lifeboat', 'velero']);
    expect(joined(down.calls).some((c) => c.startsWith('event add'))).toBe(false);

    // What systemd's Restart=on-failure does next, once serve answers.
    const retry = h.run();
    expect(retry.status, retry.stderr).toBe(0);
    expect(addingCalls(retry.calls)).toEqual([
      expect.stringMatching(/^admin config set hub notify_webhook:lifeboat endpoint=/),
      'admin service restart hub',
      ...buckets.map((b) => expect.stringMatching(new RegExp(`^event add hub/${b} arn:minio:sqs:us-east-1:lifeboat:webhook --event put --ignore-existing`))),
    ]);
    for (const b of buckets) expect(h.server().buckets[b]!.events).toHaveLength(1);
  });

  it('MinIO not answering: exits non-zero after HUB_WAIT_SECONDS with a clear message', () => {
    const h = hub();
    h.setServer((s) => {
      s.down = true;
    });
    const r = h.run({ HUB_WAIT_SECONDS: '1' });
    expect(r.status).toBe(75);
    expect(r.stderr).toContain('MinIO at http://127.0.0.1:9000 did not answer within 1 s');
  });

  it('the stand-in really rejects a repeated event add without --ignore-existing (what broke the old unit)', () => {
    const h = hub();
    expect(h.run().status).toBe(0);
    const env = { ...h.env };
    const mc = (args: string[]) => spawnSync(h.mcPath, args, { env: { ...env, MC_HOST_hub: `http://root:${encodeURIComponent(rootPassword)}@127.0.0.1:9000` }, encoding: 'utf8' });
    const repeated = mc(['event', 'add', 'hub/postgres', 'arn:minio:sqs:us-east-1:lifeboat:webhook', '--event', 'put']);
    expect(repeated.status).toBe(1);
    expect(repeated.stderr).toMatch(/overlapping/);
    // And the old guard, an exact-string match on a region-less ARN, never finds what MinIO lists.
    expect(mc(['event', 'ls', 'hub/postgres', 'arn:minio:sqs::lifeboat:webhook']).stdout).toBe('');
    expect(mc(['event', 'add', 'hub/postgres', 'arn:minio:sqs:us-east-1:lifeboat:webhook', '--event', 'put', '--ignore-existing']).status).toBe(0);
    expect(h.server().buckets.postgres!.events).toHaveLength(1);
  });
});

describe('hub.nix runs the provisioning script under systemd with retries (a stand-in mc covers the script)', () => {
  const text = readFileSync(hubNix, 'utf8');

  it('parses (nix-instantiate --parse)', () => {
    const result = spawnSync('nix-instantiate', ['--parse', hubNix], { encoding: 'utf8' });
    if (result.error) throw new Error(`nix-instantiate is not installed (${(result.error as NodeJS.ErrnoException).code}): install Debian's nix-bin`);
    expect(result.status, result.stderr).toBe(0);
  });

  it('runs ./hub-provision.sh, retries on failure without giving up, and passes the region and no secrets', () => {
    expect(text).toMatch(/ExecStart = "\$\{pkgs\.runtimeShell\} \$\{\.\/hub-provision\.sh\}"/);
    expect(text).toMatch(/Restart = "on-failure";/);
    expect(text).toMatch(/RestartSec = \d+;/);
    expect(text).toMatch(/StartLimitIntervalSec = 0;/);
    expect(text).toMatch(/HUB_REGION = config\.services\.minio\.region;/);
    // The old region-less ARN and the inline script are gone.
    expect(text).not.toContain('arn:minio:sqs::');
    expect(text).not.toMatch(/writeShellScript "lifeboat-hub-provision"/);
    // Every input the script reads is set (secrets excepted: LoadCredential files).
    const inputs = [...readFileSync(script, 'utf8').matchAll(/\$\{(HUB_[A-Z_]+)/g)].map((m) => m[1]!);
    const notFromNix = new Set(['HUB_SECRETS_DIR', 'HUB_STATE_DIR', 'HUB_WAIT_SECONDS', 'HUB_WEBHOOK_TOKEN_FILE']);
    for (const name of new Set(inputs)) if (!notFromNix.has(name)) expect(text, name).toContain(`${name} = `);
    expect(text).toMatch(/StateDirectory = "lifeboat-hub-provision";/);
    expect(text).toMatch(/LoadCredential =/);
  });

  it('writer policies include s3:ListMultipartUploadParts (velero-plugin-for-aws lists it)', () => {
    expect(text).toMatch(/Action = \[ "s3:PutObject" "s3:GetObject" "s3:AbortMultipartUpload" "s3:ListMultipartUploadParts" \]/);
  });
});
