// Apart from status.ts so that main.ts can print them in the help without loading status.ts.

/** How long status may spend reading the targets: a hung hub fails the check, it never hangs it. */
export const STATUS_TARGETS_TIMEOUT_MS = 30_000;
/** How long status waits for Redis, per step: a Redis that is down costs seconds, not the command. */
export const STATUS_REDIS_TIMEOUT_MS = 2000;
