import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

export interface StreamUploadParams {
  Bucket: string;
  Key: string;
  ContentType?: string;
  Metadata?: Record<string, string>;
}

export interface StreamUploadOptions {
  partSize: number;
  /** Parts uploading at once. Memory is exactly (queueSize + 1) × partSize, whatever the object size. */
  queueSize: number;
  signal?: AbortSignal;
}

/**
 * Uploads a stream of unknown length. Parts are filled by copying into a fixed pool of reused buffers,
 * so memory stays flat; reading pauses while every buffer is in flight. A stream that ends within the
 * first part goes up as one PUT. Any failure (the stream's, a part's, an abort) aborts the multipart
 * upload: the object becomes visible only through CompleteMultipartUpload.
 *
 * We use this instead of lib-storage's Upload because that one concatenates each part into a fresh
 * buffer and keeps slices of the previous one alive: 241 MiB peak RSS on a 1 GiB dump (bench/dump.ts).
 */
export async function uploadStream(client: S3Client, params: StreamUploadParams, body: AsyncIterable<Buffer>, options: StreamUploadOptions): Promise<void> {
  const { partSize, queueSize, signal } = options;
  const pool: Buffer[] = [];
  let allocated = 0;
  let waiter: (() => void) | undefined;
  let failure: unknown;
  let uploadId: string | undefined;
  const parts: Array<{ PartNumber: number; ETag: string }> = [];
  const inflight = new Set<Promise<void>>();
  // A part's failure rejects the read in progress, so reading stops at once, not when the next part
  // fills. Each read gets its own promise: racing every read against one long-lived promise would keep
  // every chunk read reachable from that promise's reactions until the upload ends (RSS grew with the dump).
  let interruptRead: ((err: unknown) => void) | undefined;
  const partFailed = (err: unknown) => interruptRead?.(err);

  const release = (buffer: Buffer) => {
    pool.push(buffer);
    waiter?.();
  };
  const take = async (): Promise<Buffer> => {
    for (;;) {
      if (failure) throw failure;
      const free = pool.pop();
      if (free) return free;
      if (allocated <= queueSize) {
        allocated += 1;
        return Buffer.allocUnsafe(partSize);
      }
      await new Promise<void>((resolve) => (waiter = resolve));
      waiter = undefined;
    }
  };
  const send = async (buffer: Buffer, length: number) => {
    if (!uploadId) {
      const created = await client.send(new CreateMultipartUploadCommand(params), { abortSignal: signal });
      uploadId = created.UploadId;
      if (!uploadId) throw new Error(`${params.Bucket}/${params.Key}: CreateMultipartUpload returned no upload id`);
    }
    const PartNumber = parts.length + inflight.size + 1;
    const upload = client
      .send(new UploadPartCommand({ Bucket: params.Bucket, Key: params.Key, UploadId: uploadId, PartNumber, Body: buffer.subarray(0, length), ContentLength: length }), { abortSignal: signal })
      .then(
        (r) => {
          parts.push({ PartNumber, ETag: r.ETag ?? '' });
        },
        (err: unknown) => {
          failure ??= err;
          partFailed(failure);
        },
      )
      .finally(() => {
        inflight.delete(upload);
        release(buffer);
      });
    inflight.add(upload);
  };

  let current: Buffer | undefined;
  let filled = 0;
  const chunks = body[Symbol.asyncIterator]();
  const read = () =>
    new Promise<IteratorResult<Buffer>>((resolve, reject) => {
      if (failure) return reject(failure);
      interruptRead = reject;
      chunks.next().then(resolve, reject).finally(() => {
        if (interruptRead === reject) interruptRead = undefined;
      });
    });
  try {
    signal?.throwIfAborted();
    current = await take();
    for (;;) {
      const next = await read();
      if (next.done) break;
      const chunk = next.value;
      let offset = 0;
      while (offset < chunk.length) {
        const n = Math.min(chunk.length - offset, partSize - filled);
        chunk.copy(current, filled, offset, offset + n);
        filled += n;
        offset += n;
        if (filled === partSize) {
          await send(current, filled);
          current = await take();
          filled = 0;
        }
      }
    }
    if (!uploadId) {
      await client.send(new PutObjectCommand({ ...params, Body: current.subarray(0, filled), ContentLength: filled }), { abortSignal: signal });
      return;
    }
    if (filled > 0) await send(current, filled);
    await Promise.all(inflight);
    if (failure) throw failure;
    parts.sort((a, b) => a.PartNumber - b.PartNumber);
    await client.send(new CompleteMultipartUploadCommand({ Bucket: params.Bucket, Key: params.Key, UploadId: uploadId, MultipartUpload: { Parts: parts } }), { abortSignal: signal });
  } catch (err) {
    // The first failure is the one to report: later ones (the aborted parts, the body torn down) follow from it.
    failure ??= err;
    // As for-await would on leaving early; not awaited, since a read may still be pending.
    chunks.return?.().catch(() => {});
    await Promise.allSettled(inflight);
    if (uploadId) {
      // Without the signal: an abort must still clean up.
      await client.send(new AbortMultipartUploadCommand({ Bucket: params.Bucket, Key: params.Key, UploadId: uploadId })).catch(() => {});
    }
    throw failure;
  }
}
