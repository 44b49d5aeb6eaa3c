import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { pino, type DestinationStream, type Logger } from 'pino';

export type LogFormat = 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** Default: pretty when stderr is a terminal, JSON otherwise (a collector, a file, a pipe). */
  format?: LogFormat;
}

/**
 * A line the CLI redraws in place at the bottom of the terminal (its progress). Pretty log lines are
 * written above it: the line is cleared, the log line written, the line drawn again.
 */
export const statusLine = { text: '' };

/** What the CLI's --log-format and --log-level set for every logger the process makes. */
const processDefaults: { level?: string; format?: LogFormat } = {};

export function setLogDefaults(defaults: { level?: string; format?: LogFormat }): void {
  Object.assign(processDefaults, defaults);
}

/**
 * Logs on stderr, so command output on stdout stays clean: JSON lines for machines, or one readable
 * line per entry on a terminal (time, level, fn, dataset, message, the other fields). Secrets are
 * Secret objects that print as "[secret]"; the redact list is a second line of defence for plain
 * strings under telling names, and applies to both formats.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? processDefaults.format ?? (process.stderr.isTTY ? 'pretty' : 'json');
  return pino(
    {
      name: options.name ?? 'lifeboat',
      // An explicit --log-level beats a command's own quiet default.
      level: processDefaults.level ?? options.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: {
        paths: ['password', '*.password', 'secretAccessKey', '*.secretAccessKey', 'accessKeyId', '*.accessKeyId', 'token', '*.token', 'authorization', '*.authorization', 'PGPASSWORD', '*.PGPASSWORD'],
        censor: '[secret]',
      },
    },
    format === 'pretty' ? prettyStream() : pino.destination({ fd: 2, sync: false }),
  );
}

/** pino-pretty in this thread (no transport worker), loaded only when a terminal wants it. */
function prettyStream(): DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (options: Record<string, unknown>) => DestinationStream;
  const aboveStatusLine = new Writable({
    write(chunk: Buffer, _encoding, done) {
      process.stderr.write(statusLine.text ? `\r\x1b[2K${chunk}${statusLine.text}` : chunk);
      done();
    },
  });
  return pretty({
    destination: aboveStatusLine,
    colorize: process.stderr.isTTY === true && !process.env.NO_COLOR,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname,name,fn,dataset',
    // "dumpPostgres pg: dump stored": who and what first, the other fields after.
    messageFormat: '{if fn}{fn} {end}{if dataset}{dataset}: {end}{msg}',
    singleLine: true,
  });
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
