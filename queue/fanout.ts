import { createHash } from 'node:crypto';
import type { Config } from '../lib/config/schema.js';
import type { AnyFunction } from './define.js';
import type { EventName } from './events.js';

export interface Delivery {
  fn: AnyFunction;
  input: unknown;
  /** Deliveries with the same id are one job: a repeated event runs the function once. */
  jobId?: string;
}

/** Which functions an event reaches, with what input. */
export function deliveriesFor(functions: readonly AnyFunction[], event: EventName, payload: unknown, config: Config): Delivery[] {
  const out: Delivery[] = [];
  for (const fn of functions) {
    for (const trigger of fn.triggers) {
      if (!('event' in trigger) || trigger.event !== event) continue;
      if (trigger.filter && !trigger.filter(payload, config)) continue;
      const input = trigger.input ? trigger.input(payload) : payload;
      const key = trigger.dedupe?.(payload);
      out.push({ fn, input, jobId: key === undefined ? undefined : dedupeJobId(fn.name, key) });
    }
  }
  return out;
}

/** A job id from a dedupe key; hashed, since ids must not contain ":" and keys can be long. */
export function dedupeJobId(fnName: string, key: string): string {
  return `${fnName}-${createHash('sha256').update(key).digest('hex').slice(0, 40)}`;
}
