import { Transform, type TransformCallback } from 'node:stream';
import { DUMPALL_TRAILER } from './dumpall.js';

/*
 * Cuts one database's section out of pg_dumpall's plain-text output, line by line, without holding more
 * than one line (and not even that inside COPY data). Lines are handled as latin1 strings, which map
 * bytes 1:1, so whatever encoding the dump is in passes through unchanged; names are compared as the
 * latin1 reading of their UTF-8 bytes.
 */

/** Longest database or role name PostgreSQL keeps (NAMEDATALEN - 1), in bytes. */
export const MAX_IDENTIFIER_BYTES = 63;

export class DatabaseNotInDumpError extends Error {
  override name = 'DatabaseNotInDumpError';
  constructor(
    readonly database: string,
    readonly databases: string[],
  ) {
    super(`database "${database}" is not in this dump (it has: ${databases.join(', ') || 'none'})`);
  }
}

export class DumpTruncatedError extends Error {
  override name = 'DumpTruncatedError';
}

export class InvalidDatabaseNameError extends Error {
  override name = 'InvalidDatabaseNameError';
}

/** A name we can quote safely in SQL and in psql's \connect: no control characters, at most 63 bytes. */
export function checkDatabaseName(name: string): string {
  if (name === '') throw new InvalidDatabaseNameError('a database name cannot be empty');
  // psql meta-commands end at a newline, and pg_dump refuses such names for the same reason.
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new InvalidDatabaseNameError(`${JSON.stringify(name)} contains control characters`);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_IDENTIFIER_BYTES) throw new InvalidDatabaseNameError(`${JSON.stringify(name)} is ${bytes} bytes; PostgreSQL keeps at most ${MAX_IDENTIFIER_BYTES}`);
  return name;
}

/** SQL identifier, always quoted: correct for any name, keywords included. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The \connect line pg_dump itself writes for a name (appendPsqlMetaConnect), so psql reads it the same way. */
export function psqlConnectLine(name: string): string {
  if (/^[A-Za-z0-9_.]+$/.test(name)) return `\\connect ${quoteIdent(name)}`;
  const connStr = `dbname='${name.replace(/['\\]/g, (c) => `\\${c}`)}'`;
  return `\\encoding SQL_ASCII\n\\connect -reuse-previous=on ${quoteIdent(connStr)}`;
}

const toLatin1 = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
const fromLatin1 = (s: string) => Buffer.from(s, 'latin1').toString('utf8');

/** An identifier as pg_dump's fmtId writes it: bare lowercase, or double-quoted with "" for ". */
const IDENT = String.raw`(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)`;
const LEADING_IDENT = new RegExp(`^${IDENT}`);
const NEWLINE = Buffer.from('\n');
const unquote = (ident: string) => (ident.startsWith('"') ? ident.slice(1, -1).replace(/""/g, '"') : ident);

const DATABASE_HEADER = /^-- Database "(.*)" dump$/;
const TRAILER_LINE = `-- ${DUMPALL_TRAILER}`;
const COPY_START = /^COPY .+ FROM stdin;$/;

const CREATE_ROLE = new RegExp(`^CREATE ROLE (${IDENT});$`);
const ALTER_ROLE = new RegExp(`^ALTER ROLE (${IDENT}) `);
const ROLE_MEMBERSHIP = new RegExp(`^GRANT (${IDENT}) TO (${IDENT})(.*?)(?: GRANTED BY (${IDENT}))?;$`);

// Statements in a database section that name a role; they fail when the role does not exist.
const OWNER_TO = new RegExp(`^ALTER .* OWNER TO (${IDENT});$`);
const SESSION_AUTHORIZATION = new RegExp(`^SET SESSION AUTHORIZATION (${IDENT});$`);
const GRANTEE = new RegExp(`^(?:GRANT|REVOKE|ALTER DEFAULT PRIVILEGES) .* (?:TO|FROM) (${IDENT})(?: WITH GRANT OPTION)?(?: GRANTED BY (${IDENT}))?;$`);
const DEFAULT_PRIVILEGES_FOR = new RegExp(`^ALTER DEFAULT PRIVILEGES FOR ROLE (${IDENT}) `);
const ROLE_IN_DATABASE = new RegExp(`^ALTER ROLE (${IDENT}) IN DATABASE `);

// Statements that name the database itself, up to where its name starts.
const DATABASE_NAMED = [
  /^CREATE DATABASE /,
  /^ALTER DATABASE /,
  /^COMMENT ON DATABASE /,
  /^SECURITY LABEL FOR \S+ ON DATABASE /,
  /^(?:GRANT|REVOKE) .*? ON DATABASE /,
  new RegExp(`^ALTER ROLE ${IDENT} IN DATABASE `),
];

export interface SectionCutOptions {
  /** The database whose section to cut. */
  database: string;
  /** Restore it under this name (checked with checkDatabaseName). */
  renameTo?: string;
  /** Roles present at the destination; omitted, every role counts as present and none is created. */
  existingRoles?: ReadonlySet<string>;
  /** Create the dump's roles that the destination lacks (from the globals), before the section. */
  createMissingRoles?: boolean;
}

export interface SectionCutSummary {
  /** Every database section header seen, in order. */
  databases: string[];
  found: boolean;
  trailer: boolean;
  /** Roles whose CREATE ROLE was passed on. */
  rolesCreated: string[];
  /** Statements dropped because they name a role the destination does not have: role → count. */
  droppedForMissingRole: Record<string, number>;
}

type State = 'globals' | 'skipping' | 'taking' | 'done';

/** Parses the role statements of pg_dumpall's globals part: which roles the dump creates. */
export function createdRole(line: string): string | undefined {
  const m = CREATE_ROLE.exec(line);
  return m ? fromLatin1(unquote(m[1]!)) : undefined;
}

/**
 * A Transform from pg_dumpall text to the SQL restoring one database: the wanted roles' statements from
 * the globals (held until the section is found, so nothing runs for a database that is not there), then
 * exactly that database's section, renamed if asked. Errors at the end if the section or the trailer is
 * missing. `summary` is complete once the stream has ended.
 */
export class DatabaseSectionCutter extends Transform {
  readonly summary: SectionCutSummary = { databases: [], found: false, trailer: false, rolesCreated: [], droppedForMissingRole: {} };
  private state: State = 'globals';
  private readonly target: string;
  private readonly renameTo?: string;
  private readonly existing?: ReadonlySet<string>;
  private readonly created = new Set<string>();
  private heldRoleStatements: string[] = [];
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private inCopy = false;
  /** A COPY data line longer than "\." is already being passed on (or dropped) as it arrives. */
  private copyLineInFlight = false;
  private previousLine = '';
  private heldDash = false;
  private sawCreateDatabase = false;
  private out: Buffer[] = [];

  constructor(private readonly options: SectionCutOptions) {
    super();
    this.target = toLatin1(options.database);
    if (options.renameTo !== undefined) this.renameTo = checkDatabaseName(options.renameTo);
    this.existing = options.existingRoles;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      let start = 0;
      for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
        if (this.copyLineInFlight) {
          if (this.state === 'taking') this.out.push(chunk.subarray(start, nl + 1));
          this.copyLineInFlight = false;
        } else {
          const piece = chunk.subarray(start, nl);
          const line = this.pendingBytes > 0 ? Buffer.concat([...this.pending, piece]) : piece;
          this.pending = [];
          this.pendingBytes = 0;
          this.line(line);
        }
        start = nl + 1;
      }
      if (start < chunk.length) this.partial(chunk.subarray(start));
      this.emit_();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      // A last line without its newline (a COPY line in flight was passed on already).
      if (this.pendingBytes > 0) this.line(Buffer.concat(this.pending));
      this.emit_();
      if (!this.summary.found) return callback(new DatabaseNotInDumpError(this.options.database, this.summary.databases));
      if (!this.summary.trailer) return callback(new DumpTruncatedError(`the dump ends without pg_dumpall's "${DUMPALL_TRAILER}" trailer`));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private emit_(): void {
    if (this.out.length === 0) return;
    this.push(this.out.length === 1 ? this.out[0] : Buffer.concat(this.out));
    this.out = [];
  }

  /** The start of a line whose end has not arrived. Inside COPY data it need not wait: only "\." matters. */
  private partial(bytes: Buffer): void {
    if (this.copyLineInFlight) {
      if (this.state === 'taking') this.out.push(bytes);
      return;
    }
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    if (this.inCopy && this.pendingBytes > 2) {
      if (this.state === 'taking') this.out.push(...this.pending);
      this.pending = [];
      this.pendingBytes = 0;
      this.copyLineInFlight = true;
    }
  }

  private write_(text: string): void {
    this.out.push(Buffer.from(`${text}\n`, 'latin1'));
  }

  private line(bytes: Buffer): void {
    if (this.inCopy) {
      // COPY data passes untouched; it could hold anything, a fake section header included.
      if (bytes.length === 2 && bytes[0] === 0x5c && bytes[1] === 0x2e) this.inCopy = false;
      if (this.state === 'taking') this.out.push(bytes, NEWLINE);
      this.previousLine = '';
      return;
    }
    const line = bytes.toString('latin1');
    const header = this.previousLine === '--' ? DATABASE_HEADER.exec(line) : null;
    if (header) {
      this.summary.databases.push(fromLatin1(header[1]!));
      if (this.state === 'taking') this.state = 'done';
      else if (this.state !== 'done' && header[1] === this.target) this.beginSection(line);
      else if (this.state === 'globals') this.state = 'skipping';
    } else if (this.previousLine === '--' && line === TRAILER_LINE) {
      this.summary.trailer = true;
      if (this.state === 'taking') this.state = 'done';
    } else if (this.state === 'globals') {
      this.globalLine(line);
    } else if (this.state === 'taking') {
      // A "--" may open the next header: it goes out only once a line of this section follows it.
      if (this.heldDash) this.write_('--');
      this.heldDash = line === '--';
      const kept = this.heldDash ? undefined : this.sectionLine(line);
      if (kept !== undefined) this.write_(kept);
    }
    if (COPY_START.test(line)) this.inCopy = true;
    this.previousLine = line;
  }

  private beginSection(header: string): void {
    this.state = 'taking';
    this.summary.found = true;
    for (const statement of this.heldRoleStatements) this.write_(statement);
    this.heldRoleStatements = [];
    this.write_('--');
    this.write_(header);
  }

  private roleAvailable(role: string): boolean {
    return this.existing === undefined || this.existing.has(role) || this.created.has(role);
  }

  /** Globals: only the settings and the statements creating roles the destination lacks, if asked. */
  private globalLine(line: string): void {
    if (line.startsWith('SET ')) return void this.heldRoleStatements.push(line);
    if (!this.options.createMissingRoles || this.existing === undefined) return;
    const role = createdRole(line);
    if (role !== undefined) {
      if (!this.existing.has(role)) {
        this.created.add(role);
        this.summary.rolesCreated.push(role);
        this.heldRoleStatements.push(line);
      }
      return;
    }
    const altered = ALTER_ROLE.exec(line);
    if (altered) {
      // Only roles created here, never existing ones; per-database settings come with the section.
      if (this.created.has(fromLatin1(unquote(altered[1]!))) && !line.includes(' IN DATABASE ')) this.heldRoleStatements.push(line);
      return;
    }
    const membership = ROLE_MEMBERSHIP.exec(line);
    if (membership) {
      const [, granted, member, rest, grantor] = membership.map((g) => g ?? '');
      if (!this.created.has(fromLatin1(unquote(member!))) || !this.roleAvailable(fromLatin1(unquote(granted!)))) return;
      const by = grantor && this.roleAvailable(fromLatin1(unquote(grantor))) ? ` GRANTED BY ${grantor}` : '';
      this.heldRoleStatements.push(`GRANT ${granted} TO ${member}${rest}${by};`);
    }
  }

  /** A line of the wanted section: dropped if it names a missing role, renamed if asked. */
  private sectionLine(line: string): string | undefined {
    const missing = this.missingRoleIn(line);
    if (missing !== undefined) {
      this.summary.droppedForMissingRole[missing] = (this.summary.droppedForMissingRole[missing] ?? 0) + 1;
      return undefined;
    }
    if (this.renameTo === undefined) return line;
    if (line.startsWith('\\connect ')) {
      // Every \connect in a section goes to the section's own database.
      const connect = toLatin1(psqlConnectLine(this.renameTo));
      if (this.sawCreateDatabase) return connect;
      // Sections of built-in databases (postgres) only connect: a new name must be created first.
      this.sawCreateDatabase = true;
      return `CREATE DATABASE ${toLatin1(quoteIdent(this.renameTo))};\n${connect}`;
    }
    return this.renamed(line);
  }

  private renamed(line: string): string {
    for (const prefix of DATABASE_NAMED) {
      const m = prefix.exec(line);
      if (!m) continue;
      const rest = line.slice(m[0].length);
      const name = LEADING_IDENT.exec(rest)?.[0];
      if (name === undefined || unquote(name) !== this.target) return line;
      if (line.startsWith('CREATE DATABASE ')) this.sawCreateDatabase = true;
      return `${m[0]}${toLatin1(quoteIdent(this.renameTo!))}${rest.slice(name.length)}`;
    }
    return line;
  }

  private missingRoleIn(line: string): string | undefined {
    if (this.existing === undefined) return undefined;
    const roles: string[] = [];
    const first = line.charCodeAt(0);
    // Only statements starting with A, G, R or S can name a role: skip the regexes for everything else.
    if (first !== 0x41 && first !== 0x47 && first !== 0x52 && first !== 0x53) return undefined;
    for (const re of [OWNER_TO, SESSION_AUTHORIZATION, DEFAULT_PRIVILEGES_FOR, ROLE_IN_DATABASE]) {
      const m = re.exec(line);
      if (m) roles.push(m[1]!);
    }
    const grant = GRANTEE.exec(line);
    if (grant) roles.push(...grant.slice(1).filter((g): g is string => g !== undefined));
    return roles.map((r) => fromLatin1(unquote(r))).find((r) => !this.roleAvailable(r));
  }
}

/** The roles a dump's globals create, read from the start of the dump text; stops at the first database. */
export async function rolesInGlobals(text: AsyncIterable<Buffer>): Promise<string[]> {
  const roles: string[] = [];
  let rest = '';
  let previous = '';
  for await (const chunk of text) {
    const lines = (rest + chunk.toString('latin1')).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      if (previous === '--' && DATABASE_HEADER.test(line)) return roles;
      const role = createdRole(line);
      if (role !== undefined) roles.push(role);
      previous = line;
    }
  }
  return roles;
}
