import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A held lock. Renewed in the background until released. */
export interface Lease {
  /** Aborts with LockLostError if the lock expired or changed hands before release: stop writing. */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

/** Named mutual exclusion across processes; the queue runtime takes one per dataset. */
export interface Locks {
  /**
   * The lease, or undefined while another owner holds the lock. The same owner takes it over: a job's
   * earlier attempt that BullMQ gave up on (its worker died) must not hold up the attempt that replaces it.
   */
  acquire(name: string, owner: string): Promise<Lease | undefined>;
  /** Who holds a lock, if anyone (for messages). */
  holder(name: string): Promise<string | undefined>;
  /** How long a job that found its lock taken waits before it tries again. */
  readonly busyRetryMs: number;
}

/** The job found its dataset locked by another job; it runs later, and this attempt does not count. */
export class LockBusyError extends Error {
  override name = 'LockBusyError';
  constructor(
    readonly lock: string,
    readonly holder: string | undefined,
    readonly retryInMs: number,
  ) {
    super(`${lock} is held by ${holder ?? 'another job'}; retrying in ${Math.round(retryInMs / 1000)} s`);
  }
}

/** The lock expired or was taken over while the job ran (Redis lost it, or the process stalled past the TTL). */
export class LockLostError extends Error {
  override name = 'LockLostError';
  constructor(readonly lock: string) {
    super(`lost ${lock} while running; another job may write the same dataset`);
  }
}

// Compare-and-delete / compare-and-extend: only the holder's token may release or renew.
// Tokens are "<owner> <random>"; acquiring succeeds on a free lock or one of the same owner.
const ACQUIRE = `local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[3])) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;

export interface RedisLocksOptions {
  /** How long a lock outlives a holder that stopped renewing it (a killed worker). */
  ttlMs?: number;
  busyRetryMs?: number;
}

export const LOCK_TTL_MS = 60_000;
export const LOCK_BUSY_RETRY_MS = 5_000;

/** Locks in Redis: set if free (or its owner's) with a TTL and a random token, renewed every third of the TTL, released by compare-and-delete. */
export class RedisLocks implements Locks {
  readonly ttlMs: number;
  readonly busyRetryMs: number;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    options: RedisLocksOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? LOCK_TTL_MS;
    this.busyRetryMs = options.busyRetryMs ?? LOCK_BUSY_RETRY_MS;
  }

  key(name: string): string {
    return `${this.prefix}:lock:${name}`;
  }

  async holder(name: string): Promise<string | undefined> {
    const value = await this.redis.get(this.key(name));
    return value ? value.slice(0, value.lastIndexOf(' ')) : undefined;
  }

  async acquire(name: string, owner: string): Promise<Lease | undefined> {
    const key = this.key(name);
    const token = `${owner} ${randomUUID()}`;
    if ((await this.redis.eval(ACQUIRE, 1, key, token, this.ttlMs, `${owner} `)) !== 1) return undefined;

    const lost = new AbortController();
    let renewedAt = Date.now();
    const renew = async () => {
      try {
        if ((await this.redis.eval(RENEW, 1, key, token, this.ttlMs)) === 1) renewedAt = Date.now();
        else lost.abort(new LockLostError(name));
      } catch {
        // Redis unreachable: the lock is gone once a whole TTL passed without a renewal.
        if (Date.now() - renewedAt >= this.ttlMs) lost.abort(new LockLostError(name));
      }
    };
    const timer = setInterval(() => void renew(), Math.max(50, Math.floor(this.ttlMs / 3)));
    timer.unref();
    lost.signal.addEventListener('abort', () => clearInterval(timer), { once: true });
    return {
      lost: lost.signal,
      release: async () => {
        clearInterval(timer);
        await this.redis.eval(RELEASE, 1, key, token);
      },
    };
  }
}
