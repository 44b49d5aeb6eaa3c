import { Duplex, pipeline, type Readable } from 'node:stream';
import { Decrypter, Encrypter } from 'age-encryption';
import { PermanentError } from '../../queue/errors.js';
import { recipientFingerprint, recipientProblem } from './recipients.js';

/** The encryption could not be set up: nothing was (or may be) written. Retrying cannot fix a config. */
export class EncryptionSetupError extends PermanentError {
  override name = 'EncryptionSetupError';
}

/** No configured identity opens the backup, or none is available here. */
export class DecryptionError extends PermanentError {
  override name = 'DecryptionError';
}

export interface AgeEncryption {
  scheme: 'age';
  /** recipientFingerprint of each recipient the artifact is encrypted to. */
  recipients: string[];
}

/** Extension of an age-encrypted artifact. */
export const AGE_SUFFIX = '.age';

/**
 * The encrypting stage, built before anything is read or uploaded: a recipient that does not parse
 * fails here (fail closed), never halfway through a stream or, worse, by writing plaintext.
 */
export function ageEncrypter(recipients: readonly string[], what: string): { stage: () => Duplex; encryption: AgeEncryption } {
  if (recipients.length === 0) throw new EncryptionSetupError(`${what}: encryption is configured without recipients`);
  const encrypter = new Encrypter();
  recipients.forEach((recipient, index) => {
    const problem = recipientProblem(recipient);
    if (problem) throw new EncryptionSetupError(`${what}: encryption.recipients[${index}] ${problem}; nothing was uploaded`);
    encrypter.addRecipient(recipient);
  });
  return {
    stage: () => webTransform((input) => encrypter.encrypt(input)),
    encryption: { scheme: 'age', recipients: recipients.map(recipientFingerprint) },
  };
}

/** The decrypting stage: the ciphertext in, the plaintext out; fails before any output when no identity matches. */
export function ageDecrypter(identities: readonly string[], what: string): () => Duplex {
  if (identities.length === 0) throw new DecryptionError(`${what}: no age identity to decrypt with`);
  const decrypter = new Decrypter();
  identities.forEach((identity, index) => {
    try {
      decrypter.addIdentity(identity);
    } catch {
      // The parser's message may quote the key itself: name the entry only.
      throw new DecryptionError(`${what}: identity ${index + 1} in the identity file is not a valid age identity (AGE-SECRET-KEY-1…)`);
    }
  });
  return () =>
    webTransform(
      async (input) => {
        try {
          return await decrypter.decrypt(input);
        } catch (err) {
          throw new DecryptionError(`${what}: cannot decrypt: ${(err as Error).message}`);
        }
      },
      // A chunk whose tag fails (or a cut-off stream) is damaged ciphertext: a finding about the backup.
      (err) => (err instanceof DecryptionError ? err : new DecryptionError(`${what}: the ciphertext is damaged (${(err as Error).message})`)),
    );
}

/**
 * A Node stream stage around the library's web-stream transform. Pull-based on both sides
 * (ReadableStream.from, for await), so backpressure holds and memory stays bounded.
 */
type WebStream = ReadableStream<Uint8Array>;
function webTransform(transform: (input: WebStream) => Promise<WebStream>, outputError: (err: unknown) => unknown = (err) => err): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    let sourceFailed = false;
    const input = (async function* () {
      try {
        yield* source;
      } catch (err) {
        sourceFailed = true;
        throw err;
      }
    })();
    const output = await transform((ReadableStream as unknown as { from(source: AsyncIterable<Uint8Array>): WebStream }).from(input));
    try {
      for await (const chunk of output as unknown as AsyncIterable<Uint8Array>) yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    } catch (err) {
      // A read error upstream stays what it is (retryable); only the stage's own failures are mapped.
      throw sourceFailed ? err : outputError(err);
    }
  });
}

/** The identities in an age identity file (age-keygen's output: comments and AGE-SECRET-KEY-1… lines). */
export function parseIdentityFile(content: string): string[] {
  return content
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** A stream through a stage; pipeline() destroys both sides on an error of either, so a reader never waits on a dead one. */
export function through(input: Readable, stage: Duplex): Readable {
  return pipeline(input, stage, () => {});
}

/** The file name of what was encrypted: "x.zip.age" or, after a rekey, "x.zip.<8 hex>.age" → "x.zip". */
export function plaintextName(name: string): string {
  return name.replace(/(\.[0-9a-f]{8})?\.age$/, '');
}
