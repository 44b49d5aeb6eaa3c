import type { Duplex } from 'node:stream';
import { DeferredSecret } from '../config/secret.js';
import { ageDecrypter, DecryptionError, parseIdentityFile } from './age.js';

interface Encrypted {
  id: string;
  encryption?: { identityFile?: string };
}

/** How a dataset's backups are decrypted here, or why they cannot be (no identity configured, or not readable on this machine). */
export function datasetDecrypter(dataset: Encrypted, override?: string): { stage: () => Duplex } | { unavailable: string } {
  const reference = override ?? dataset.encryption?.identityFile;
  const field = override ? '--identity' : `dataset ${dataset.id}: encryption.identityFile`;
  if (!reference) return { unavailable: `dataset ${dataset.id} has no encryption.identityFile here` };
  let content: string;
  try {
    content = new DeferredSecret(reference, field).resolve().reveal();
  } catch (err) {
    return { unavailable: (err as Error).message };
  }
  try {
    return { stage: ageDecrypter(parseIdentityFile(content), `dataset ${dataset.id}`) };
  } catch (err) {
    return { unavailable: `${field}: ${(err as Error).message}` };
  }
}

/** The decrypting stage where decryption is the job (drill, restore, rekey): no identity is a clear, final error. */
export function requireDecrypter(dataset: Encrypted, purpose: string, override?: string): () => Duplex {
  const decrypter = datasetDecrypter(dataset, override);
  if ('unavailable' in decrypter) throw new DecryptionError(`cannot ${purpose}: the backup is age-encrypted and ${decrypter.unavailable}; set encryption.identityFile (or --identity) to the age identity file`);
  return decrypter.stage;
}

/** The decrypting stage a backup needs: none for plaintext, else the dataset's identity (or a final error). */
export function decrypterFor(dataset: Encrypted, manifest: { artifact: { encryption?: unknown } }, purpose: string, override?: string): (() => Duplex) | undefined {
  return manifest.artifact.encryption ? requireDecrypter(dataset, purpose, override) : undefined;
}
