import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';

const REDACTED = '[secret]';

/**
 * A resolved secret. It prints, logs and serialises as "[secret]"; only reveal() gives the value,
 * so a config object can be logged or dumped without leaking credentials.
 */
export class Secret {
  readonly #value: string;
  constructor(
    value: string,
    /** Where it came from, e.g. "env:PGPASSWORD"; safe to show. */
    readonly source: string,
  ) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [inspect.custom](): string {
    return `Secret(${this.source})`;
  }
}

const REFERENCE = /^\$\{(env|file):([^}]+)\}$/;

export function isSecretReference(value: unknown): value is string {
  return typeof value === 'string' && REFERENCE.test(value);
}

/** Resolves "${env:NAME}" or "${file:/path}". Throws an Error naming the variable or file, never the value. */
export function resolveSecretReference(reference: string, env: NodeJS.ProcessEnv = process.env): Secret {
  const match = REFERENCE.exec(reference);
  if (!match) throw new Error('must be a ${env:NAME} or ${file:/path} reference');
  const [, kind, name] = match as unknown as [string, 'env' | 'file', string];
  if (kind === 'env') {
    const value = env[name];
    if (value === undefined || value === '') throw new Error(`environment variable ${name} is not set`);
    return new Secret(value, `env:${name}`);
  }
  let content: string;
  try {
    content = readFileSync(name, 'utf8');
  } catch (err) {
    throw new Error(`secret file ${name} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  // Files written by tools usually end with a newline that is not part of the secret.
  const value = content.replace(/\r?\n$/, '');
  if (value === '') throw new Error(`secret file ${name} is empty`);
  return new Secret(value, `file:${name}`);
}

/**
 * A secret resolved only where it is used: an age identity is needed where something decrypts (a
 * drill, a restore), not where backups are written, so one config serves both. A plain absolute path
 * means ${file:path}.
 */
export class DeferredSecret {
  constructor(
    readonly reference: string,
    /** The config field, for errors: "datasets[0].encryption.identityFile". */
    readonly field: string,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}
  resolve(): Secret {
    try {
      return resolveSecretReference(this.reference.startsWith('/') ? `\${file:${this.reference}}` : this.reference, this.env);
    } catch (err) {
      throw new Error(`${this.field}: ${(err as Error).message}`);
    }
  }
  toString(): string {
    return this.reference;
  }
  toJSON(): string {
    return this.reference;
  }
}
