import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Pass-through that counts bytes and computes sha256 on the fly. */
export class HashingStream extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;
  #digest: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  /** Valid once the stream has ended. */
  get sha256(): string {
    this.#digest ??= this.#hash.digest('hex');
    return this.#digest;
  }
}

/** Reads a stream to the end; returns its sha256 and size. */
export async function hashStream(stream: NodeJS.ReadableStream): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}
