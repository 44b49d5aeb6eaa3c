import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Secret } from '../config/secret.js';
import { libpqEnv, splitPassword } from './connection.js';
import { CommandError, TailBuffer } from './process.js';

export type PostgresTool = 'psql' | 'pg_dumpall';

export interface ExitStatus {
  code: number | null;
  signal?: string | null;
  /** The process could not run, or its transport failed (e.g. a dropped exec stream). */
  error?: Error;
}

/** A started tool: its stdout, the tail of its stderr, and how it ended. */
export interface ToolProcess {
  stdout: Readable;
  stderr: TailBuffer;
  exited: Promise<ExitStatus>;
  /** Stops the tool (a consumer gave up). */
  stop(): void;
}

/**
 * Runs the PostgreSQL client tools against one server, wherever they run: locally (direct mode) or
 * inside the server's pod (kubernetes mode). Subclasses only start a process; running to completion,
 * streaming and feeding are the same everywhere.
 */
export abstract class PostgresRunner {
  /** Where the tools run, for messages: "postgres://db:5432" or "pod db/pg-postgresql-0". */
  abstract readonly label: string;
  protected abstract start(tool: PostgresTool, args: string[], stdin: Readable | undefined, signal?: AbortSignal): Promise<ToolProcess>;

  protected failure(tool: PostgresTool, status: ExitStatus, stderr: TailBuffer): Error {
    if (status.error) return status.error;
    return new CommandError(`${tool} (${this.label})`, status.code, (status.signal ?? null) as NodeJS.Signals | null, stderr.toString());
  }

  /** Runs a tool to completion and returns its stdout. */
  async run(tool: PostgresTool, args: string[], options: { stdin?: string; signal?: AbortSignal } = {}): Promise<string> {
    const proc = await this.start(tool, args, options.stdin === undefined ? undefined : Readable.from([Buffer.from(options.stdin)]), options.signal);
    const chunks: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => chunks.push(c));
    const [status] = await Promise.all([proc.exited, once(proc.stdout, 'end').catch(() => {})]);
    if (status.code !== 0) throw this.failure(tool, status, proc.stderr);
    return Buffer.concat(chunks).toString('utf8');
  }

  /** The tool's stdout as a stream that errors, before it ends, unless the tool exits 0. */
  stream(tool: PostgresTool, args: string[], options: { signal?: AbortSignal } = {}): Readable {
    let proc: ToolProcess | undefined;
    const checked = new Transform({
      transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
        callback(null, chunk);
      },
      flush: (callback: TransformCallback) => {
        void proc!.exited.then((status) => callback(status.code === 0 ? undefined : this.failure(tool, status, proc!.stderr)));
      },
    });
    checked.on('close', () => proc?.stop());
    this.start(tool, args, undefined, options.signal).then(
      (started) => {
        proc = started;
        if (checked.destroyed) return started.stop();
        started.stdout.on('error', (err) => checked.destroy(err));
        started.stdout.pipe(checked);
      },
      (err: unknown) => checked.destroy(err as Error),
    );
    return checked;
  }

  /** Feeds input to the tool's stdin; resolves with its stdout and stderr tail once it exits 0. */
  async feed(tool: PostgresTool, args: string[], input: Readable, options: { signal?: AbortSignal } = {}): Promise<{ stdout: string; stderr: string }> {
    const proc = await this.start(tool, args, input, options.signal);
    const chunks: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => chunks.push(c));
    const [status] = await Promise.all([proc.exited, once(proc.stdout, 'end').catch(() => {})]);
    if (status.code !== 0) throw this.failure(tool, status, proc.stderr);
    return { stdout: Buffer.concat(chunks).toString('utf8'), stderr: proc.stderr.toString() };
  }
}

/**
 * Direct mode: the tools run here and connect to a URL. The password travels in PGPASSWORD, never on the
 * command line (where `ps` shows it): one written into the URL is taken out of it first.
 */
export class LocalRunner extends PostgresRunner {
  readonly label: string;
  private readonly url: string;
  private readonly password?: Secret;
  constructor(
    private readonly options: { url: string; password?: Secret; psql?: string; pgDumpall?: string; stderrBytes?: number },
  ) {
    super();
    const split = splitPassword(options.url);
    this.url = split.url;
    this.password = options.password ?? (split.password === undefined ? undefined : new Secret(split.password, 'the connection URL'));
    const u = new URL(this.url);
    this.label = u.host ? `${u.protocol}//${u.host}` : `${u.protocol}//${u.searchParams.get('host') ?? 'localhost'}`;
  }

  binary(tool: PostgresTool): string {
    return (tool === 'psql' ? this.options.psql : this.options.pgDumpall) ?? tool;
  }

  protected async start(tool: PostgresTool, args: string[], stdin: Readable | undefined, signal?: AbortSignal): Promise<ToolProcess> {
    const connect = tool === 'psql' ? ['-X', '--no-password', '--dbname', this.url] : ['--no-password', '--dbname', this.url];
    const isVersion = args[0] === '--version';
    const child = spawn(this.binary(tool), isVersion ? args : [...connect, ...args], {
      env: libpqEnv({ url: this.url, password: this.password }),
      stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      signal,
    });
    const stderr = new TailBuffer(this.options.stderrBytes ?? 64 * 1024);
    child.stderr!.on('data', (c: Buffer) => stderr.push(c));
    const exited = new Promise<ExitStatus>((resolve) => {
      child.on('error', (error) => resolve({ code: null, error }));
      child.on('close', (code, sig) => resolve({ code, signal: sig }));
    });
    if (stdin && child.stdin) {
      // EPIPE when the tool exits early is reported through its exit status instead.
      child.stdin.on('error', () => {});
      pipeline(stdin, child.stdin).catch(() => {});
    }
    return {
      stdout: child.stdout!,
      stderr,
      exited,
      stop: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      },
    };
  }
}
