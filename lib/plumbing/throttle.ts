/**
 * Failed logins per client address: after `limit` failures within `windowMs`, further attempts are
 * refused (429) until the oldest failure leaves the window. A success does not reset the count, so a
 * known viewer password cannot be used to keep guessing the operator's. Memory is bounded by
 * `maxClients` (the client that failed longest ago is forgotten first).
 */
export class LoginThrottle {
  readonly #failures = new Map<string, number[]>();

  constructor(
    private readonly options: { limit: number; windowMs: number; maxClients: number; now?: () => number } = { limit: 10, windowMs: 10 * 60_000, maxClients: 10_000 },
  ) {}

  #now(): number {
    return (this.options.now ?? Date.now)();
  }

  #recent(client: string): number[] {
    const since = this.#now() - this.options.windowMs;
    const kept = (this.#failures.get(client) ?? []).filter((at) => at > since);
    if (kept.length === 0) this.#failures.delete(client);
    else this.#failures.set(client, kept);
    return kept;
  }

  /** Seconds until `client` may try again, or 0 when it may now. */
  retryAfterSeconds(client: string): number {
    const recent = this.#recent(client);
    if (recent.length < this.options.limit) return 0;
    return Math.max(1, Math.ceil((recent[recent.length - this.options.limit]! + this.options.windowMs - this.#now()) / 1000));
  }

  failed(client: string): void {
    const recent = this.#recent(client);
    this.#failures.delete(client); // re-inserted last: the Map's order is the eviction order
    this.#failures.set(client, [...recent, this.#now()]);
    if (this.#failures.size > this.options.maxClients) this.#failures.delete(this.#failures.keys().next().value!);
  }
}
