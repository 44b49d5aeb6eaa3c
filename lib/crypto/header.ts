import type { Check } from '../catalog/manifest.js';

const VERSION_LINE = 'age-encryption.org/v1\n';
/** A header larger than this is not one we wrote (one stanza per recipient, ~100 bytes each). */
export const MAX_HEADER_BYTES = 64 * 1024;
const NONCE_BYTES = 16;
const TAG_BYTES = 16;
const CHUNK_WITH_TAG = 64 * 1024 + TAG_BYTES;
const B64 = /^[A-Za-z0-9+/]*$/;

export interface AgeHeader {
  /** Bytes up to and including the MAC line. */
  length: number;
  stanzas: Array<{ type: string; args: string[] }>;
}

/** Parses an age header from the start of a file; a string says why it is not one. */
export function parseAgeHeader(start: Buffer): AgeHeader | string {
  const text = start.subarray(0, MAX_HEADER_BYTES).toString('latin1');
  if (!text.startsWith(VERSION_LINE)) return 'does not start with the age v1 header';
  let at = VERSION_LINE.length;
  const stanzas: AgeHeader['stanzas'] = [];
  for (;;) {
    const end = text.indexOf('\n', at);
    if (end < 0) return 'the age header is not terminated';
    const line = text.slice(at, end);
    at = end + 1;
    if (line.startsWith('--- ')) {
      const mac = line.slice(4);
      if (mac.length !== 43 || !B64.test(mac)) return 'the age header MAC is malformed';
      if (stanzas.length === 0) return 'the age header has no recipient stanza';
      return { length: at, stanzas };
    }
    if (!line.startsWith('-> ')) return `unexpected line in the age header: ${JSON.stringify(line.slice(0, 40))}`;
    const [type = '', ...args] = line.slice(3).split(' ');
    if (type === '') return 'an age header stanza has no type';
    // The body: full 64-column base64 lines, ended by a shorter one.
    for (;;) {
      const bodyEnd = text.indexOf('\n', at);
      if (bodyEnd < 0) return 'an age header stanza is not terminated';
      const body = text.slice(at, bodyEnd);
      at = bodyEnd + 1;
      if (!B64.test(body) || body.length > 64) return 'an age header stanza body is not base64';
      if (body.length < 64) break;
    }
    stanzas.push({ type, args });
  }
}

/** Whether a payload of this many bytes (after the header) can be an age STREAM: a nonce, then whole chunks. */
export function payloadSizeProblem(payloadBytes: number): string | undefined {
  const stream = payloadBytes - NONCE_BYTES;
  if (stream < TAG_BYTES) return `the payload is ${payloadBytes} bytes, too short for an age stream`;
  const last = stream % CHUNK_WITH_TAG;
  if (stream > TAG_BYTES && last > 0 && last <= TAG_BYTES) return `the payload is ${payloadBytes} bytes, which no age stream has (truncated or padded)`;
  return undefined;
}

/**
 * What can be checked without the identity: a well-formed header, one X25519 stanza per recipient
 * the manifest names, and a payload length an age stream can have. Bytes changed inside the
 * payload are caught by the ciphertext's sha256.
 */
export function ageHeaderCheck(start: Buffer, totalBytes: number, recipients: number): Check {
  const header = parseAgeHeader(start);
  if (typeof header === 'string') return { name: 'age header', ok: false, detail: header };
  const x25519 = header.stanzas.filter((s) => s.type === 'X25519').length;
  if (header.stanzas.length !== recipients) {
    return { name: 'age header', ok: false, detail: `${header.stanzas.length} recipient stanzas, the manifest names ${recipients}` };
  }
  const size = payloadSizeProblem(totalBytes - header.length);
  if (size) return { name: 'age header', ok: false, detail: size };
  return { name: 'age header', ok: true, detail: `age v1, ${recipients} ${recipients === 1 ? 'recipient' : 'recipients'}${x25519 === recipients ? ' (X25519)' : ''}, payload length valid` };
}
