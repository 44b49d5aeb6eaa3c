import { Transform, type TransformCallback } from 'node:stream';
import { TailBuffer } from './process.js';

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
 * Pass-through that errors at the end, instead of ending, when the output lacks pg_dumpall's
 * completion trailer: a dump cut short with exit status 0 must not look complete.
 */
export function requireDumpallTrailer(): Transform {
  const tail = new TailBuffer(TRAILER_WINDOW);
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      tail.push(chunk);
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      callback(hasDumpallTrailer(tail.toBuffer()) ? undefined : new DumpIncompleteError(`pg_dumpall output lacks the "${DUMPALL_TRAILER}" trailer`));
    },
  });
}
