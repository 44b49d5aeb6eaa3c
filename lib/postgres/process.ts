import { spawn } from 'node:child_process';

/** Keeps only the last `limit` bytes of a stream, e.g. stderr for an error message. */
export class TailBuffer {
  #chunks: Buffer[] = [];
  #bytes = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    while (this.#chunks.length > 1 && this.#bytes - this.#chunks[0]!.length >= this.limit) {
      this.#bytes -= this.#chunks.shift()!.length;
    }
  }
  toBuffer(): Buffer {
    const all = Buffer.concat(this.#chunks);
    return all.length > this.limit ? all.subarray(all.length - this.limit) : all;
  }
  toString(): string {
    return this.toBuffer().toString('utf8');
  }
}

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderr: string,
  ) {
    super(`${command} ${exitCode === null ? `was killed by ${signal}` : `exited with code ${exitCode}`}${stderr ? `: ${stderr.trim()}` : ''}`);
  }
}

/** Runs a command to completion and returns its stdout; rejects with its stderr on failure. */
export function capture(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env, signal: options.signal, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err = new TailBuffer(8192);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new CommandError(command, code, signal, err.toString()));
    });
  });
}
