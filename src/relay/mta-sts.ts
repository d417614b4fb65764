import https from 'node:https';
import type { LookupFunction } from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { mtaSts, type MtaStsDoc } from '../../projections/mta-sts.js';
import type { Meta } from '../events/envelope.js';
import type { Store } from '../store/port.js';

/**
 * MTA-STS (RFC 8461): a recipient domain publishes, over HTTPS, which MX hosts may receive its
 * mail and that they must be reached over verified TLS. The relay looks the policy up before it
 * delivers straight to the domain's MX; `enforce` then allows only matching hosts, over TLS with a
 * valid certificate, and a delivery that cannot meet it is deferred (a temporary failure), never
 * sent in cleartext. `testing` only logs what enforce would have refused.
 */

export interface MtaStsPolicy {
  mode: 'enforce' | 'testing' | 'none';
  /** MX host patterns: a host name, or `*.` and a domain (one more label on the left). */
  mx: string[];
  /** Seconds the policy may be cached. */
  maxAge: number;
}

/** The longest `max_age` RFC 8461 allows (about a year). */
const MAX_AGE_LIMIT = 31_557_600;
/** A policy body larger than this is refused (RFC 8461 §3.3 suggests 64 KiB). */
const MAX_POLICY_BYTES = 64 * 1024;

/** Parses a policy body (RFC 8461 §3.2); throws saying what is wrong with it. */
export function parsePolicy(text: string): MtaStsPolicy {
  const fields = new Map<string, string[]>();
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    fields.set(key, [...(fields.get(key) ?? []), line.slice(colon + 1).trim()]);
  }
  const one = (key: string): string | undefined => fields.get(key)?.[0];
  if (one('version') !== 'STSv1') throw new Error(`version is ${one('version') ?? 'missing'}, not STSv1`);
  const mode = one('mode');
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') throw new Error(`mode is ${mode ?? 'missing'}, not enforce, testing or none`);
  const maxAge = Number(one('max_age'));
  if (!/^\d{1,10}$/.test(one('max_age') ?? '') || maxAge > MAX_AGE_LIMIT) throw new Error(`max_age is ${one('max_age') ?? 'missing'}, not 0 to ${MAX_AGE_LIMIT} seconds`);
  const mx = (fields.get('mx') ?? []).map((p) => p.toLowerCase().replace(/\.$/, '')).filter(Boolean);
  if (mode !== 'none' && mx.length === 0) throw new Error('it names no mx');
  return { mode, mx, maxAge };
}

/** Whether MX host `host` matches policy pattern `pattern` (RFC 8461 §4.1). */
export function mxMatches(pattern: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  if (!pattern.startsWith('*.')) return h === pattern;
  const dot = h.indexOf('.');
  return dot > 0 && h.slice(dot + 1) === pattern.slice(2);
}

/** The policy id of a domain's `_mta-sts` TXT records; null when it has no (single, valid) one. */
export function policyId(records: string[][]): string | null {
  const sts = records.map((chunks) => chunks.join('')).filter((r) => /^v=STSv1\s*(;|$)/.test(r));
  if (sts.length !== 1) return null;
  const id = /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(;|$)/.exec(sts[0]!);
  return id ? id[1]! : null;
}

export interface MtaStsSources {
  /** TXT lookups, as `dns.promises.resolveTxt`. */
  resolveTxt(name: string): Promise<string[][]>;
  /** The policy text of `domain`, from https://mta-sts.<domain>/.well-known/mta-sts.txt; `signal` abandons it. */
  fetchPolicy(domain: string, signal?: AbortSignal): Promise<string>;
}

/**
 * Fetches policies over HTTPS: the certificate must be valid for mta-sts.<domain>, the answer a
 * 200 of text/plain (no redirect), at most 64 KiB, all within `timeoutMs`. `port` and `lookup`
 * are for tests; `ca` adds trusted authorities (RELAY_TLS_CA).
 */
export function httpsPolicyFetcher(opts: { timeoutMs: number; ca?: string; port?: number; lookup?: LookupFunction }): (domain: string, signal?: AbortSignal) => Promise<string> {
  return (domain, signal) =>
    new Promise((resolve, reject) => {
      const host = `mta-sts.${domain}`;
      const req = https.get(
        {
          host,
          servername: host,
          port: opts.port ?? 443,
          path: '/.well-known/mta-sts.txt',
          // A deadline for the whole fetch, not only for silences: a server that drips bytes stops here too.
          signal: AbortSignal.any([AbortSignal.timeout(opts.timeoutMs), ...(signal ? [signal] : [])]),
          ...(opts.ca ? { ca: [...tls.rootCertificates, opts.ca] } : {}),
          ...(opts.lookup ? { lookup: opts.lookup } : {}),
          agent: false,
        },
        (res) => {
          const type = res.headers['content-type'] ?? '';
          if (res.statusCode !== 200 || !/^text\/plain\b/i.test(type)) {
            res.resume();
            return reject(new Error(`${host} answered ${res.statusCode} ${type}`.trim()));
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_POLICY_BYTES) req.destroy(new Error(`the policy at ${host} is larger than ${MAX_POLICY_BYTES} bytes`));
            else chunks.push(c);
          });
          res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
          res.on('error', reject);
        },
      );
      req.on('error', (error) => reject(error.name === 'AbortError' && !signal?.aborted ? new Error(`${host} did not answer within ${opts.timeoutMs} ms`) : error));
    });
}

type Cached = { id: string; policy: MtaStsPolicy; fetchedAt: number; expiresAt: number };

/** Where fetched policies are kept beyond this process (the log, see `storePolicyArchive`). */
export interface PolicyArchive {
  load(domain: string): Promise<{ id: string; policy: MtaStsPolicy; fetchedAt: number } | null>;
  save(domain: string, fetched: { id: string; policy: MtaStsPolicy }): Promise<void>;
}

/**
 * Policies kept in the log (`MtaStsPolicyFetched`) and read back from the `mta_sts` view, so a
 * restarted relay, or another instance, holds a domain to its policy until max_age runs out.
 */
export function storePolicyArchive(store: Store, actor: string): PolicyArchive {
  return {
    async load(domain) {
      const doc = (await store.views.get(mtaSts.spec.name, domain)) as MtaStsDoc | null;
      return doc && { id: doc.policyId, policy: { mode: doc.mode, mx: doc.mx, maxAge: doc.maxAge }, fetchedAt: Date.parse(doc.fetchedAt) };
    },
    async save(domain, { id, policy }) {
      const meta: Meta = { correlationId: uuidv7(), causationId: null, actor: { kind: 'relay', id: actor } };
      await store.events.append(`mta-sts-${domain}`, [{ type: 'MtaStsPolicyFetched', data: { domain, policyId: id, ...policy } }], { expectedVersion: 'any', meta });
    },
  };
}

const noRecord = (error: unknown): boolean => {
  const code = error && typeof error === 'object' && 'code' in error ? String(error.code) : '';
  return code === 'ENODATA' || code === 'ENOTFOUND';
};

/** A fetch that failed is not tried again for the same id before this (RFC 8461 §3.3 suggests at least 5 minutes). */
const FETCH_BACKOFF_MS = 5 * 60_000;
/** A policy in use is fetched again after this, at most, so it never simply runs out while mail flows (RFC 8461 §10.2). */
const REFRESH_AFTER_MS = 24 * 3600_000;
/** Domains whose policies are kept; beyond, the one unused longest goes. */
const MAX_DOMAINS = 10_000;

/** `work`, unless `signal` aborts first (its reason is thrown) or `ms` pass (a timeout error). */
async function bounded<T>(work: Promise<T>, ms: number, signal: AbortSignal | undefined, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
        onAbort = () => reject(signal!.reason);
        if (signal?.aborted) onAbort();
        else signal?.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * The policies of recipient domains, cached for their max_age in this process; on a domain's
 * first use it also takes the policy kept in the log (`archive`), if it is still in force. A domain's TXT
 * record is looked up on each delivery; the policy is fetched again when its id changes, and once
 * a day while it is in use. A policy that cannot be fetched, or a TXT lookup that fails, leaves
 * the cached policy in force while it lasts (an attacker who blocks the fetch must not turn
 * enforce off); without one, the domain has no policy (RFC 8461 §5). Lookups and fetches are
 * bounded by `timeoutMs` and by the caller's signal.
 */
export class MtaStsPolicies {
  /** In order of last use, oldest first. */
  private readonly cache = new Map<string, Cached>();
  /** When a fetch of a domain's policy id last failed. */
  private readonly failed = new Map<string, number>();
  /** Domains whose kept policy this process has looked for. */
  private readonly archiveRead = new Set<string>();

  constructor(
    private readonly sources: MtaStsSources,
    private readonly logger: Logger,
    private readonly timeoutMs: number,
    private readonly opts: { now?: () => number; archive?: PolicyArchive } = {},
  ) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** The policy of `domain` (null: none, or not known now); throws only the signal's reason when it aborts. */
  async policyFor(domain: string, signal?: AbortSignal): Promise<MtaStsPolicy | null> {
    return (await this.lookup(domain, signal)).policy;
  }

  /**
   * The policy of `domain`, and whether the answer is sure: `known` false when a lookup or fetch
   * failed (or is waiting to be tried again) and no valid policy is kept, so the domain may have
   * one. Ordinary mail goes on without one then; mail that requires one waits.
   */
  async lookup(domain: string, signal?: AbortSignal): Promise<{ policy: MtaStsPolicy | null; known: boolean }> {
    const key = domain.toLowerCase();
    if (key.startsWith('[')) return { policy: null, known: true }; // an address literal has no DNS name to publish one
    if (this.opts.archive && !this.cache.has(key) && !this.archiveRead.has(key)) {
      // First use in this process: what an earlier one (or another instance) fetched still holds.
      this.archiveRead.add(key);
      if (this.archiveRead.size > MAX_DOMAINS) this.archiveRead.delete(this.archiveRead.values().next().value!);
      try {
        const kept = await bounded(this.opts.archive.load(key), this.timeoutMs, signal, 'reading the kept MTA-STS policy');
        if (kept) this.remember(key, { ...kept, expiresAt: kept.fetchedAt + kept.policy.maxAge * 1000 });
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        this.logger.warn({ domain: key, err: error }, 'MTA-STS: the kept policy could not be read');
      }
    }
    const cached = this.cache.get(key);
    const valid = cached && cached.expiresAt > this.now() ? cached : null;
    if (valid) {
      this.cache.delete(key);
      this.cache.set(key, valid);
    }
    let id: string | null;
    try {
      id = policyId(await bounded(this.sources.resolveTxt(`_mta-sts.${key}`), this.timeoutMs, signal, 'the MTA-STS TXT lookup'));
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (noRecord(error)) return { policy: valid?.policy ?? null, known: true };
      this.logger.info({ domain: key, err: error }, 'MTA-STS: TXT lookup failed');
      return { policy: valid?.policy ?? null, known: valid !== null };
    }
    if (id === null) return { policy: valid?.policy ?? null, known: true };
    const fresh = valid?.id === id && this.now() - valid.fetchedAt < Math.min(REFRESH_AFTER_MS, (valid.policy.maxAge * 1000) / 2);
    const failedAt = this.failed.get(`${key} ${id}`);
    if (fresh || (failedAt !== undefined && this.now() - failedAt < FETCH_BACKOFF_MS)) return { policy: valid?.policy ?? null, known: valid !== null };
    try {
      const policy = parsePolicy(await bounded(this.sources.fetchPolicy(key, signal), this.timeoutMs, signal, 'the MTA-STS policy fetch'));
      this.remember(key, { id, policy, fetchedAt: this.now(), expiresAt: this.now() + policy.maxAge * 1000 });
      this.failed.delete(`${key} ${id}`);
      await this.opts.archive?.save(key, { id, policy }).catch((error: unknown) => this.logger.warn({ domain: key, err: error }, 'MTA-STS: the policy could not be kept in the log'));
      return { policy, known: true };
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      this.failed.set(`${key} ${id}`, this.now());
      if (this.failed.size > MAX_DOMAINS) this.failed.delete(this.failed.keys().next().value!);
      this.logger.warn({ domain: key, err: error }, 'MTA-STS: the policy could not be fetched or read');
      return { policy: valid?.policy ?? null, known: valid !== null };
    }
  }

  private remember(key: string, entry: Cached): void {
    this.cache.delete(key);
    this.cache.set(key, entry);
    if (this.cache.size > MAX_DOMAINS) this.cache.delete(this.cache.keys().next().value!);
  }
}
