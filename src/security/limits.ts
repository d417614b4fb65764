/**
 * Rate and failure limits. The decision is a pure function of the state and the clock
 * (`takeToken`); the classes only keep one state per key, with the clock injected for tests.
 */

export interface Bucket {
  tokens: number;
  at: number;
}

/** Token bucket: `perWindow` events per `windowMs`, refilled continuously, bursts up to `perWindow`. */
export function takeToken(bucket: Bucket | undefined, now: number, perWindow: number, windowMs: number): { allowed: boolean; bucket: Bucket } {
  const refill = bucket ? ((now - bucket.at) * perWindow) / windowMs : perWindow;
  const tokens = Math.min(perWindow, (bucket?.tokens ?? 0) + Math.max(0, refill));
  return tokens >= 1 ? { allowed: true, bucket: { tokens: tokens - 1, at: now } } : { allowed: false, bucket: { tokens, at: now } };
}

const SWEEP_EVERY = 1024;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private calls = 0;

  constructor(
    private readonly perWindow: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one event for `key`; false when over the rate. */
  hit(key: string): boolean {
    const now = this.now();
    const { allowed, bucket } = takeToken(this.buckets.get(key), now, this.perWindow, this.windowMs);
    this.buckets.set(key, bucket);
    if (++this.calls % SWEEP_EVERY === 0) this.sweep(now);
    return allowed;
  }

  /** Drops buckets that have refilled completely: they are the same as no bucket. */
  private sweep(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) * this.perWindow) / this.windowMs >= this.perWindow) this.buckets.delete(key);
    }
  }
}

/** Failures inside a sliding window; `blocked` once `max` of them are in it. */
export function pruneFailures(times: number[], now: number, windowMs: number): number[] {
  return times.filter((t) => t > now - windowMs);
}

export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  blocked(key: string): boolean {
    const recent = pruneFailures(this.failures.get(key) ?? [], this.now(), this.windowMs);
    if (recent.length === 0) this.failures.delete(key);
    else this.failures.set(key, recent);
    return recent.length >= this.max;
  }

  fail(key: string): void {
    const recent = pruneFailures(this.failures.get(key) ?? [], this.now(), this.windowMs);
    recent.push(this.now());
    this.failures.set(key, recent.slice(-this.max));
  }

  /** Takes back one failure: an attempt counted before its outcome was known (see countAttempt) that succeeded. */
  forgive(key: string): void {
    const recent = this.failures.get(key);
    recent?.pop();
    if (recent?.length === 0) this.failures.delete(key);
  }

  clear(key: string): void {
    this.failures.delete(key);
  }
}

/**
 * Counts a password attempt as a failure for each key before the password is checked, so attempts
 * made at the same time (a batch of logins, parallel connections) cannot all pass `blocked` first.
 * Null when a key is already blocked. `succeeded` clears the account's failures and takes back the
 * attempt from the others (a client's own success does not wipe the failures it made on other
 * accounts); `abandoned` takes the attempt back where the check itself could not run.
 */
export function countAttempt(limits: { limiter: FailureLimiter; key: string; resetOnSuccess: boolean }[]): { succeeded(): void; abandoned(): void } | null {
  if (limits.some(({ limiter, key }) => limiter.blocked(key))) return null;
  for (const { limiter, key } of limits) limiter.fail(key);
  return {
    succeeded: () => limits.forEach(({ limiter, key, resetOnSuccess }) => (resetOnSuccess ? limiter.clear(key) : limiter.forgive(key))),
    abandoned: () => limits.forEach(({ limiter, key }) => limiter.forgive(key)),
  };
}

/** A small map whose entries expire; for look-ups repeated by every transaction (local domains, mailboxes). */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires > this.now()) return e.value;
    this.entries.delete(key);
    return undefined;
  }

  set(key: string, value: V): void {
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, expires: this.now() + this.ttlMs });
  }
}

/** Loopback clients (local tools, the reverse proxy, tests) are exempt from rate limits unless RATE_LIMIT_LOOPBACK is set. */
export const isLoopback = (ip: string): boolean => /^127\./.test(ip) || ip === '::1' || /^::ffff:127\./i.test(ip);
