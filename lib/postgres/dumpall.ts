import { spawn } from 'node:child_process';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { libpqEnv, type PostgresConnection } from './connection.js';
import { CommandError, TailBuffer } from './process.js';

/** pg_dumpall ends every complete dump with this comment. */
export const DUMPALL_TRAILER = 'PostgreSQL database cluster dump complete';
/** How many bytes at the end of a dump may hold the trailer. */
export const TRAILER_WINDOW = 256;

export class DumpIncompleteError extends Error {
  override name = 'DumpIncompleteError';
}

/** Does the end of a dump carry pg_dumpall's completion trailer? */
export function hasDumpallTrailer(tail: Buffer): boolean {
  return tail.subarray(Math.max(0, tail.length - TRAILER_WINDOW)).toString('latin1').includes(DUMPALL_TRAILER);
}

/**
 * Streams `pg_dumpall` stdout. The stream ends normally only if the process exited 0 and the output
 * carries the completion trailer; otherwise it errors before its end, so no consumer can mistake a
 * partial dump for a complete one.
 */
export function dumpallStream(binary: string, connection: PostgresConnection, options: { signal?: AbortSignal; extraArgs?: string[] } = {}): Readable {
  const child = spawn(binary, ['--dbname', connection.url, '--no-password', ...(options.extraArgs ?? [])], {
    env: libpqEnv(connection),
    stdio: ['ignore', 'pipe', 'pipe'],
    signal: options.signal,
  });
  const stderr = new TailBuffer(8192);
  child.stderr.on('data', (c: Buffer) => stderr.push(c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const tail = new TailBuffer(TRAILER_WINDOW);
  const checked = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      tail.push(chunk);
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      void exited.then(({ code, signal, error }) => {
        if (error) return callback(error);
        if (code !== 0) return callback(new CommandError(binary, code, signal, stderr.toString()));
        if (!hasDumpallTrailer(tail.toBuffer())) {
          return callback(new DumpIncompleteError(`${binary} exited 0 but its output lacks the "${DUMPALL_TRAILER}" trailer`));
        }
        callback();
      });
    },
  });
  child.stdout.on('error', (err) => checked.destroy(err));
  child.stdout.pipe(checked);
  checked.on('close', () => {
    // A consumer that gave up (upload failed, abort) must not leave pg_dumpall running.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  return checked;
}
