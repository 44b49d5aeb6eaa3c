/** One line of `lifeboat check`. */
export interface CheckLine {
  /** What was checked: "redis", "target hub", "bucket hub/postgres", … */
  check: string;
  result: 'ok' | 'warn' | 'fail';
  detail: string;
  /** What to do about a warn or fail. */
  fix?: string;
}

/** How long one request of a check may take (a hung endpoint must not hold the command). */
export const CHECK_TIMEOUT_MS = 10_000;
/** The whole command gives up after this long; what has not answered by then fails as timed out. */
export const CHECK_DEADLINE_MS = 60_000;

export const ok = (check: string, detail: string): CheckLine => ({ check, result: 'ok', detail });
export const warn = (check: string, detail: string, fix?: string): CheckLine => ({ check, result: 'warn', detail, ...(fix ? { fix } : {}) });
export const fail = (check: string, detail: string, fix?: string): CheckLine => ({ check, result: 'fail', detail, ...(fix ? { fix } : {}) });

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Rejects with "<what>: no answer within N s" when `promise` takes longer than `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
