import { pino, type Logger } from 'pino';

/**
 * JSON logs on stderr, so command output on stdout stays clean. Secrets are Secret objects that print
 * as "[secret]"; the redact list is a second line of defence for plain strings under telling names.
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: options.name ?? 'lifeboat',
      level: options.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: {
        paths: ['password', '*.password', 'secretAccessKey', '*.secretAccessKey', 'accessKeyId', '*.accessKeyId', 'token', '*.token', 'authorization', '*.authorization', 'PGPASSWORD', '*.PGPASSWORD'],
        censor: '[secret]',
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
