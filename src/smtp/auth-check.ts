import { PassThrough, Writable } from 'node:stream';
import { authenticate, type AuthenticateResult } from 'mailauth';
import { headerField, headerFields, headerNames, headerSectionEnd, MAX_HEADER_SECTION } from '../mail/headers.js';
import type { AuthResults } from '../mail/commands.js';
import { budgetedResolver, type DnsResolver } from './dns.js';
import type { TtlCache } from '../security/limits.js';
import type { DmarcVerdict } from './policy.js';

/**
 * SPF, DKIM, DMARC and ARC of an unauthenticated inbound message, with mailauth reading the same
 * bytes as the rest of the DATA path (a tap, no second copy of the message). The body only matters
 * to DKIM and ARC signatures: a message without any gets only its header section checked, so the
 * body is not run through mailauth's canonicalisation for nothing, and its outcome - a function of
 * the client address, HELO, MAIL FROM, the From header and DNS (itself cached) - is reused for a
 * minute for the same inputs (a burst from one sender is checked once). All DNS look-ups of
 * one message share one time budget that starts when the message has been received; look-ups past
 * it fail as `temperror`, and if mailauth has still not answered when the budget is over, every
 * result is `temperror`. The check never delays a message by more than the budget and never fails it.
 */

export interface AuthCheckOutcome {
  results: NonNullable<AuthResults>;
  dmarc: DmarcVerdict | null;
  /** Why the results are incomplete, if they are. */
  error: string | null;
}

export interface AuthCheck {
  /** Feed the message's bytes into this. */
  tap: Writable;
  /** Call once the whole message is in; resolves within the budget. */
  finish(): Promise<AuthCheckOutcome>;
}

/** Header fields that make mailauth need the body. */
const SIGNATURE_FIELDS = ['dkim-signature', 'arc-seal', 'arc-message-signature', 'arc-authentication-results'];

/**
 * Holds the header section back; then either hands mailauth the header section alone (no
 * signatures: the rest is dropped) or starts a stream with the header section and forwards the rest.
 */
class SignatureAwareTap extends Writable {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private scanFrom = 0;
  private stream: PassThrough | null = null;
  private decided = false;

  /** `start(header, true, its From)` for an unsigned message, `start(stream, false, null)` for a signed one. */
  constructor(private readonly start: (input: PassThrough | Buffer, unsigned: boolean, from: string | null) => void) {
    super();
  }

  private decide(all: Buffer, end: number): void {
    this.decided = true;
    this.held = [];
    const fields = end >= 0 ? headerFields(all.subarray(0, end)) : null;
    const names = fields ? headerNames(fields) : null;
    if (fields && names && !SIGNATURE_FIELDS.some((f) => names.has(f))) {
      this.start(all.subarray(0, end), true, headerField(fields, 'from'));
      return;
    }
    this.stream = new PassThrough();
    this.stream.on('error', () => undefined);
    this.start(this.stream, false, null);
    this.stream.write(all);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.decided) {
      if (!this.stream || this.stream.write(chunk)) return done();
      this.stream.once('drain', () => done());
      return;
    }
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    const all = this.held.length === 1 ? chunk : Buffer.concat(this.held);
    this.held = [all];
    const end = headerSectionEnd(all, this.scanFrom);
    if (end >= 0) this.decide(all, end);
    else if (this.heldBytes > MAX_HEADER_SECTION) this.decide(all, -1);
    else this.scanFrom = Math.max(0, all.length - 3);
    done();
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.decided) {
      // A message that is all header: check it as it is.
      this.decided = true;
      this.start(Buffer.concat(this.held), false, null);
      this.held = [];
    }
    this.stream?.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.stream?.destroy(err ?? undefined);
    done(err);
  }
}

const worst = (results: string[]): string => {
  if (results.length === 0) return 'none';
  return results.includes('pass') ? 'pass' : results[0]!;
};

/** Pure: the event's AuthResults from mailauth's answer. */
export function authResultsFrom(res: AuthenticateResult): AuthCheckOutcome {
  const at = res.headers.indexOf('Authentication-Results:');
  const header = (at >= 0 ? res.headers.slice(at) : res.headers).replace(/\r\n$/, '');
  const dmarc = res.dmarc ? { result: res.dmarc.status.result, policy: res.dmarc.policy ?? null, domain: res.dmarc.domain ?? null } : null;
  return {
    results: {
      spf: res.spf ? res.spf.status.result : 'none',
      dkim: worst((res.dkim.results ?? []).map((r) => r.status.result)),
      dmarc: dmarc?.result ?? 'none',
      arc: res.arc ? res.arc.status.result : 'none',
      header,
    },
    dmarc,
    error: null,
  };
}

/** Pure: every check `temperror`, for when the budget ran out or the checker failed. */
export function temperrorResults(mta: string, why: string): AuthCheckOutcome {
  const comment = why.replace(/[()\r\n]/g, ' ');
  return {
    results: {
      spf: 'temperror',
      dkim: 'temperror',
      dmarc: 'temperror',
      arc: 'temperror',
      header: `Authentication-Results: ${mta};\r\n dkim=temperror (${comment});\r\n spf=temperror;\r\n arc=temperror;\r\n dmarc=temperror`,
    },
    dmarc: null,
    error: why,
  };
}

export function startAuthCheck(opts: {
  ip: string;
  helo: string;
  mailFrom: string;
  mta: string;
  resolver: DnsResolver;
  budgetMs: number;
  /** Outcomes of unsigned messages by their inputs; temperror outcomes are never kept. */
  cache?: TtlCache<AuthCheckOutcome>;
}): AuthCheck {
  let deadline = Number.POSITIVE_INFINITY;
  const resolver = (name: string, rrtype: string): Promise<unknown> => budgetedResolver(opts.resolver, deadline)(name, rrtype);
  let started: (r: AuthCheckOutcome) => void;
  const running = new Promise<AuthCheckOutcome>((resolve) => (started = resolve));
  const tap = new SignatureAwareTap((input, unsigned, from) => {
    const key = unsigned && opts.cache ? [opts.ip, opts.helo, opts.mailFrom, from ?? ''].join('\n') : null;
    const cached = key ? opts.cache!.get(key) : undefined;
    if (cached) return started(cached);
    const check = authenticate(input, {
      ip: opts.ip.replace(/^::ffff:/i, ''),
      helo: opts.helo,
      sender: opts.mailFrom || undefined,
      mta: opts.mta,
      resolver,
      disableBimi: true,
    }).then(authResultsFrom, (err: unknown) => temperrorResults(opts.mta, `check failed: ${err instanceof Error ? err.message : String(err)}`));
    // If mailauth stops reading a stream, drain it so the DATA path never waits on it.
    if (!Buffer.isBuffer(input)) void check.finally(() => input.resume());
    void check.then((outcome) => {
      if (key && !outcome.error && !Object.values(outcome.results).includes('temperror')) opts.cache!.set(key, outcome);
      started(outcome);
    });
  });
  tap.on('error', () => undefined); // destroyed when the message is refused
  // The budget starts once the whole message is in (mailauth's look-ups start then, not before).
  const startBudget = (): void => {
    if (deadline === Number.POSITIVE_INFINITY) deadline = Date.now() + opts.budgetMs;
  };
  tap.once('finish', startBudget);
  return {
    tap,
    finish() {
      startBudget();
      return new Promise((resolve) => {
        const timer = setTimeout(
          () => resolve(temperrorResults(opts.mta, `DNS time budget of ${opts.budgetMs} ms exhausted`)),
          Math.max(0, deadline - Date.now()) + 50,
        );
        void running.then((r) => {
          clearTimeout(timer);
          resolve(r);
        });
      });
    },
  };
}
