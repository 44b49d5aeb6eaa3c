import { Transform, type TransformCallback } from 'node:stream';

/** Passes bytes through unchanged, telling `onProgress` how many have gone by. */
export function progressTap(onProgress: (bytes: number) => void): Transform {
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      bytes += chunk.length;
      onProgress(bytes);
      callback(null, chunk);
    },
  });
}
