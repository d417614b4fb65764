import { createPrivateKey, X509Certificate } from 'node:crypto';
import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { domainToASCII } from 'node:url';
import nodemailer from 'nodemailer';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { Logger } from 'pino';
import { httpsPolicyFetcher, MtaStsPolicies, mxMatches, type MtaStsPolicy, type MtaStsSources, type PolicyArchive } from './mta-sts.js';
import type { DsnRequest } from '../events/types.js';
import type { RelayOptions } from './options.js';
import type { RecipientOutcome } from './plan.js';

/**
 * How one attempt reaches the recipients' servers: through the smart host (SMTP_RELAY_HOST), or
 * straight to each recipient domain's MX. Either way the stored bytes go out unchanged (a DKIM
 * signature header is prepended when DKIM is configured), with the envelope given explicitly.
 */

export interface MxRecord {
  exchange: string;
  priority: number;
}

/** The part of `dns.promises` the relay needs; tests inject their own. */
export interface MxResolver {
  resolveMx(domain: string): Promise<MxRecord[]>;
  /** For MTA-STS records; a resolver without it looks up no MTA-STS policy. */
  resolveTxt?(name: string): Promise<string[][]>;
}

export interface DeliveryRequest {
  raw: Buffer;
  /** Envelope sender; '' = null sender (`MAIL FROM:<>`). */
  mailFrom: string;
  recipients: string[];
  /** What the submission asked for with DSN (RFC 3461), passed on to a next hop that offers DSN. */
  dsn?: DsnRequest | undefined;
  /** REQUIRETLS (RFC 8689): only over verified TLS to a next hop that offers REQUIRETLS, which gets it too. */
  requireTls?: boolean | undefined;
  /**
   * The message says `TLS-Required: No` (RFC 8689 3, 4.2.2), its sender's wish that the recipient
   * domains' TLS policies not stop it (to reach a domain whose TLS is broken): MTA-STS is not
   * applied, TLS stays opportunistic. REQUIRETLS, when asked too, wins.
   */
  ignoreTlsPolicy?: boolean | undefined;
  /** Aborts the attempt: a timeout is reported as a temporary failure, a stop is rethrown. */
  signal: AbortSignal;
}

type NextHopDsn = { ret?: 'FULL' | 'HDRS'; envid?: string; notify?: ('NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY')[]; orcpt?: string };

/** One SMTP transaction of an attempt: recipients that share the DSN parameters it passes on. */
interface Transaction extends Omit<DeliveryRequest, 'dsn'> {
  dsn?: NextHopDsn;
}

/**
 * An attempt's transactions. NOTIFY and ORCPT belong to each RCPT, but nodemailer gives one set
 * per transaction, so recipients that asked differently go in separate transactions, sent one
 * after the other. An ORCPT that only repeats the recipient's address (what clients that give one
 * mostly send) is left out, which says the same; so most messages take one transaction.
 */
export function transactions(req: DeliveryRequest): Transaction[] {
  const { dsn, ...rest } = req;
  if (!dsn) return [rest];
  const envelope: NextHopDsn = { ...(dsn.ret ? { ret: dsn.ret } : {}), ...(dsn.envid ? { envid: dsn.envid } : {}) };
  const groups = new Map<string, Transaction>();
  for (const recipient of req.recipients) {
    const asked = dsn.recipients.find((r) => r.address.toLowerCase() === recipient.toLowerCase());
    const own: NextHopDsn = {
      ...envelope,
      ...(asked?.notify ? { notify: asked.notify.length > 0 ? asked.notify : ['NEVER' as const] } : {}),
      ...(asked?.orcpt && asked.orcpt.toLowerCase() !== `rfc822;${recipient.toLowerCase()}` ? { orcpt: asked.orcpt } : {}),
    };
    const key = `${own.notify?.join(',') ?? ''}\n${own.orcpt ?? ''}`;
    const group = groups.get(key) ?? { ...rest, recipients: [], ...(Object.keys(own).length > 0 ? { dsn: own } : {}) };
    group.recipients.push(recipient);
    groups.set(key, group);
  }
  return [...groups.values()];
}

export interface Deliverer {
  /** One outcome per recipient. Throws only when `signal` aborted for another reason than a timeout (a stop). */
  deliver(req: DeliveryRequest): Promise<RecipientOutcome[]>;
}

type SmtpError = Error & {
  code?: string;
  originalCode?: string;
  command?: string;
  response?: string;
  responseCode?: number;
  permanent?: boolean;
  recipient?: string;
  rejected?: unknown[];
  rejectedErrors?: SmtpError[];
  timeoutType?: string;
};

interface SendInfo {
  /** The server's EHLO reply, one extension per line. */
  ehlo?: string[];
  accepted?: unknown[];
  rejected?: unknown[];
  rejectedErrors?: SmtpError[];
  response?: string;
}

/** A stop of the relay (as opposed to the attempt's own timeout). */
export class RelayStoppedError extends Error {
  constructor() {
    super('relay stopped');
    this.name = 'RelayStoppedError';
  }
}

const lower = (s: string): string => s.toLowerCase();

/** An address as servers and nodemailer may report it back: domain lower-cased and in ASCII (punycode). */
export function addressKey(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  const domain = address.slice(at + 1);
  return `${address.slice(0, at).toLowerCase()}@${(domainToASCII(domain) || domain).toLowerCase()}`;
}
const addressOf = (a: unknown): string => (typeof a === 'string' ? a : a && typeof a === 'object' && 'address' in a ? String(a.address) : String(a));

function isPermanent(err: SmtpError): boolean {
  // 552 to RCPT is "too many recipients" from old servers: RFC 5321 4.5.3.1.10 says to treat it as 452.
  if (err.responseCode === 552 && err.command === 'RCPT TO') return false;
  if (typeof err.permanent === 'boolean') return err.permanent;
  return typeof err.responseCode === 'number' && err.responseCode >= 500 && err.responseCode !== 503;
}

/** What a failure without a usable SMTP reply looks like in the log. */
function describe(err: SmtpError): string {
  // A refused STARTTLS is answered "500 command not recognized": say which command it was.
  if (err.response) return err.code === 'ETLS' && !/TLS/i.test(err.response) ? `STARTTLS: ${err.response}` : err.response;
  const code = [err.code, err.originalCode, err.timeoutType].filter(Boolean).join(' ');
  return `${code ? `${code}: ` : ''}${err.message}`;
}

/**
 * A refused login at the smart host is our configuration, not the recipient's address: deferred
 * (as Postfix's smtp_sasl_auth_soft_bounce does) so that fixing the password lets the queue drain.
 * So is a STARTTLS that was required and refused ("500 command not recognized"): Postfix defers it too.
 */
function outcomeOfError(recipient: string, err: SmtpError): RecipientOutcome {
  const permanent = err.responseCode !== undefined && err.code !== 'EAUTH' && err.code !== 'ETLS' && isPermanent(err);
  return { recipient, kind: permanent ? 'permanent' : 'temporary', response: describe(err) };
}

/** Per-recipient outcomes of a transaction the server accepted (some recipients may have been refused at RCPT). */
export function outcomesFromInfo(recipients: string[], info: SendInfo): RecipientOutcome[] {
  const refused = new Map<string, SmtpError>();
  for (const e of info.rejectedErrors ?? []) if (e.recipient) refused.set(addressKey(e.recipient), e);
  const rejected = new Set((info.rejected ?? []).map((a) => addressKey(addressOf(a))));
  return recipients.map((recipient): RecipientOutcome => {
    const err = refused.get(addressKey(recipient));
    if (err) return outcomeOfError(recipient, err);
    if (rejected.has(addressKey(recipient))) return { recipient, kind: 'temporary', response: 'refused by the server without a reply' };
    // Every RCPT was answered before DATA; what was not refused was accepted with the final reply.
    return { recipient, kind: 'delivered', response: info.response ?? '250 OK' };
  });
}

/** Per-recipient outcomes of a failed transaction. */
export function outcomesFromError(recipients: string[], err: SmtpError): RecipientOutcome[] {
  if (err.rejectedErrors?.length) return outcomesFromInfo(recipients, { rejectedErrors: err.rejectedErrors, rejected: err.rejected ?? [], response: err.response ?? describe(err) }).map((o) => (o.kind === 'delivered' ? { ...o, kind: 'temporary' } : o));
  return recipients.map((r) => outcomeOfError(r, err));
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT']);

/**
 * The host could not be reached or refused to talk before any transaction began: RFC 5321 §5.1
 * says to try the next MX. A failure later (e.g. a timeout while the message is on the wire) is not
 * retried elsewhere in the same attempt, since that host may have taken the message.
 */
export function unreachable(err: SmtpError): boolean {
  if (err.code === 'EDNS') return true;
  if (err.code === 'ETIMEDOUT') return err.timeoutType === 'CONNECT_TIMEOUT' || err.timeoutType === 'GREETING_TIMEOUT' || err.timeoutType === 'UPGRADE_TIMEOUT';
  if (err.command === 'CONN' && (err.code === 'ESOCKET' || err.code === 'ECONNECTION') && err.originalCode && CONNECT_CODES.has(err.originalCode)) return true;
  // Refused at the greeting or at EHLO (421, 554 …).
  return err.responseCode !== undefined && (err.command === 'CONN' || err.command === 'EHLO' || err.command === 'HELO');
}

/** DKIM key material: PEM text (literal `\n` escapes allowed) or the path of a PEM file. */
export function loadDkimKey(value: string): string {
  try {
    const pem = value.includes('-----BEGIN') ? value.replace(/\\n/g, '\n') : readFileSync(value, 'utf8');
    createPrivateKey(pem); // fail at start-up rather than on the first message
    return pem;
  } catch (error) {
    throw new Error(`DKIM_PRIVATE_KEY: not a usable PEM private key or key file (${error instanceof Error ? error.message : String(error)})`);
  }
}

/** Extra certificate authorities (RELAY_TLS_CA, a PEM file) for verified TLS: MTA-STS policies, the MX hosts they name, and REQUIRETLS. */
export function loadTlsCa(file: string): string {
  try {
    const pem = readFileSync(file, 'utf8');
    new X509Certificate(pem); // fail at start-up rather than on the first message
    return pem;
  } catch (error) {
    throw new Error(`RELAY_TLS_CA: not a readable PEM certificate file (${error instanceof Error ? error.message : String(error)})`);
  }
}

type TransportOptions = Parameters<typeof nodemailer.createTransport>[0] & object;

interface Attempted {
  outcomes: RecipientOutcome[];
  /** Nothing was handed over: the caller may try another host. */
  unreachable: boolean;
  /** The host offered STARTTLS and the handshake failed: nothing was handed over. */
  tlsFailed: boolean;
  /** STARTTLS was required and did not happen (not offered, refused, a certificate that does not verify): nothing was handed over. */
  tlsRefused: boolean;
  /** What went wrong with it, when the reply alone does not say (a STARTTLS refused with "500 command not recognized"). */
  tlsError?: string;
  /** REQUIRETLS was asked for and the host does not offer it: nothing was handed over. */
  requireTlsRefused?: boolean;
}

/** The reply of a REQUIRETLS message that cannot go on with it (RFC 8689 5). */
const requireTlsFailure = (why: string): string => `550 5.7.30 REQUIRETLS support required: ${why}`;

/** A STARTTLS handshake that failed (nodemailer's ETLS, or the TLS socket's own error). */
export const tlsHandshakeFailed = (err: SmtpError): boolean =>
  err.code === 'ETLS' || (err.code === 'ESOCKET' && /SSL routines|ERR_SSL|TLS/i.test(`${err.message} ${err.originalCode ?? ''}`));

/**
 * TLS was required and did not happen: STARTTLS not offered, refused or failed (nodemailer's
 * ETLS), or a certificate that does not verify. Not any TLS error: nodemailer reports one in a
 * session already secured the same way, and the message may have been handed over by then, so it
 * must not go to the next host (such an attempt is deferred with its error).
 */
export const tlsRequiredFailed = (err: SmtpError): boolean =>
  err.code === 'ETLS' ||
  (err.code === 'ESOCKET' && /CERT|UNABLE_TO_|SELF_SIGNED|ALTNAME/.test(err.originalCode ?? '')) ||
  (err.code === 'ESOCKET' && /certificate|altnames/i.test(err.message));

export interface DelivererDeps {
  logger: Logger;
  /** Defaults to `dns.promises`. */
  resolver?: MxResolver;
  /** Where MTA-STS policies come from; defaults to the resolver's TXT lookups and HTTPS. */
  mtaSts?: MtaStsSources;
  /** Where fetched MTA-STS policies are kept across restarts (the relay: the log). */
  policyArchive?: PolicyArchive;
}

/** Builds the deliverer the options ask for. */
export function createDeliverer(options: RelayOptions, deps: DelivererDeps): Deliverer {
  const timeout = options.RELAY_SMTP_TIMEOUT_MS;
  const dkim =
    options.DKIM_DOMAIN && options.DKIM_SELECTOR && options.DKIM_PRIVATE_KEY
      ? { domainName: options.DKIM_DOMAIN, keySelector: options.DKIM_SELECTOR, privateKey: loadDkimKey(options.DKIM_PRIVATE_KEY) }
      : undefined;
  const common = {
    name: options.RELAY_HELO_NAME,
    connectionTimeout: Math.min(timeout, 60_000),
    greetingTimeout: Math.min(timeout, 60_000),
    dnsTimeout: Math.min(timeout, 30_000),
    socketTimeout: timeout,
    logger: false,
    ...(dkim ? { dkim } : {}),
  };

  /** One SMTP transaction: `req.recipients` share one set of DSN parameters (see `transactions`). */
  async function attempt(transportOptions: TransportOptions, req: Transaction): Promise<Attempted> {
    const transport = nodemailer.createTransport(transportOptions);
    try {
      const info = (await transport.sendMail({
        envelope: { from: req.mailFrom, to: req.recipients },
        raw: req.raw,
        signal: req.signal,
        ...(req.dsn ? { dsn: req.dsn as SMTPConnection.DSNOptions } : {}),
        ...(req.requireTls ? { requireTLSExtensionEnabled: true } : {}),
      })) as SendInfo;
      // nodemailer sends the parameters only to a server that offers DSN; that server then reports success itself.
      const passedOn = req.dsn !== undefined && (info.ehlo ?? []).some((line) => /^DSN\b/i.test(line));
      const outcomes = outcomesFromInfo(req.recipients, info).map((o) => (passedOn && o.kind === 'delivered' ? { ...o, dsnPassedOn: true } : o));
      return { outcomes, unreachable: false, tlsFailed: false, tlsRefused: false };
    } catch (error) {
      if (req.signal.aborted && req.signal.reason instanceof RelayStoppedError) throw req.signal.reason;
      const err = (error instanceof Error ? error : new Error(String(error))) as SmtpError;
      if (err.code === 'EREQUIRETLS') {
        const response = requireTlsFailure(`${(transportOptions as { host?: string }).host ?? 'the server'} does not offer it`);
        return { outcomes: req.recipients.map((recipient) => ({ recipient, kind: 'permanent', response })), unreachable: false, tlsFailed: false, tlsRefused: false, requireTlsRefused: true };
      }
      if (req.signal.aborted) {
        return { outcomes: req.recipients.map((recipient) => ({ recipient, kind: 'temporary', response: `attempt timed out after ${timeout} ms` })), unreachable: false, tlsFailed: false, tlsRefused: false };
      }
      const tlsRefused = tlsRequiredFailed(err);
      return { outcomes: outcomesFromError(req.recipients, err), unreachable: unreachable(err), tlsFailed: tlsHandshakeFailed(err), tlsRefused, ...(tlsRefused ? { tlsError: err.message } : {}) };
    } finally {
      transport.close();
    }
  }

  const ca = options.RELAY_TLS_CA ? loadTlsCa(options.RELAY_TLS_CA) : undefined;
  /** STARTTLS required, the certificate valid for the host name: MX hosts under an enforced MTA-STS policy, and REQUIRETLS. */
  const verifiedTls = { requireTLS: true, opportunisticTLS: false, tls: { rejectUnauthorized: true, ...(ca ? { ca: [...tls.rootCertificates, ca] } : {}) } };

  if (options.SMTP_RELAY_HOST) {
    const smartHost: TransportOptions = {
      ...common,
      host: options.SMTP_RELAY_HOST,
      port: options.SMTP_RELAY_PORT,
      secure: options.SMTP_RELAY_SECURE,
      requireTLS: !options.SMTP_RELAY_SECURE && (options.SMTP_RELAY_REQUIRE_TLS ?? options.SMTP_RELAY_USER !== undefined),
      tls: { rejectUnauthorized: options.SMTP_RELAY_TLS_REJECT_UNAUTHORIZED },
      ...(options.SMTP_RELAY_USER ? { auth: { user: options.SMTP_RELAY_USER, pass: options.SMTP_RELAY_PASS } } : {}),
    };
    // REQUIRETLS holds whatever the smart host settings say: TLS, and a certificate that verifies.
    const verifiedSmartHost: TransportOptions = { ...smartHost, ...(options.SMTP_RELAY_SECURE ? { tls: verifiedTls.tls } : verifiedTls) };
    return {
      async deliver(req) {
        const outcomes: RecipientOutcome[] = [];
        for (const t of transactions(req)) outcomes.push(...(await attempt(t.requireTls ? verifiedSmartHost : smartHost, t)).outcomes);
        return outcomes;
      },
    };
  }

  const resolver = deps.resolver ?? dns.promises;
  const stsSources: MtaStsSources | null = !options.RELAY_MTA_STS
    ? null
    : (deps.mtaSts ??
      (resolver.resolveTxt
        ? { resolveTxt: (name) => resolver.resolveTxt!(name), fetchPolicy: httpsPolicyFetcher({ timeoutMs: Math.min(timeout, 60_000), ...(ca ? { ca } : {}) }) }
        : null));
  const policies = stsSources ? new MtaStsPolicies(stsSources, deps.logger, Math.min(timeout, 30_000), deps.policyArchive ? { archive: deps.policyArchive } : {}) : null;

  /**
   * One domain's recipients through its MX hosts, best first, as its MTA-STS policy allows: the
   * route and the policy are looked up once, then the attempt's transactions for the domain go
   * one after the other (see `transactions`).
   */
  async function deliverToDomain(domain: string, group: Transaction[]): Promise<RecipientOutcome[]> {
    const all = (response: string, kind: RecipientOutcome['kind']): RecipientOutcome[] => group.flatMap((t) => t.recipients.map((recipient) => ({ recipient, kind, response })));
    const signal = group[0]!.signal;
    const requireTls = group[0]!.requireTls === true;
    const route = await mxHosts(domain, resolver);
    if ('failure' in route) return all(route.failure.response, route.failure.kind);
    let policy: MtaStsPolicy | null = null;
    let known = true;
    const lookUp = policies && !(group[0]!.ignoreTlsPolicy && !requireTls);
    if (policies && !lookUp) deps.logger.info({ domain }, 'relay: the message says TLS-Required: No; the MTA-STS policy of this domain is not applied');
    try {
      ({ policy, known } = lookUp ? await policies.lookup(domain, signal) : { policy: null, known: true });
    } catch (error) {
      // Only the attempt's signal ends a policy lookup early: a stop is rethrown, a timeout defers.
      if (signal.reason instanceof RelayStoppedError) throw signal.reason;
      if (!signal.aborted) throw error;
      return all(`attempt timed out after ${timeout} ms`, 'temporary');
    }
    // REQUIRETLS needs MX hosts validated (RFC 8689 4.2.1): without DNSSEC here, by the MX names
    // of an MTA-STS policy (enforce or testing), which then holds as if enforced.
    if (requireTls && (!policy || policy.mode === 'none')) {
      if (!known) return all(`451 4.7.5 REQUIRETLS: the MTA-STS policy of ${domain} could not be looked up; trying again later`, 'temporary');
      const why = !policies ? 'RELAY_MTA_STS=false' : policy ? 'its MTA-STS policy is mode none' : 'it publishes no MTA-STS policy';
      return all(requireTlsFailure(`the MX hosts of ${domain} cannot be validated: ${why} (DNSSEC is not checked)`), 'permanent');
    }
    const enforce = policy?.mode === 'enforce' || requireTls;
    const hosts = enforce ? route.hosts.filter((host) => allowedBy(policy, host)) : route.hosts;
    if (hosts.length === 0) {
      return all(`451 4.7.5 MTA-STS: no MX host of ${domain} (${route.hosts.join(', ')}) matches its policy (${policy!.mx.join(', ')})`, 'temporary');
    }
    const outcomes: RecipientOutcome[] = [];
    for (const req of group) outcomes.push(...(await throughHosts(domain, hosts, policy, enforce, req)));
    return outcomes;
  }

  /** One transaction to the first of `hosts` that takes it, as the policy allows. */
  async function throughHosts(domain: string, hosts: string[], policy: MtaStsPolicy | null, enforce: boolean, req: Transaction): Promise<RecipientOutcome[]> {
    const { recipients } = req;
    let last: Attempted | null = null;
    for (const host of hosts) {
      if (req.signal.aborted) break;
      const testing = policy?.mode === 'testing';
      if (enforce || (testing && allowedBy(policy, host))) {
        // Verified TLS first: what enforce requires, and what testing reports on when it fails.
        last = await attempt({ ...common, host, port: options.RELAY_MX_PORT, secure: false, ...verifiedTls }, req);
        if (last.requireTlsRefused) {
          deps.logger.info({ domain, host }, 'relay: REQUIRETLS: this MX host does not offer it, trying the next');
          continue;
        }
        if (!last.tlsRefused) {
          if (!last.unreachable) break;
          deps.logger.info({ domain, host, response: last.outcomes[0]?.response }, 'relay: MX host unreachable, trying the next');
          continue;
        }
        const reply = last.outcomes[0]?.response ?? '';
        const why = last.tlsError && !reply.includes(last.tlsError) ? `${last.tlsError}: ${reply}` : reply;
        if (enforce) {
          // No verified TLS: the next host, never cleartext; deferred if none will.
          const rule = req.requireTls ? 'REQUIRETLS' : 'MTA-STS (enforce)';
          last = { ...last, outcomes: recipients.map((recipient) => ({ recipient, kind: 'temporary', response: `451 4.7.5 ${rule}: no verified TLS with ${host}: ${why}` })) };
          deps.logger.info({ domain, host, response: why }, `relay: ${rule}: no verified TLS with this MX host, trying the next`);
          continue;
        }
        deps.logger.warn({ domain, host, response: why }, 'MTA-STS testing: no verified TLS with this MX host (enforce would defer the message); delivering with opportunistic TLS');
      } else if (testing) deps.logger.warn({ domain, host, mx: policy?.mx }, 'MTA-STS testing: this MX host does not match the policy (enforce would refuse it)');
      // Opportunistic STARTTLS without certificate checks, as MTAs do without MTA-STS/DANE.
      const mx = { ...common, host, port: options.RELAY_MX_PORT, secure: false, opportunisticTLS: true, tls: { rejectUnauthorized: false } };
      last = await attempt(mx, req);
      if (last.tlsFailed && !req.signal.aborted) {
        // Opportunistic security (RFC 7435): a host whose TLS handshake fails gets the message
        // in cleartext, as it would had it not offered STARTTLS.
        deps.logger.info({ domain, host, response: last.outcomes[0]?.response }, 'relay: TLS handshake failed, sending in cleartext');
        last = await attempt({ ...mx, ignoreTLS: true, opportunisticTLS: false }, req);
      }
      if (!last.unreachable) break;
      deps.logger.info({ domain, host, response: last.outcomes[0]?.response }, 'relay: MX host unreachable, trying the next');
    }
    return last?.outcomes ?? recipients.map((recipient) => ({ recipient, kind: 'temporary', response: `attempt timed out after ${timeout} ms` }));
  }

  return {
    async deliver(req) {
      const byDomain = new Map<string, string[]>();
      for (const r of req.recipients) {
        const domain = lower(r.slice(r.lastIndexOf('@') + 1));
        byDomain.set(domain, [...(byDomain.get(domain) ?? []), r]);
      }
      const results = await Promise.all([...byDomain].map(([domain, recipients]) => deliverToDomain(domain, transactions({ ...req, recipients }))));
      return results.flat();
    },
  };
}

/** Whether a policy lets `host` have the domain's mail (no policy, or mode none: any host). */
const allowedBy = (policy: MtaStsPolicy | null, host: string): boolean => !policy || policy.mode === 'none' || policy.mx.some((p) => mxMatches(p, host));

type Route = { hosts: string[] } | { failure: Omit<RecipientOutcome, 'recipient'> };

const dnsCode = (error: unknown): string | undefined => (error && typeof error === 'object' && 'code' in error ? String(error.code) : undefined);

/**
 * The hosts to try for `domain`, best first (RFC 5321 §5.1): MX records by preference (equal ones
 * in random order); no MX record = the domain itself (its A/AAAA record); a null MX (RFC 7505) or
 * a domain that does not exist = permanent; other DNS errors = temporary.
 */
export async function mxHosts(domain: string, resolver: MxResolver): Promise<Route> {
  const literal = /^\[(?:ipv6:)?(.+)\]$/i.exec(domain);
  if (literal) return net.isIP(literal[1]!) ? { hosts: [literal[1]!] } : { failure: { kind: 'permanent', response: `501 5.1.3 bad address literal ${domain}` } };
  let records: MxRecord[];
  try {
    records = await resolver.resolveMx(domain);
  } catch (error) {
    const code = dnsCode(error);
    if (code === 'ENODATA') return { hosts: [domain] };
    if (code === 'ENOTFOUND') return { failure: { kind: 'permanent', response: `550 5.1.2 domain ${domain} does not exist` } };
    return { failure: { kind: 'temporary', response: `451 4.4.3 MX lookup for ${domain} failed (${code ?? String(error)})` } };
  }
  if (records.length === 0) return { hosts: [domain] };
  if (records.some((r) => r.exchange === '' || r.exchange === '.')) {
    return { failure: { kind: 'permanent', response: `556 5.1.10 ${domain} accepts no mail (null MX)` } };
  }
  const shuffled = records.map((r) => ({ r, tie: Math.random() })).sort((a, b) => a.r.priority - b.r.priority || a.tie - b.tie);
  return { hosts: [...new Set(shuffled.map(({ r }) => r.exchange.replace(/\.$/, '')))] };
}
