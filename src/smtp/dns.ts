import { promises as dns } from 'node:dns';

/**
 * DNS for the mail authentication checks. The resolver has the shape mailauth expects
 * (`dns.promises.resolve`), so tests inject a fake one and run offline. Two wrappers:
 *
 * - `cachingResolver`: shares answers (and failures) between messages for a short time, and
 *   concurrent identical look-ups share one query, so a burst of mail from one domain costs one
 *   round of look-ups, and a dead DNS server costs the budget once, not once per message;
 * - `budgetedResolver`: one per message; every look-up fails with ETIMEOUT once the message's
 *   total DNS budget is spent, which mailauth reports as `temperror`.
 */
export type DnsResolver = (name: string, rrtype: string) => Promise<unknown>;

export function timeoutError(name: string, rrtype: string): Error & { code: string } {
  return Object.assign(new Error(`DNS ${rrtype} ${name}: time budget exhausted`), { code: 'ETIMEOUT' });
}

/** The system resolver, one try with a bounded timeout. */
export function systemResolver(timeoutMs: number): DnsResolver {
  const resolver = new dns.Resolver({ timeout: timeoutMs, tries: 1 });
  return (name, rrtype) => resolver.resolve(name, rrtype as 'TXT');
}

interface CacheEntry {
  expires: number;
  value: Promise<unknown>;
}

/** Codes that mean "the name has no such record": cached like an answer. */
const NEGATIVE = new Set(['ENOTFOUND', 'ENODATA']);

export function cachingResolver(
  inner: DnsResolver,
  opts: { ttlMs?: number; failureTtlMs?: number; maxEntries?: number; now?: () => number } = {},
): DnsResolver {
  const ttl = opts.ttlMs ?? 60_000;
  const failureTtl = opts.failureTtlMs ?? 15_000;
  const max = opts.maxEntries ?? 10_000;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, CacheEntry>();
  return (name, rrtype) => {
    const key = `${rrtype} ${name.toLowerCase()}`;
    const hit = cache.get(key);
    if (hit && hit.expires > now()) return hit.value;
    if (cache.size >= max) cache.delete(cache.keys().next().value!);
    const value = inner(name, rrtype);
    // In flight: shared until it settles; then kept for the TTL of its kind.
    const entry: CacheEntry = { expires: Number.POSITIVE_INFINITY, value };
    cache.set(key, entry);
    value.then(
      () => (entry.expires = now() + ttl),
      (err: { code?: string }) => (entry.expires = now() + (NEGATIVE.has(err?.code ?? '') ? ttl : failureTtl)),
    );
    return value;
  };
}

/** Fails every look-up that would end after `deadline` (epoch ms) with ETIMEOUT. */
export function budgetedResolver(inner: DnsResolver, deadline: number, now: () => number = Date.now): DnsResolver {
  return (name, rrtype) => {
    const left = deadline - now();
    if (left <= 0) return Promise.reject(timeoutError(name, rrtype));
    if (!Number.isFinite(left)) return inner(name, rrtype);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(timeoutError(name, rrtype)), left);
      inner(name, rrtype).then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  };
}
