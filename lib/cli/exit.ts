import { InvalidArgumentError } from 'commander';
import { checkDatabaseName } from '../postgres/dumpallSections.js';
import { VERIFY_WHEN, type VerifyWhen } from '../postgres/verifyWhen.js';
import { describeAttemptFailure, INLINE_RETRIES, type AttemptFailure, type InlineRetries } from '../../queue/inline.js';

/** Exit codes: what a script calling lifeboat can rely on. */
export const EXIT = {
  ok: 0,
  /** A job or check ran and failed (including a corrupt backup). */
  failed: 1,
  /** Bad command line or bad config: nothing ran. */
  usage: 2,
  /** A service Lifeboat needs (Redis, the target, a restore's destination) could not be reached. */
  unavailable: 3,
} as const;

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

// Flag parsers for commander's argParser: a refusal becomes commander's "option '--x <v>' argument 'v'
// is invalid. <reason>" and exit 2, before anything runs.

const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|[+-]\d{2}:\d{2})$/;

/** An ISO date-time with a time zone that names a real instant: 2026-02-30T02:00:00Z would silently become March 2. */
export function parseIsoDateTime(value: string): Date {
  const m = ISO_DATE_TIME.exec(value);
  if (!m) throw new InvalidArgumentError('expected an ISO date-time with a time zone, e.g. 2026-11-26T02:00:00Z');
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map((part) => Number(part ?? 0)) as [number, number, number, number, number, number];
  const ms = Number((m[7] ?? '').padEnd(3, '0'));
  const zone = /^([+-])(\d{2}):(\d{2})$/.exec(m[8]!);
  // Date.UTC quietly carries an overflow into the next field; a real time comes back unchanged.
  const asUtc = new Date(Date.UTC(y, mo - 1, d, h, mi, s, ms));
  asUtc.setUTCFullYear(y); // Date.UTC reads years 0-99 as 1900-1999
  const same = asUtc.getUTCFullYear() === y && asUtc.getUTCMonth() === mo - 1 && asUtc.getUTCDate() === d && asUtc.getUTCHours() === h && asUtc.getUTCMinutes() === mi && asUtc.getUTCSeconds() === s;
  if (!same) throw new InvalidArgumentError(`${value} is not a real time (it would become ${asUtc.toISOString()})`);
  if (zone && (Number(zone[2]) > 23 || Number(zone[3]) > 59)) throw new InvalidArgumentError(`${value} has no valid time zone offset`);
  const offsetMs = zone ? (zone[1] === '-' ? -1 : 1) * (Number(zone[2]) * 60 + Number(zone[3])) * 60_000 : 0;
  return new Date(asUtc.getTime() - offsetMs);
}

export function parsePositiveSeconds(value: string): number {
  const seconds = Number(value);
  if (value.trim() === '' || !Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return seconds;
}

const UNIT_MS = { m: 60_000, h: 3600_000, d: 86400_000, w: 7 * 86400_000 } as const;

/** `--since`: a span back from now (90m, 36h, 7d, 2w) or an ISO date-time; anything else exits 2 naming the flag. */
export function parseSince(value: string, now = new Date()): Date {
  // A date gets parseIsoDateTime's own, exact refusal (2026-02-30 is no date).
  if (/^\d{4}-/.test(value)) return parseIsoDateTime(value);
  const span = /^(\d+(?:\.\d+)?)(m|h|d|w)$/.exec(value);
  if (!span) throw new InvalidArgumentError('expected a span back from now such as 90m, 36h, 7d or 2w, or an ISO date-time such as 2026-11-01T00:00:00Z');
  return new Date(now.getTime() - Number(span[1]) * UNIT_MS[span[2] as keyof typeof UNIT_MS]);
}

/** `--as`: a name that can be quoted safely, else exit 2 before anything runs. */
export function parseTargetDatabase(value: string): string {
  try {
    return checkDatabaseName(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export const VERIFY_HELP =
  "postgres: when to check the backup's sha256: during (default: one read, checked as it streams; a mismatch fails and drops the databases the restore created), first (a read of its own before the destination is touched), recent (rely on a passed verification of the same bytes within 7 days, else first). Into databases that exist already (--force) the default is recent.";

/** `--verify`: during, first or recent, else exit 2 before anything runs. */
export function parseVerifyWhen(value: string): VerifyWhen {
  if (!(VERIFY_WHEN as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${VERIFY_WHEN.join(', ')}`);
  return value as VerifyWhen;
}

export const MAX_ATTEMPTS = 10;

/** `--retries`: attempts in all, 1 (no retry) to 10. */
export function parseAttempts(value: string): number {
  const attempts = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(attempts >= 1 && attempts <= MAX_ATTEMPTS)) throw new InvalidArgumentError(`expected a whole number of attempts from 1 to ${MAX_ATTEMPTS}`);
  return attempts;
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT']);
/** What lib/targets and lib/plumbing/redis throw for a service that does not answer (by name: errors also arrive as causes). */
const UNREACHABLE_ERRORS = new Set(['TargetUnreachableError', 'TargetTimeoutError', 'RedisUnavailableError']);
/** What psql and pg_dumpall say when there is no server to talk to (not when it refuses a login). */
const LIBPQ_UNREACHABLE = /Connection refused|could not connect to server|No such file or directory\s+Is the server running|could not translate host name|timeout expired|No route to host|Network is unreachable/i;

/** Whether an error means a service could not be reached at all (exit 3), as opposed to a job that ran and failed. */
export function isUnreachable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, name, stderr } = e as { code?: unknown; name?: unknown; stderr?: unknown };
    if ((typeof code === 'string' && UNREACHABLE_CODES.has(code)) || (typeof name === 'string' && UNREACHABLE_ERRORS.has(name))) return true;
    if (name === 'CommandError' && typeof stderr === 'string' && LIBPQ_UNREACHABLE.test(stderr)) return true;
    if (e instanceof AggregateError && e.errors.some(isUnreachable)) return true;
  }
  return false;
}

/** The exit code of a command that failed with `err`. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof CliError) return err.exitCode;
  return isUnreachable(err) ? EXIT.unavailable : EXIT.failed;
}

/** The retry policy of an inline command (`--retries`, else INLINE_RETRIES), each retried failure printed as it happens. */
export function inlineRetries(attempts?: number): { retries: InlineRetries; onAttemptFailed: (failure: AttemptFailure) => void } {
  return {
    retries: { ...INLINE_RETRIES, attempts: attempts ?? INLINE_RETRIES.attempts },
    onAttemptFailed: (failure) => process.stderr.write(`lifeboat: ${describeAttemptFailure(failure)}\n`),
  };
}

/** `--concurrency`: 1-64 requests in flight (the S3 clients keep 64 sockets). */
export function parseConcurrency(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 64) throw new InvalidArgumentError('expected a whole number from 1 to 64');
  return n;
}
