#!/usr/bin/env -S node --max-semi-space-size=2
import { Argument, Command, CommanderError, Option } from 'commander';
import type { Logger } from 'pino';
import { INLINE_RETRIES } from '../../queue/inline.js';
import { errorMessage } from '../../queue/errors.js';
import { ConfigError } from '../config/errors.js';
import type { LoadedConfig } from '../config/load.js';
import { plural } from '../text.js';
import { createLogger, LOG_FORMATS, LOG_LEVELS, setLogDefaults, type LogFormat } from '../plumbing/logger.js';
import { apiStatuses } from '../api/schemas.js';
import { CliError, EXIT, MAX_ATTEMPTS, parseAttempts, parseConcurrency, parseIsoDateTime, parsePositiveSeconds, parseSince, parseTargetDatabase, parseVerifyWhen, VERIFY_HELP } from './exit.js';
import { STATUS_REDIS_TIMEOUT_MS, STATUS_TARGETS_TIMEOUT_MS } from './statusLimits.js';
import type { BackupsLsOptions } from './backupsLs.js';
import type { RestoreCliOptions } from './restore.js';
import type { RunOptions } from './run.js';

// Startup cost: only what parsing the command line and --help need is imported here. Each action
// imports its command's module (and with it the Kubernetes client, the S3 SDK, bullmq, Fastify...)
// when it runs, so a command pays only for what it uses.

const program = new Command('lifeboat')
  .description('Backups for homelab and small clusters: Postgres, buckets and etcd to an S3 hub, each copy verified.')
  .option('-c, --config <file>', 'config file (default: $LIFEBOAT_CONFIG, else ./lifeboat.yaml, else embedded defaults)')
  .addOption(new Option('--log-format <format>', 'logs on stderr: pretty (the default on a terminal) or json (otherwise)').choices(LOG_FORMATS))
  .addOption(new Option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent (default: $LOG_LEVEL, else info; some commands are quieter)').choices(LOG_LEVELS))
  .showHelpAfterError()
  .exitOverride()
  .hook('preAction', () => {
    const { logFormat, logLevel } = program.opts<{ logFormat?: LogFormat; logLevel?: string }>();
    setLogDefaults({ format: logFormat, level: logLevel });
  });

async function config(): Promise<LoadedConfig> {
  const { loadConfig } = await import('../config/load.js');
  return loadConfig({ file: program.opts<{ config?: string }>().config });
}

function logger(): Logger {
  return createLogger();
}

/** First SIGTERM/SIGINT: drain gracefully. Second: abort running jobs now. */
function onSignals(stop: (force: boolean) => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    process.stderr.write(`lifeboat: ${signal}: ${stopping ? 'aborting running jobs' : 'draining; send again to abort running jobs'}\n`);
    const force = stopping;
    stopping = true;
    void stop(force).then(
      () => process.exit(EXIT.ok),
      (err: unknown) => {
        process.stderr.write(`lifeboat: shutdown failed: ${errorMessage(err)}\n`);
        process.exit(EXIT.failed);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}


const configCmd = program.command('config').description('work with the config file');
configCmd
  .command('check')
  .description('validate the config; print every problem by its path')
  .action(async () => {
    const { config: cfg, source } = await config();
    process.stdout.write(`${source}: ok (${plural(Object.keys(cfg.targets).length, 'target')}, ${plural(cfg.datasets.length, 'dataset')}: ${cfg.datasets.map((d) => `${d.id} [${d.kind}]`).join(', ') || 'none'})\n`);
  });

program
  .command('check')
  .description('a doctor for this deployment: config, Redis, each target and bucket (exists, versioning, put/get/list/delete), Postgres and pg_dumpall, etcd snapshots, Kubernetes permissions; exit 1 on any fail')
  .option('--json', 'print a JSON array of {check, result, detail, fix?}')
  .option('--component <name>', 'only the Kubernetes permissions of this component: worker, etcd or serve (run check in its pod)')
  .action(async (opts: { json?: boolean; component?: string }) => {
    const { checkCommand } = await import('./check.js');
    process.exitCode = await checkCommand(config, createLogger({ level: process.env.LOG_LEVEL ?? 'fatal' }), opts);
  });

program
  .command('status')
  .description('one screen from the targets (and Redis when it answers): each dataset\'s newest backup, status, size, last drill, staleness and next run; each target\'s use, capacity and days until full; jobs failed in the last 24 h; the alerts that would fire')
  .option('--json', 'print one JSON object {generatedAt, datasets, targets, failedJobs, alerts, redis, ok} in the web API\'s shapes')
  .addHelpText('after', `
Exit codes: 0 all is well; 1 anything stale, corrupt or failing (any alert, a stale dataset, a job that
failed for good in the last 24 h, a target that could not be read); 2 a bad config. Redis being down is
said in one line and fails nothing by itself: the targets are read all the same.

As a cron job or a healthcheck (bounded: Redis ${STATUS_REDIS_TIMEOUT_MS / 1000} s, the targets ${STATUS_TARGETS_TIMEOUT_MS / 1000} s):
  crontab:      0 * * * *  lifeboat status -c /etc/lifeboat/lifeboat.yaml >/dev/null || <alert someone>
  healthcheck:  lifeboat status --json  (the exit code is the verdict, the JSON the details)`)
  .action(async (opts: { json?: boolean }) => {
    const loaded = await config();
    const { statusCommand } = await import('./status.js');
    process.exitCode = await statusCommand(loaded, createLogger({ level: process.env.LOG_LEVEL ?? 'fatal' }), opts);
  });

const hubCmd = program.command('hub').description('prepare the S3 hub (or dir target) the datasets write to');
hubCmd
  .command('init')
  .description("create each dataset's bucket, turn versioning on, and set the lifecycle rules (noncurrent versions expire, incomplete uploads are aborted); other lifecycle rules are kept; a second run changes nothing")
  .option('--dry-run', 'print what would change, change nothing')
  .option('--json', 'print a JSON array, one object per bucket')
  .action(async (opts: { dryRun?: boolean; json?: boolean }) => {
    const { config: cfg } = await config();
    const { hubInitCommand } = await import('./hubInit.js');
    process.exitCode = await hubInitCommand(cfg, opts);
  });

// The function names in the help of worker and run come from the functions, which load nearly
// everything (the Kubernetes client among them): see describeFunctions.
const functionsOption = new Option('--functions <names>');
const functionArgument = new Argument('<function>');

program
  .command('worker')
  .description('consume the queues of the named functions (default: all); reloads the config on SIGHUP or when its file changes, letting running jobs finish')
  .addOption(functionsOption)
  .action(async (opts: { functions?: string }) => {
    const names = opts.functions?.split(',').map((s) => s.trim()).filter(Boolean);
    const { workerCommand } = await import('./worker.js');
    await workerCommand(config, logger(), onSignals, names);
  });

program
  .command('serve')
  .description('metrics, Bull Board and the job schedulers from the config; reloads the config on SIGHUP or when its file changes')
  .action(async () => {
    const { serveCommand } = await import('./serve.js');
    await serveCommand(config, logger(), onSignals);
  });

const RETRIES_HELP = `attempts in all, 1-${MAX_ATTEMPTS} (default ${INLINE_RETRIES.attempts}, ${INLINE_RETRIES.backoffMs / 1000} s apart)`;

program
  .command('run')
  .description('enqueue one job (or run it inline, without Redis); the same tick twice is one job')
  .addArgument(functionArgument)
  .option('--dataset <id>', 'dataset id from the config (pruneCheck: default all)')
  .option('--tick <iso-time>', 'the tick the run belongs to, e.g. 2026-11-26T02:00:00Z; the same tick is the same job and overwrites the same keys (default: now)', parseIsoDateTime)
  .option('--wait', 'wait for the job and print its result')
  .option('--inline', 'run in this process, with its fan-out, without Redis')
  .option('--retries <n>', `with --inline: ${RETRIES_HELP}`, parseAttempts)
  .option('--backup <id>', 'verifyObject: a backup id, latest or all; drillRestore: the backup to drill')
  .option('--dry-run', 'for functions that support it (mirrorBucket, pruneCheck): print the plan, change nothing')
  .option('--force-delete', 'mirrorBucket with --inline: delete even past the deletion guard (mirror.maxDeletePercent, an empty source)')
  .addOption(new Option('--timeout <seconds>', 'with --wait: give up after this long').default(3600).argParser(parsePositiveSeconds))
  .option('--json', 'print results as JSON lines (the default when stdout is not a terminal)')
  .action(async (fnName: string, opts: RunOptions) => {
    const { runCommand } = await import('./run.js');
    await runCommand(fnName, opts, config, logger, onSignals);
  });

const backupsCmd = program.command('backups').description('the backup catalog, read from the target alone');
backupsCmd
  .command('ls')
  .description('list backups: age, size (a mirror: the bytes and objects it mirrored), verification with the last scrub, the last drill; read from the target alone (needs no Redis)')
  .option('--dataset <id>', 'only this dataset')
  .option('--since <when>', 'only backups finished since then: a span back from now (36h, 7d, 2w) or an ISO date-time (2026-11-01T00:00:00Z)', (v: string) => parseSince(v))
  .addOption(new Option('--status <status>', 'only backups with this status').choices(apiStatuses))
  .option('--json', 'one JSON object per line: the web API\'s backup shape plus the dataset')
  .action(async (opts: BackupsLsOptions) => {
    const loaded = await config();
    const { backupsLsCommand } = await import('./backupsLs.js');
    await backupsLsCommand(loaded, logger(), opts);
  });

program
  .command('restore')
  .description('restore a backup from the target alone (no Redis, no cluster): postgres into a server, all of it or one database; a bucket mirror into a bucket; etcd into a directory')
  .argument('<dataset>', 'dataset id from the config')
  .option('--backup <id>', 'backup id (see backups ls), or latest', 'latest')
  .option('--to <postgres-url>', 'destination server, e.g. postgres://postgres@localhost:5432/postgres (password from PGPASSWORD, or in the URL: it never reaches a command line); required except with --list')
  .option('--database <name>', 'restore only this database out of the backup, cut from the stream')
  .option('--as <name>', 'with --database: restore it under this name', parseTargetDatabase)
  .option('--roles', 'with --database: create the backup\'s roles that the destination lacks (existing roles are never altered)')
  .option('--list', 'print the databases in the backup with their table counts, and exit (no --to needed)')
  .option('--dry-run', 'with --database: print what would be restored and which roles created; a bucket dataset: what would be copied (and a bucket created); change nothing')
  .option('--force', 'restore even if the destination already has the dump\'s databases (or the --database target), or the backup failed verification')
  .option('--to-dir <dir>', 'etcd datasets: write the snapshot (and the server token, mode 0600) into this directory, and print the k3s commands')
  .option('--to-target <name>', 'bucket datasets: restore into this s3 target of the config (with --to-bucket)')
  .option('--to-bucket <bucket>', 'bucket datasets: the destination bucket, created if missing')
  .option('--to-source', 'bucket datasets: restore into the dataset\'s own source endpoint (its bucket, unless --to-bucket)')
  .option('--to-prefix <prefix>', 'bucket datasets: put the objects under this prefix at the destination (default: the source\'s prefix with --to-source, else none)')
  .option('--prefix <prefix>', 'bucket datasets: restore only the mirror\'s keys under this prefix')
  .option('--at <iso-time>', 'bucket datasets: the mirror as it was at this time (a versioned hub): undoes a bad deletion run', parseIsoDateTime)
  .option('--overwrite', 'bucket datasets: also replace destination objects that are newer than the hub\'s copy')
  .option('--concurrency <n>', 'bucket datasets: objects copied at once, 1-64 (default 32)', parseConcurrency)
  .option('--from <replica>', 'read the backup from this replica of the dataset (replicas[].name, default its target) instead of its target: for when the hub is gone')
  .option('--identity <file>', 'an encrypted backup: the age identity file to decrypt with (default: the dataset\'s encryption.identityFile)')
  .option('--verify <when>', VERIFY_HELP, parseVerifyWhen)
  .option('--json', 'print the result as one JSON object')
  .option('--retries <n>', `for reading the backup and reaching the destination: ${RETRIES_HELP}`, parseAttempts)
  .action(async (dataset: string, opts: Omit<RestoreCliOptions, 'dataset'>) => {
    const { config: cfg } = await config();
    const { restoreByKind } = await import('./restore.js');
    process.exitCode = await restoreByKind(cfg, opts.json ? createLogger({ level: process.env.LOG_LEVEL ?? 'fatal' }) : logger(), { dataset, ...opts });
  });

program
  .command('verify')
  .description('re-read backups now, check them against their manifests, record the result and print a table (inline, no Redis)')
  .argument('<dataset>', 'dataset id from the config')
  .option('--backup <id>', 'backup id, latest or all', 'latest')
  .option('--json', 'one JSON object per backup')
  .option('--retries <n>', RETRIES_HELP, parseAttempts)
  .action(async (dataset: string, opts: { backup: string; json?: boolean; retries?: number }) => {
    const { config: cfg } = await config();
    const { verifyCommand } = await import('./verify.js');
    // The table is the output; the job's own log lines would only repeat it.
    process.exitCode = await verifyCommand(cfg, createLogger({ level: process.env.LOG_LEVEL ?? 'fatal' }), { dataset, ...opts });
  });

program
  .command('drill')
  .description('restore drill, inline, no Redis: postgres into a throwaway server, a bucket sample into a scratch prefix, an etcd snapshot into a temp dir, a Velero backup into scratch namespaces; prints the checks')
  .argument('<dataset>', 'dataset id from the config')
  .option('--backup <id>', 'backup id, or a Velero backup name (default: the newest drillable)')
  .option('--json', 'print the drill record as JSON')
  .option('--retries <n>', RETRIES_HELP, parseAttempts)
  .action(async (dataset: string, opts: { backup?: string; retries?: number; json?: boolean }) => {
    const { config: cfg } = await config();
    const { drillCommand } = await import('./drill.js');
    process.exitCode = await drillCommand(cfg, createLogger({ level: process.env.LOG_LEVEL ?? 'fatal' }), { dataset, ...opts });
  });

program
  .command('rekey')
  .description("re-encrypt a dataset's retained backups to its current encryption.recipients (inline, no Redis): per backup decrypt with the old identity, re-encrypt to a new key, check the plaintext, commit the manifest, verify, then delete the old artifact; a re-run finishes what a killed one left")
  .argument('<dataset>', 'dataset id from the config (postgres or etcd, with encryption)')
  .option('--identity <file>', "the OLD age identity file, one identity per line (default: the dataset's encryption.identityFile)")
  .option('--backup <id>', 'only this backup (default: every retained backup)')
  .option('--dry-run', 'print what would be re-encrypted and deleted, change nothing')
  .option('--json', 'print the result as one JSON object')
  .option('--retries <n>', `per backup (a retry starts from what the folder holds): ${RETRIES_HELP}`, parseAttempts)
  .action(async (dataset: string, opts: { identity?: string; backup?: string; dryRun?: boolean; json?: boolean; retries?: number }) => {
    const { config: cfg } = await config();
    const { rekeyCommand } = await import('./rekey.js');
    // The lines are the output; the verification's own log lines would only repeat them.
    process.exitCode = await rekeyCommand(cfg, createLogger({ level: process.env.LOG_LEVEL ?? 'fatal' }), { dataset, ...opts });
  });

program
  .command('demo')
  .description('dump a local Postgres into a local directory, verify it by fan-out, and show the catalog, Bull Board and /metrics')
  .option('--database <name>', 'an existing database to feature (default: create a small sample database "lifeboat_demo")')
  .option('--serve', 'keep serving Bull Board and /metrics afterwards (default when stdout is a terminal)')
  .option('--no-serve', 'exit once the backup is verified')
  .action(async (opts: { database?: string; serve?: boolean }) => {
    const loaded = await config();
    const { runDemo } = await import('./demo.js');
    // The demo prints its own story; only warnings and errors from the logs.
    const exitCode = await runDemo(loaded, createLogger({ level: process.env.LOG_LEVEL ?? 'warn' }), { database: opts.database, serve: opts.serve ?? Boolean(process.stdout.isTTY), onSignals });
    if (exitCode !== undefined) process.exitCode = exitCode;
  });

async function describeFunctions(): Promise<void> {
  const { allFunctions } = await import('../../functions/index.js');
  functionsOption.description = `comma-separated, from: ${allFunctions.map((f) => f.name).join(', ')}`;
  functionArgument.description = allFunctions.map((f) => f.name).join(' | ');
}

async function main(): Promise<void> {
  try {
    // Whenever worker's or run's help may be shown (`run --help`, `help run`, a usage error): any argument
    // "run" or "worker". Commander prints `help run` without running a hook, so this cannot wait for one.
    if (process.argv.slice(2).some((arg) => arg === 'run' || arg === 'worker')) await describeFunctions();
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = EXIT.usage;
      return;
    }
    // Redis, or a target that is gone or hung: a service is unreachable, nothing about the data is known.
    // A CliError is never one of those: it need not load ioredis and the S3 SDK to be told apart.
    if (!(err instanceof CliError)) {
      const [{ RedisUnavailableError }, { isUnreachable }] = await Promise.all([import('../plumbing/redis.js'), import('../targets/errors.js')]);
      if (err instanceof RedisUnavailableError || isUnreachable(err)) {
        process.stderr.write(`lifeboat: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = EXIT.unavailable;
        return;
      }
    }
    process.stderr.write(`lifeboat: ${err instanceof CliError ? err.message : errorMessage(err)}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : EXIT.failed;
  }
}

await main();
