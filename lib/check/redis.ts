import type { Config } from '../config/schema.js';
import { checkRedis, redisUrlForDisplay, RedisUnavailableError } from '../plumbing/redis.js';
import { fail, messageOf, ok, type CheckLine } from './types.js';

/** A PING on a short-lived connection with a short timeout; the URL is shown with its password masked. */
export async function checkRedisLine(config: Config, timeoutMs = 3000): Promise<CheckLine> {
  const url = redisUrlForDisplay(config);
  const started = Date.now();
  try {
    await checkRedis(config, timeoutMs);
    return ok('redis', `PING answered by ${url} (${Date.now() - started} ms)`);
  } catch (err) {
    const detail = err instanceof RedisUnavailableError ? err.message : `cannot reach Redis at ${url}: ${messageOf(err)}`;
    return fail('redis', detail, 'start Redis, or fix redis.url (and redis.password): worker and serve need it; run --inline, restore and drill do not');
  }
}
