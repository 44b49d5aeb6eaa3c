/**
 * When a restore checks the backup's sha256: `during` the restore (one read; a mismatch drops what the
 * restore created), `first` in a read of its own before the destination is touched, or `recent`: rely
 * on a passed verification of the same bytes (still checked during), else first. Its own module, so
 * the CLI's option parser does not load the restore.
 */
export const VERIFY_WHEN = ['during', 'first', 'recent'] as const;
export type VerifyWhen = (typeof VERIFY_WHEN)[number];
