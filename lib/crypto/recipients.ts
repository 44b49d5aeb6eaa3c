import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';

// age-encryption (with its post-quantum crypto) loads only when a config names a recipient: the config
// schema calls this, and most configs encrypt nothing. Synchronous, as zod's refinements are.
let age: typeof import('age-encryption') | undefined;
const ageEncryption = () => (age ??= createRequire(import.meta.url)('age-encryption') as typeof import('age-encryption'));

/**
 * Why a configured age recipient cannot be used, or undefined when it can. The library's own parser
 * decides, so what passes here is exactly what the encrypting stage accepts. Never echoes the value:
 * someone may paste a private key by mistake.
 */
export function recipientProblem(recipient: string): string | undefined {
  if (/^AGE-SECRET-KEY-/i.test(recipient.trim())) {
    return 'is an age identity (a private key); the config takes only public keys: `age-keygen -y <identity file>` prints the recipient, and the identity belongs in encryption.identityFile where something decrypts';
  }
  if (!recipient.startsWith('age1')) return 'must be an age recipient (a public key starting with age1…)';
  const { Encrypter } = ageEncryption();
  try {
    new Encrypter().addRecipient(recipient);
    return undefined;
  } catch (err) {
    return `is not a valid age recipient (${(err as Error).message})`;
  }
}

/** A short, stable name for a recipient, for manifests and messages: the first 16 hex digits of its sha256. */
export function recipientFingerprint(recipient: string): string {
  return createHash('sha256').update(recipient).digest('hex').slice(0, 16);
}
