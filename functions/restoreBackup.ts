import { decrypterFor } from '../lib/crypto/identity.js';
import { z } from 'zod';
import { listBackups } from '../lib/catalog/catalog.js';
import { restoreTargetFor } from '../lib/config/restoreTargets.js';
import { requireDataset } from '../lib/datasets.js';
import { restoreMirrorBackup } from '../lib/mirror/restoreBackup.js';
import { checkDatabaseName } from '../lib/postgres/dumpallSections.js';
import { restoreOneDatabase, restoreWholeCluster, RestoreRefusedError, type RestoreSteps } from '../lib/postgres/restoreBackup.js';
import { LocalRunner } from '../lib/postgres/runner.js';
import { S3Store } from '../lib/targets/s3.js';
import { defineFunction } from '../queue/define.js';
import { PermanentError } from '../queue/errors.js';

/**
 * What the web UI's restore button runs: a Postgres backup (whole, or one database under a new name)
 * into a configured PostgreSQL server, or a mirror back into a configured bucket. Never retried: a
 * restore writes into its destination, and a second attempt on top of a partial one would mix them.
 */
export const restoreBackup = defineFunction({
  name: 'restoreBackup',
  description: 'Restores one backup into a destination named in server.ui.restoreTargets: a PostgreSQL server, or an S3 bucket for a mirror.',
  input: z.object({
    dataset: z.string().min(1),
    /** A backup id or "latest". */
    backup: z.string().min(1),
    /** The name of a server.ui.restoreTargets entry. */
    into: z.string().min(1),
    /** Only this database of a pg_dumpall backup... */
    database: z.string().min(1).optional(),
    /** ...under this name. */
    as: z.string().superRefine((name, zctx) => {
      try {
        checkDatabaseName(name);
      } catch (err) {
        zctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }).optional(),
    tick: z.iso.datetime().optional(),
  }).refine((input) => input.as === undefined || input.database !== undefined, { path: ['as'], message: 'needs database: only one database can be restored under a new name' }),
  triggers: [],
  kinds: ['postgres', 'bucket'],
  retries: { attempts: 1, backoffMs: 0 },
  concurrency: 1,
  timeoutMs: 12 * 3600_000,

  async handler(input, ctx) {
    const dataset = requireDataset(ctx.deps.config, input.dataset);
    const found = restoreTargetFor(ctx.deps.config, dataset, input.into);
    if ('problem' in found) throw new PermanentError(found.problem);
    const into = found.target;
    const say = (line: string) => ctx.log.info(line);

    // restoreTargetFor checked that a bucket dataset gets an s3 target, a postgres one a postgres server.
    if (dataset.kind === 'bucket' && into.kind === 's3') {
      if (input.database !== undefined) throw new PermanentError('database: a bucket dataset has no databases');
      const destination = ctx.deps.store(into.target, into.bucket) as S3Store;
      const report = await restoreMirrorBackup(ctx.deps, dataset, { backup: input.backup, destination, destinationName: into.target, toPrefix: '', overwrite: false, dryRun: false }, {
        say, log: ctx.log, signal: ctx.signal, read: (_what, step) => step(),
        progress: (done, expected) => ctx.progress({ phase: 'restoring', bytes: done.bytes, objects: done.objects, total: expected?.bytes, totalObjects: expected?.objects }),
      });
      if (!report.ok) throw new RestoreRefusedError(`restore of ${dataset.id} into ${into.bucket} on ${into.target} is incomplete: ${report.failed.count} failed, ${report.verification.listing.missing} missing, ${report.verification.sample.mismatches.length} sampled objects differ`);
      return report;
    }
    if (dataset.kind !== 'postgres' || into.kind !== 'postgres') throw new PermanentError(`dataset ${dataset.id}: restoreBackup takes postgres and bucket datasets`);

    const store = ctx.deps.storeFor(dataset);
    const entries = await listBackups(store, dataset, { signal: ctx.signal });
    const entry = input.backup === 'latest' ? entries[0] : entries.find((e) => e.id === input.backup);
    if (!entry) throw new PermanentError(`backup: dataset ${dataset.id} has no backup ${input.backup}`);
    if (entry.status === 'corrupt') throw new RestoreRefusedError(`backup ${entry.id} of ${dataset.id} failed verification; choose another`);
    const destination = new LocalRunner({ url: into.url, password: into.password });
    const steps: RestoreSteps = {
      say, signal: ctx.signal, read: (_what, step) => step(),
      progress: (phase, bytes, total) => ctx.progress({ phase, bytes, total }),
    };
    const job = { store, entry, destination, force: false, decrypt: decrypterFor(dataset, entry.manifest, `restore backup ${entry.id}`) };
    ctx.log.info({ backup: entry.id, into: input.into, database: input.database, as: input.as }, 'restore started');
    return input.database === undefined ? restoreWholeCluster(job, steps) : restoreOneDatabase(job, { database: input.database, as: input.as, roles: false }, steps);
  },
});
