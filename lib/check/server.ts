import { isLoopback, type Config } from '../config/schema.js';
import { fail, ok, type CheckLine } from './types.js';

/** The time zone every schedule runs in (validated by the schema; shown with the local time now). */
export function checkTimezone(config: Config, now = new Date()): CheckLine {
  const tz = config.server.timezone;
  try {
    const local = new Intl.DateTimeFormat('en-GB', { timeZone: tz, dateStyle: 'medium', timeStyle: 'short', hourCycle: 'h23' }).format(now);
    return ok('timezone', `${tz}: schedules run in this zone (now ${local})`);
  } catch {
    return fail('timezone', `server.timezone "${tz}" is not a time zone this Node.js knows`, 'set server.timezone to an IANA zone such as "UTC" or "Europe/Berlin"');
  }
}

/** A webhook reachable from other hosts must demand a token (the config loader refuses one without, too). */
export function checkWebhookToken(config: Config): CheckLine {
  const { host, webhook } = config.server;
  if (!webhook.enabled) return ok('webhook token', 'the webhook is disabled');
  if (webhook.token) return ok('webhook token', `set (from ${webhook.token.source}); ${webhook.path} demands "Authorization: Bearer <token>"`);
  if (isLoopback(host)) return ok('webhook token', `not needed: server.host ${host} is a loopback address`);
  return fail('webhook token', `server.host ${host} is not a loopback address, and server.webhook.token is not set: anyone who can reach ${webhook.path} could queue jobs`, 'set server.webhook.token to a ${env:NAME} or ${file:/path} reference');
}
