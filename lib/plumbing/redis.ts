import { Redis } from 'ioredis';
import type { Config } from '../config/schema.js';

/** A Redis connection suitable for BullMQ (which requires maxRetriesPerRequest: null). */
export function createRedis(config: Config, options: { lazyConnect?: boolean } = {}): Redis {
  return new Redis(config.redis.url, {
    password: config.redis.password?.reveal(),
    maxRetriesPerRequest: null,
    lazyConnect: options.lazyConnect,
  });
}

export function metricsKey(config: Config): string {
  return `${config.redis.prefix}:metrics`;
}
