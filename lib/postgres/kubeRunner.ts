import { Readable } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Secret } from '../config/secret.js';
import { execInPod } from '../kube/exec.js';
import { PostgresRunner, type PostgresTool, type ToolProcess } from './runner.js';

export type PodPassword = { fromPodEnv: string } | { viaStdin: Secret } | undefined;

/** Password line first, then the caller's input; psql's input ends with \q so it never waits on stdin. */
async function* stdinFor(password: Secret | undefined, input: Readable | undefined, tool: PostgresTool): AsyncIterable<Buffer> {
  if (password) yield Buffer.from(`${password.reveal()}\n`);
  if (input) for await (const chunk of input) yield chunk as Buffer;
  if (tool === 'psql' && input) yield Buffer.from('\n\\q\n');
}

/**
 * Kubernetes mode: the tools run inside the server's pod, so their version always matches the server.
 * The password never appears in a command line (which the API server may log): it comes from the pod's
 * own environment, or is written to the command's stdin.
 */
export class KubeRunner extends PostgresRunner {
  readonly label: string;
  constructor(
    private readonly kc: KubeConfig,
    private readonly target: { namespace: string; pod: string; container: string; host?: string; port?: number; user: string; database?: string },
    private readonly password: PodPassword,
  ) {
    super();
    this.label = `pod ${target.namespace}/${target.pod}`;
  }

  protected async start(tool: PostgresTool, args: string[], stdin: Readable | undefined, signal?: AbortSignal): Promise<ToolProcess> {
    const { host, port, user, database } = this.target;
    // Without host/port the tools use the container's own socket and PGHOST/PGPORT.
    const connect = [...(host ? ['-h', host] : []), ...(port ? ['-p', String(port)] : []), '-U', user, '--no-password'];
    if (tool === 'psql') connect.unshift('-X'), connect.push('-d', database ?? 'postgres');
    const argv = args[0] === '--version' ? [tool, ...args] : [tool, ...connect, ...args];
    // Arguments go to the shell as "$@", never spliced into the script: no quoting to get wrong.
    let prelude = '';
    let secret: Secret | undefined;
    if (this.password && 'fromPodEnv' in this.password) prelude = `PGPASSWORD="$${this.password.fromPodEnv}"; export PGPASSWORD; `;
    else if (this.password && 'viaStdin' in this.password) {
      prelude = 'IFS= read -r PGPASSWORD; export PGPASSWORD; ';
      secret = this.password.viaStdin;
    }
    const needsStdin = secret !== undefined || stdin !== undefined;
    const input = needsStdin ? Readable.from(stdinFor(secret, stdin, tool)) : undefined;
    return execInPod(this.kc, this.target, ['sh', '-c', `${prelude}exec "$@"`, 'sh', ...argv], input, signal);
  }
}
