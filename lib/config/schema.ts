import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { Secret, resolveSecretReference } from './secret.js';
import { recipientProblem } from '../crypto/recipients.js';

// "Required" reads better than "expected string, received undefined" in config errors.
z.config({
  customError: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? 'Required' : undefined),
});

function validCron(pattern: string): boolean {
  try {
    CronExpressionParser.parse(pattern, { tz: 'UTC' });
    return pattern.trim().split(/\s+/).length >= 5;
  } catch {
    return false;
  }
}

function validTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Builds the schema; `env` resolves ${env:NAME} references (tests pass their own). */
export function configSchema(env: NodeJS.ProcessEnv = process.env) {
  const secret = z.string().transform((reference, ctx): Secret => {
    try {
      return resolveSecretReference(reference, env);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

  const id = z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits or dashes');
  const bucket = z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)');
  const prefix = z
    .string()
    .default('')
    .refine((p) => p === '' || (p.endsWith('/') && !p.startsWith('/')), "must be empty or end with '/' (and not start with it)")
    .refine((p) => !p.startsWith('_lifeboat/'), 'must not start with _lifeboat/: that is where Lifeboat keeps its own records');
  const cron = z.string().refine(validCron, 'must be a cron pattern such as "0 2 * * *"');

  const redis = z.strictObject({
    url: z.string().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://').default('redis://127.0.0.1:6379'),
    password: secret.optional(),
    /** Key prefix for queues and metrics, so several installs can share one Redis. */
    prefix: z.string().min(1).default('lifeboat'),
  });

  const requestTimeouts = {
    /** Timeouts on every request (defaults as in lib/targets/s3.ts): a hung server fails fast instead of holding jobs. */
    connectTimeoutMs: z.int().min(100).default(10_000),
    /** No bytes for this long on an open request (the first byte included) aborts it. */
    idleTimeoutMs: z.int().min(100).default(30_000),
  };

  const s3Target = z.strictObject({
    kind: z.literal('s3'),
    endpoint: z.url({ protocol: /^https?$/ }),
    region: z.string().default('us-east-1'),
    forcePathStyle: z.boolean().default(true),
    accessKeyId: secret,
    secretAccessKey: secret,
    /** Multipart part size and parts in flight: upload buffers take exactly partSizeMiB × (queueSize + 1). */
    partSizeMiB: z.int().min(5).max(512).default(16),
    queueSize: z.int().min(1).max(16).default(2),
    /** The hub's disk size: S3 cannot tell free space, so capacity alerts need it (e.g. 1000000000000 for 1 TB). */
    capacityBytes: z.int().positive().optional(),
    /** `lifeboat hub init`: the lifecycle rule it puts on each bucket expires noncurrent versions after this many days. */
    noncurrentVersionExpiryDays: z.int().min(1).max(36500).default(30),
    ...requestTimeouts,
  });
  const dirTarget = z.strictObject({
    kind: z.literal('dir'),
    path: z.string().min(1),
    capacityBytes: z.int().positive().optional(),
  });

  const datasetTarget = z.strictObject({ name: z.string().min(1), bucket, prefix });
  const retention = z.strictObject({
    daily: z.int().min(1).default(14),
    weekly: z.int().min(0).default(0),
    monthly: z.int().min(0).default(0),
  });

  const postgresUrl = z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .refine((url) => {
      try {
        return new URL(url).password === '';
      } catch {
        return false;
      }
    }, 'must be a valid URL without a password; put the password in source.password as a ${env:NAME} or ${file:/path} reference');

  const postgresDirect = z.strictObject({
    mode: z.literal('direct'),
    url: postgresUrl,
    password: secret.optional(),
    /** Client binaries; must be at least the server's major version. */
    pgDumpall: z.string().default('pg_dumpall'),
    psql: z.string().default('psql'),
  });

  const kubeconfig = z.string().min(1).optional().describe('kubeconfig file; default: in-cluster config, else ~/.kube/config');

  const postgresKubernetes = z
    .strictObject({
      mode: z.literal('kubernetes'),
      kubeconfig,
      namespace: z.string().min(1),
      /** The server pod by name, or a label selector that picks the Ready primary. */
      pod: z.string().min(1).optional(),
      selector: z.string().min(1).optional(),
      container: z.string().min(1).default('postgresql'),
      /** How the tools connect from inside the pod. */
      host: z.string().default('127.0.0.1'),
      port: z.int().min(1).max(65535).default(5432),
      user: z.string().default('postgres'),
      /** Where the password comes from; it never crosses the API in a command line. */
      password: z
        .union([
          z.strictObject({ fromPodEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }),
          z.strictObject({ fromSecret: z.strictObject({ name: z.string().min(1), key: z.string().min(1).default('postgres-password') }) }),
        ])
        .optional(),
    })
    .superRefine((source, ctx) => {
      if ((source.pod === undefined) === (source.selector === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['pod'], message: 'set exactly one of pod or selector' });
      }
    });

  const drill = z.strictObject({
    enabled: z.boolean().default(true),
    schedule: cron.default('0 5 * * 0'),
    /** local: initdb in a temp dir here; kubernetes: a pod in a scratch namespace. */
    mode: z.enum(['local', 'kubernetes']).default('local'),
    /** initdb/pg_ctl location for local drills; default /usr/lib/postgresql/<major>/bin, else PATH. */
    binDir: z.string().optional(),
    /** How far a database's table count may drift from the dump-time figure, in percent. */
    tableTolerancePercent: z.number().min(0).max(100).default(0),
    assertions: z
      .array(z.strictObject({ name: z.string().optional(), database: z.string().min(1), sql: z.string().min(1), expect: z.string() }))
      .default([]),
    kubernetes: z
      .strictObject({
        kubeconfig,
        /** Default: postgres:<major of the dump's server>. */
        image: z.string().min(1).optional(),
        namespacePrefix: z.string().regex(/^[a-z0-9-]{1,40}$/).default('lifeboat-drill'),
        readyTimeoutSeconds: z.int().min(1).default(300),
      })
      .prefault({}),
  });

  /**
   * Encryption at rest with age: public keys only. The identity (private key) is read only where
   * something decrypts (drill, restore, the scrub's deep check, rekey), so the dump worker need not hold it.
   */
  const encryption = z.strictObject({
    recipients: z
      .array(
        z.string().superRefine((recipient, ctx) => {
          const problem = recipientProblem(recipient);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }),
      )
      .min(1, 'list at least one age recipient (age1…); `age-keygen -y <identity file>` prints it'),
    /** Where the identity is: a ${file:/path} or ${env:NAME} reference, or an absolute path. Resolved when needed, not at load. */
    identityFile: z
      .string()
      .refine((ref) => ref.startsWith('/') || /^\$\{(env|file):[^}]+\}$/.test(ref), 'must be an absolute path, or a ${file:/path} or ${env:NAME} reference')
      .optional(),
  });

  /**
   * A second copy of each verified backup on another target (a dir on another disk, a cloud bucket).
   * Its retention defaults to the dataset's own.
   */
  const replica = z.strictObject({
    /** How metrics, `backups ls` and `restore --from` name it; default: the target's name. */
    name: id.optional(),
    target: id,
    bucket,
    prefix,
    retention: retention.optional(),
  });
  const replicas = z.array(replica).default([]);

  /** BackupStale fires this long after the last success. */
  const staleAfterHours = z.number().positive().default(26);

  const postgresDataset = z.strictObject({
    id,
    kind: z.literal('postgres'),
    staleAfterHours,
    source: z.discriminatedUnion('mode', [postgresDirect, postgresKubernetes]),
    target: datasetTarget,
    schedule: cron.optional(),
    compression: z.enum(['gzip', 'none']).default('gzip'),
    /** gzip level: 1 is fastest, 9 smallest. */
    compressionLevel: z.int().min(1).max(9).default(6),
    encryption: encryption.optional(),
    replicas,
    retention: retention.prefault({}),
    drill: drill.prefault({}),
  });

  const bucketDataset = z.strictObject({
    id,
    kind: z.literal('bucket'),
    staleAfterHours,
    /** Per object: each object is stored age-encrypted under its own key, marked in its metadata. */
    encryption: encryption.optional(),
    /** How many mirror reports to keep (the mirrored objects themselves follow the source). */
    retention: retention.prefault({}),
    /** The bucket to mirror (e.g. Ceph RGW in the cluster), with its own read-only credentials. */
    source: z.strictObject({
      endpoint: z.url({ protocol: /^https?$/ }),
      region: z.string().default('us-east-1'),
      forcePathStyle: z.boolean().default(true),
      bucket,
      prefix,
      accessKeyId: secret,
      secretAccessKey: secret,
      // The cluster's RGW can hang as well as the hub.
      ...requestTimeouts,
    }),
    /** Objects land at <target.prefix><source key>; reports under _lifeboat/mirrors/<id>/, outside the mirror. */
    target: datasetTarget.extend({
      prefix: prefix.refine((p) => p !== '', 'a mirror needs a prefix of its own in the hub bucket (for example photos/): Lifeboat keeps its records under _lifeboat/ at the bucket root, outside every mirror'),
    }),
    schedule: cron.optional(),
    mirror: z
      .strictObject({
        /** keep: extraneous destination objects stay (the default); delete: they are removed (hub versioning keeps history). */
        deletion: z.enum(['keep', 'delete']).default('keep'),
        /**
         * With deletion: delete, a run that would delete more than this share of the destination deletes
         * nothing and fails: a wrong bucket or a wiped source must not empty the hub copy.
         */
        maxDeletePercent: z.number().min(0).max(100).default(20),
        /** Objects above this size are copied in parts. */
        multipartThresholdMiB: z.int().min(5).max(5 * 1024).default(64),
        partSizeMiB: z.int().min(5).max(512).default(16),
        /**
         * Objects copied at once, at most: small objects go this many at a time, large ones as many as
         * maxInFlightMiB allows (a multipart copy counts its parts in flight, 4 × partSizeMiB).
         */
        concurrency: z.int().min(1).max(64).default(32),
        /** The bytes the copies in flight carry together, at most (one copy always runs, whatever its size). */
        maxInFlightMiB: z.int().min(1).max(16 * 1024).default(256),
        /** Objects re-read on both sides and compared by sha256 after each run. */
        sample: z.int().min(0).max(10_000).default(20),
      })
      .prefault({}),
    /** The restore drill: sampled objects are copied from the hub into a scratch prefix and compared with the source. */
    drill: z
      .strictObject({
        enabled: z.boolean().default(true),
        schedule: cron.default('0 5 * * 0'),
        /** Objects restored and compared per drill (plus the largest one). */
        sample: z.int().min(0).max(10_000).default(50),
      })
      .prefault({}),
  });

  const etcdDataset = z.strictObject({
    id,
    kind: z.literal('etcd'),
    staleAfterHours,
    retention: retention.prefault({}),
    encryption: encryption.optional(),
    replicas,
    source: z
      .strictObject({
        /** Where k3s writes its snapshots; run the worker that consumes uploadEtcd on that node. */
        snapshotDir: z.string().min(1).default('/var/lib/rancher/k3s/server/db/snapshots'),
        /** The k3s server token: a restore onto a new host needs it. Uploaded only with uploadToken. */
        tokenFile: z.string().min(1).default('/var/lib/rancher/k3s/server/token'),
        uploadToken: z.boolean().default(false),
        /** Compare with the ETCDSnapshotFile resources k3s keeps, and report snapshots found in neither place. */
        listSnapshotFiles: z.boolean().default(false),
        /** k3s compresses a snapshot straight into its final .zip path; one younger than this may be half-written. */
        settleSeconds: z.int().min(0).default(120),
        kubeconfig,
      })
      .prefault({}),
    target: datasetTarget,
    /** How often to look for new snapshots (k3s takes them on its own schedule). */
    schedule: cron.default('*/15 * * * *'),
    /** The restore drill: the newest snapshot is restored into a temp dir with etcdutl (else etcdctl); nothing is started. */
    drill: z
      .strictObject({
        enabled: z.boolean().default(true),
        schedule: cron.default('0 5 * * 0'),
        /** etcdutl binary (etcd 3.5+); default: etcdutl on PATH. */
        etcdutl: z.string().min(1).optional(),
        /** etcdctl binary, used when there is no etcdutl; default: etcdctl on PATH. */
        etcdctl: z.string().min(1).optional(),
      })
      .prefault({}),
  });

  /** Velero writes to the hub itself; Lifeboat verifies what arrives (bucket notifications) and tracks freshness. */
  const veleroDataset = z.strictObject({
    id,
    kind: z.literal('velero'),
    staleAfterHours,
    target: datasetTarget,
    /**
     * drillRestore: a Velero Restore of the newest Completed backup into scratch namespaces, checked and
     * deleted. enabled defaults to true only when drill.kubernetes is set: without it there is no cluster to restore into.
     */
    drill: z
      .strictObject({
        enabled: z.boolean().optional(),
        schedule: cron.default('0 5 * * 0'),
        kubernetes: z
          .strictObject({
            kubeconfig,
            veleroNamespace: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a namespace name').default('velero'),
            /** Source namespaces to restore; default: the backup's spec.includedNamespaces when it lists explicit ones. */
            namespaces: z
              .array(z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a namespace name (1-63 lowercase letters, digits or dashes)'))
              .min(1)
              .refine((names) => new Set(names).size === names.length, 'must not list a namespace twice')
              .optional(),
            /** Scratch namespaces are <scratchPrefix>-<hash>-<source namespace>, cut to 63 characters. */
            scratchPrefix: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'must be 1-40 lowercase letters, digits or dashes, starting and ending with a letter or digit').default('lifeboat-drill'),
            /** How long the restore may take before the attempt fails (retryably). */
            timeoutSeconds: z.int().min(1).default(1800),
          })
          .optional(),
      })
      .superRefine((drill, ctx) => {
        if (drill.enabled && !drill.kubernetes) ctx.addIssue({ code: 'custom', path: ['kubernetes'], message: 'required when drill.enabled is true: the drill restores through the cluster API' });
      })
      .transform(({ enabled, ...drill }) => ({ ...drill, enabled: enabled ?? drill.kubernetes !== undefined }))
      .prefault({}),
  });

  const dataset = z.discriminatedUnion('kind', [postgresDataset, bucketDataset, etcdDataset, veleroDataset]);

  /** Letters, digits and . _ @ -: no ':' (basic auth splits on it) and no '|' (the session cookie's separator). */
  const userName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/, 'must be 1-64 letters, digits or . _ @ - (starting with a letter or digit)');
  const uiUser = z.strictObject({
    name: userName,
    password: secret,
    /** viewer: read everything; operator: also the actions (run, retry, restore) and Bull Board's buttons. */
    role: z.enum(['viewer', 'operator']),
  });
  const ui = z.strictObject({
    /** Who may use the web UI, /api and Bull Board. Required unless server.host is loopback. */
    users: z.array(uiUser).default([]),
    /** Signs the session cookies; without it a random per-process key (sessions end when serve restarts). */
    sessionSecret: secret.refine((s) => s.reveal().length >= 32, 'must be at least 32 characters').optional(),
    sessionHours: z.number().positive().max(24 * 30).default(12),
    /** The only places the UI's restore action may write (restoreBackup): a PostgreSQL server, or a bucket on an s3 target. */
    restoreTargets: z
      .record(
        id,
        z.discriminatedUnion('kind', [
          z.strictObject({ kind: z.literal('postgres'), url: postgresUrl, password: secret.optional() }),
          z.strictObject({ kind: z.literal('s3'), target: id, bucket }),
        ]),
      )
      .optional(),
  });

  const server = z.strictObject({
    host: z.string().default('127.0.0.1'),
    port: z.int().min(0).max(65535).default(9465),
    /** Time zone for every cron schedule. */
    timezone: z.string().refine(validTimezone, 'must be an IANA time zone such as "UTC" or "Europe/Berlin"').default('UTC'),
    /** Login for the web UI, /api and Bull Board (/queues). */
    ui: ui.prefault({}),
    /**
     * Deprecated: one basic-auth user for Bull Board. Kept as an alias: it becomes an operator in
     * server.ui.users (so it can log in to the UI too).
     */
    board: z.strictObject({ username: userName, password: secret }).optional(),
    /** How long a stopping worker lets running jobs finish before aborting them. */
    shutdownGraceMs: z.int().min(0).default(30_000),
    /** The S3 server's bucket notifications (MinIO webhook target, or an RGW/SNS push endpoint). */
    webhook: z
      .strictObject({
        enabled: z.boolean().default(true),
        path: z.string().regex(/^\/[A-Za-z0-9/_-]*$/, 'must be a URL path such as /hooks/s3').default('/hooks/s3'),
        /** Expected as "Authorization: Bearer <token>"; required unless server.host is loopback. */
        token: secret.optional(),
        maxBodyBytes: z.int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
      })
      .prefault({}),
  }).transform(({ board, ...server }) => ({
    ...server,
    // server.board folds into the users: one auth for the UI, /api and Bull Board.
    ui: { ...server.ui, users: board ? [...server.ui.users, { name: board.username, password: board.password, role: 'operator' as const }] : server.ui.users },
  }));

  const prune = z.strictObject({
    /** pruneCheck: retention, freshness, capacity and orphaned uploads, once a day. */
    schedule: cron.default('30 5 * * *'),
    /** Incomplete multipart uploads older than this are aborted. */
    abortUploadsAfterHours: z.number().positive().default(24),
  });

  const verify = z.strictObject({
    /** Re-reads stored backups on a schedule: rot and overwrites after the first verification are found. */
    scrub: z
      .strictObject({
        enabled: z.boolean().default(true),
        schedule: cron.default('0 6 * * *'),
        /** Every retained backup is re-read at least this often. */
        everyDays: z.number().positive().max(3650).default(30),
        /** Bytes one scrub run may read (default: no limit); what is left is first next time. */
        maxBytesPerRun: z.int().positive().optional(),
      })
      .prefault({}),
  });

  /**
   * How fast a job whose worker died (kill -9, a lost node) runs again elsewhere: its lock expires after
   * lockDurationMs (renewed at half of it while the worker lives), and stalled jobs are looked for every
   * stalledIntervalMs. A job that stalls more than maxStalledCount times fails for good (and is counted).
   */
  const worker = z.strictObject({
    lockDurationMs: z.int().min(1000).max(3600_000).default(30_000),
    stalledIntervalMs: z.int().min(500).max(3600_000).default(30_000),
    maxStalledCount: z.int().min(0).max(100).default(1),
  });

  /** replicateBackup's catch-up: copies whatever is verified on a primary and missing on a replica. */
  const replication = z.strictObject({
    schedule: cron.default('20 * * * *'),
  });

  return z.strictObject({
    redis: redis.prefault({}),
    replication: replication.prefault({}),
    worker: worker.prefault({}),
    prune: prune.prefault({}),
    verify: verify.prefault({}),
    targets: z.record(id, z.discriminatedUnion('kind', [s3Target, dirTarget])),
    datasets: z.array(dataset).default([]),
    server: server.prefault({}),
  });
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Checks between sections (dataset → target, unique ids). Runs on the raw input, so they are reported
 * together with field errors instead of only after every field is fixed.
 */
export function crossReferenceIssues(raw: unknown): string[] {
  const issues: string[] = [];
  const root = (raw ?? {}) as { targets?: unknown; datasets?: unknown; server?: { host?: unknown; webhook?: { enabled?: unknown; token?: unknown }; board?: unknown; ui?: unknown } };
  const host = typeof root.server?.host === 'string' ? root.server.host : '127.0.0.1';
  const webhook = root.server?.webhook;
  if (webhook?.enabled !== false && webhook?.token === undefined && !isLoopback(host)) {
    issues.push(`server.webhook.token: required when server.host (${host}) is not a loopback address; anyone who can reach the webhook could queue jobs`);
  }
  const targets = root.targets && typeof root.targets === 'object' ? Object.keys(root.targets) : [];
  issues.push(...uiIssues(root.server, host, (root.targets ?? {}) as Record<string, { kind?: unknown } | undefined>));
  if (!Array.isArray(root.datasets)) return issues;
  const seen = new Map<string, number>();
  root.datasets.forEach((dataset: unknown, index) => {
    const d = (dataset ?? {}) as { id?: unknown; target?: { name?: unknown } };
    if (typeof d.id === 'string') {
      const first = seen.get(d.id);
      if (first !== undefined) issues.push(`datasets[${index}].id: duplicate dataset id "${d.id}" (also datasets[${first}])`);
      else seen.set(d.id, index);
    }
    const name = d.target?.name;
    if (typeof name === 'string' && !targets.includes(name)) {
      issues.push(`datasets[${index}].target.name: unknown target "${name}" (known: ${targets.join(', ') || 'none'})`);
    }
    const replicas = (dataset as { replicas?: unknown })?.replicas;
    if (Array.isArray(replicas)) {
      const names = new Map<string, number>();
      replicas.forEach((replica: unknown, r) => {
        const { target, name: replicaName } = (replica ?? {}) as { target?: unknown; name?: unknown };
        if (typeof target === 'string' && !targets.includes(target)) issues.push(`datasets[${index}].replicas[${r}].target: unknown target "${target}" (known: ${targets.join(', ') || 'none'})`);
        // A "copy" inside the primary's own folders is no second copy, and its listing would mix with the primary's.
        const own = (dataset as { target?: { name?: unknown; bucket?: unknown; prefix?: unknown } }).target;
        const { bucket: rBucket, prefix: rPrefix = '' } = (replica ?? {}) as { bucket?: unknown; prefix?: unknown };
        const ownPrefix = typeof own?.prefix === 'string' ? own.prefix : '';
        if (target === own?.name && rBucket === own?.bucket && typeof rPrefix === 'string' && (rPrefix.startsWith(ownPrefix) || ownPrefix.startsWith(rPrefix))) {
          issues.push(`datasets[${index}].replicas[${r}]: prefix "${rPrefix}" in target ${target} bucket ${String(rBucket)} overlaps the dataset's own (prefix "${ownPrefix}"); a replica needs another target, bucket or a prefix apart from the primary's`);
        }
        const called = typeof replicaName === 'string' ? replicaName : target;
        if (typeof called !== 'string') return;
        const first = names.get(called);
        if (first !== undefined) issues.push(`datasets[${index}].replicas[${r}]: a second replica named "${called}" (also replicas[${first}]); give one a name of its own`);
        else names.set(called, r);
      });
    }
    const kind = (dataset as { kind?: unknown })?.kind;
    const targetKind = typeof name === 'string' ? ((root.targets as Record<string, { kind?: unknown }> | undefined)?.[name]?.kind) : undefined;
    if (kind === 'bucket' && targetKind !== undefined && targetKind !== 's3') {
      issues.push(`datasets[${index}].target.name: a bucket mirror needs an s3 target ("${name}" is ${String(targetKind)})`);
    }
  });
  // Nested prefixes in one bucket mix two datasets' objects: a notification, a listing or a mirror's
  // deletion for one would reach the other's.
  const places = root.datasets.flatMap((dataset: unknown, index) => {
    const d = (dataset ?? {}) as { id?: unknown; target?: { name?: unknown; bucket?: unknown; prefix?: unknown } };
    const { name, bucket, prefix = '' } = d.target ?? {};
    if (typeof name !== 'string' || typeof bucket !== 'string' || typeof prefix !== 'string') return [];
    return [{ index, id: typeof d.id === 'string' ? d.id : '', name, bucket, prefix }];
  });
  places.forEach((later, j) => {
    for (const earlier of places.slice(0, j)) {
      if (earlier.name !== later.name || earlier.bucket !== later.bucket) continue;
      if (!earlier.prefix.startsWith(later.prefix) && !later.prefix.startsWith(earlier.prefix)) continue;
      issues.push(
        `datasets[${later.index}].target.prefix: "${later.prefix}" (dataset "${later.id}") overlaps dataset "${earlier.id}" (datasets[${earlier.index}], prefix "${earlier.prefix}") in target ${later.name} bucket ${later.bucket}; give each dataset its own bucket or a prefix that is not a prefix of another's`,
      );
    }
  });
  return issues;
}

/** server.ui (and the deprecated server.board): unique user names, known restore targets, and no open UI off loopback. */
function uiIssues(server: { ui?: unknown; board?: unknown } | undefined, host: string, targets: Record<string, { kind?: unknown } | undefined>): string[] {
  const issues: string[] = [];
  const ui = (server?.ui ?? {}) as { users?: unknown; restoreTargets?: unknown };
  const users = Array.isArray(ui.users) ? (ui.users as unknown[]) : [];
  const board = (server?.board ?? undefined) as { username?: unknown } | undefined;
  const seen = new Map<string, number>();
  users.forEach((user, index) => {
    const name = (user as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') return;
    const first = seen.get(name);
    if (first !== undefined) issues.push(`server.ui.users[${index}].name: duplicate user name "${name}" (also server.ui.users[${first}])`);
    else seen.set(name, index);
  });
  if (typeof board?.username === 'string' && seen.has(board.username)) {
    issues.push(`server.board.username: "${board.username}" is also server.ui.users[${seen.get(board.username)}]; server.board is a deprecated alias for one operator: keep the user in server.ui.users only`);
  }
  if (users.length === 0 && board === undefined && !isLoopback(host)) {
    issues.push(
      `server.ui.users: required when server.host (${host}) is not a loopback address; without users the web UI, /api and Bull Board (/queues) are open to anyone who can reach it (server.board, deprecated, counts as one operator)`,
    );
  }
  const restoreTargets = ui.restoreTargets && typeof ui.restoreTargets === 'object' ? Object.entries(ui.restoreTargets as Record<string, unknown>) : [];
  const known = Object.keys(targets);
  for (const [name, restore] of restoreTargets) {
    const r = (restore ?? {}) as { kind?: unknown; target?: unknown };
    if (r.kind !== 's3' || typeof r.target !== 'string') continue;
    const kind = targets[r.target]?.kind;
    if (!known.includes(r.target)) issues.push(`server.ui.restoreTargets.${name}.target: unknown target "${r.target}" (known: ${known.join(', ') || 'none'})`);
    else if (kind !== undefined && kind !== 's3') issues.push(`server.ui.restoreTargets.${name}.target: an s3 restore target needs an s3 target ("${r.target}" is ${String(kind)})`);
  }
  return issues;
}

export type Config = z.output<ReturnType<typeof configSchema>>;
export type Dataset = Config['datasets'][number];
export type PostgresDataset = Extract<Dataset, { kind: 'postgres' }>;
export type BucketDataset = Extract<Dataset, { kind: 'bucket' }>;
export type EtcdDataset = Extract<Dataset, { kind: 'etcd' }>;
export type VeleroDataset = Extract<Dataset, { kind: 'velero' }>;
export type TargetConfig = Config['targets'][string];
export type S3TargetConfig = Extract<TargetConfig, { kind: 's3' }>;
export type DirTargetConfig = Extract<TargetConfig, { kind: 'dir' }>;
