import { setTimeout as sleep } from 'node:timers/promises';
import { PassThrough, type Readable } from 'node:stream';
import type { KubeConfig, V1Status } from '@kubernetes/client-node';
import type { WebSocket } from 'ws';
import { PermanentError } from '../../queue/errors.js';
import { kubeClient } from './client.js';
import { TailBuffer } from '../postgres/process.js';
import type { ExitStatus, ToolProcess } from '../postgres/runner.js';

/** The exec connection ended without an exit status: the stream was cut. Retryable. */
export class ExecStreamDroppedError extends Error {
  override name = 'ExecStreamDroppedError';
}

/** Stop feeding stdin while this much is queued on the socket: bounded memory however fast we read. */
const STDIN_HIGH_WATER = 4 * 1024 * 1024;

/** Exit status from the status channel: Success, or Failure with an ExitCode cause. */
export function exitFromStatus(status: V1Status): ExitStatus {
  if (status.status === 'Success') return { code: 0 };
  const exitCode = status.details?.causes?.find((c) => c.reason === 'ExitCode')?.message;
  if (status.reason === 'NonZeroExitCode' && exitCode !== undefined) return { code: Number(exitCode) };
  return { code: null, error: new Error(`exec failed: ${status.message ?? status.reason ?? 'unknown status'}`) };
}

/**
 * Runs a command in a pod over the exec WebSocket, as a ToolProcess: stdout as a stream with
 * backpressure (the socket pauses while the consumer is behind), stderr kept for errors, and the exit
 * code from the status channel.
 */
export async function execInPod(
  kc: KubeConfig,
  target: { namespace: string; pod: string; container: string },
  command: string[],
  stdin: Readable | undefined,
  signal?: AbortSignal,
): Promise<ToolProcess> {
  const stdout = new PassThrough({ highWaterMark: 1024 * 1024 });
  const stderr = new TailBuffer(64 * 1024);
  const stderrSink = new PassThrough();
  stderrSink.on('data', (c: Buffer) => stderr.push(c));
  const stdinProxy = stdin ? new PassThrough() : null;
  let status: ExitStatus | undefined;
  let settle!: (s: ExitStatus) => void;
  const exited = new Promise<ExitStatus>((resolve) => (settle = resolve));

  const where = `pods/exec ${target.namespace}/${target.pod} (container ${target.container})`;
  let ws: WebSocket;
  try {
    ws = (await new (kubeClient().Exec)(kc).exec(target.namespace, target.pod, target.container, command, stdout, stderrSink, stdinProxy, false, (s) => {
      status = exitFromStatus(s);
    })) as unknown as WebSocket;
  } catch (err) {
    const message = (err as Error).message ?? String(err);
    if (/\b(401|403)\b/.test(message)) throw new PermanentError(`${where}: forbidden (${message})`);
    if (/\b404\b/.test(message)) throw new PermanentError(`${where}: not found (${message})`);
    if (/\b400\b/.test(message)) throw new PermanentError(`${where}: refused (${message})`);
    throw err;
  }

  ws.on('message', () => {
    if (stdout.writableNeedDrain) {
      ws.pause();
      stdout.once('drain', () => ws.resume());
    }
  });
  ws.on('close', () => {
    if (status) return settle(status);
    const dropped = new ExecStreamDroppedError(`${where}: the exec stream closed without an exit status`);
    stdout.destroy(dropped);
    settle({ code: null, error: dropped });
  });
  const abort = () => ws.terminate();
  signal?.addEventListener('abort', abort, { once: true });
  void exited.then(() => signal?.removeEventListener('abort', abort));

  if (stdin && stdinProxy) {
    void (async () => {
      try {
        for await (const chunk of stdin) {
          while (ws.bufferedAmount > STDIN_HIGH_WATER && ws.readyState === ws.OPEN) await sleep(5);
          if (ws.readyState !== ws.OPEN) return;
          stdinProxy.write(chunk);
        }
        // Only v5 can close stdin alone; under v4 ending it closes the whole connection, so callers
        // make their input self-terminating (psql gets a trailing \q) and stdin stays open.
        if (ws.protocol === 'v5.channel.k8s.io') stdinProxy.end();
      } catch (err) {
        // The input failed (e.g. the target stream broke): stop the command rather than let it finish on partial input.
        stdout.destroy(err as Error);
        ws.terminate();
      }
    })();
  }

  return {
    stdout,
    stderr,
    exited,
    stop: () => {
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
    },
  };
}
