import { domainToASCII } from 'node:url';
import { isPlainAddress } from '../accounts/accounts.js';
import type { Address } from '../events/types.js';
import type { LocalMailbox } from '../mail/commands.js';

/**
 * SMTP policy as pure functions: who may send, to whom, what. The server (server.ts) does the
 * look-ups (mailboxes, domains, credentials) and turns the answers into replies.
 */

/** An SMTP reply: basic code, enhanced status code (RFC 3463), text. */
export interface Reply {
  code: number;
  enhanced: string;
  text: string;
}

const reply = (code: number, enhanced: string, text: string): Reply => ({ code, enhanced, text });

export const replies = {
  unknownMailbox: (address: string) => reply(550, '5.1.1', `<${address}>: no such mailbox here`),
  relayDenied: (address: string) => reply(554, '5.7.1', `<${address}>: relaying denied; authenticate to send to other domains`),
  badAddress: (address: string) => reply(553, '5.1.3', `<${address}>: address syntax not accepted (no quoted, routed or %-hack addresses)`),
  localSenderNeedsAuth: (address: string) => reply(553, '5.7.1', `<${address}>: authentication required to send as a local address`),
  senderNotOwned: (address: string) => reply(553, '5.7.1', `<${address}>: sender address is not yours`),
  nullSenderSubmission: () => reply(553, '5.7.1', 'the null sender <> is not allowed in an authenticated session'),
  headerFromNotOwned: (address: string) => reply(550, '5.7.1', `From: ${address} is not an address of yours`),
  noHeaderFrom: () => reply(550, '5.7.1', 'the message has no From address of yours'),
  severalHeaderFroms: () => reply(550, '5.7.1', 'the message has more than one From field (RFC 5322 3.6 allows one)'),
  authInTransaction: () => reply(503, '5.5.1', 'AUTH is not permitted during a mail transaction'),
  unknownParameter: (name: string) => reply(555, '5.5.4', `${name}: parameter not recognised`),
  badDsnParameter: (name: string, rule: string) => reply(501, '5.5.4', `${name}: ${rule} (RFC 3461)`),
  dmarcReject: (domain: string) => reply(550, '5.7.1', `DMARC policy of ${domain} is reject and the message failed it`),
  messageTooBig: (limit: number) => reply(552, '5.3.4', `message exceeds fixed maximum message size ${limit}`),
  smuggling: () => reply(554, '5.6.0', 'bare CR or LF around a lone dot (possible SMTP smuggling): message refused'),
  nulBytes: () => reply(554, '5.6.0', 'NUL bytes are not allowed in a message'),
  unparseable: () => reply(554, '5.6.0', 'message could not be parsed as MIME'),
  storeFailed: () => reply(451, '4.3.0', 'local error while storing the message, try again later'),
  lookupFailed: () => reply(451, '4.3.0', 'local error, try again later'),
  viewsBehind: () => reply(451, '4.3.0', 'the mailbox directory is catching up, try again later'),
  connectionRate: () => reply(421, '4.7.0', 'too many connections from your address, try again later'),
  messageRate: () => reply(451, '4.7.1', 'too many messages from your address, try again later'),
  authLocked: () => reply(454, '4.7.0', 'too many failed authentication attempts, try again later'),
  authFailed: () => reply(535, '5.7.8', 'authentication credentials invalid'),
  shuttingDown: () => reply(421, '4.3.2', 'server shutting down, try again later'),
  lineTooLong: () => reply(500, '5.5.2', 'line too long'),
} as const;

/** A recipient or sender address split for policy; only plain `local@domain` addresses qualify. */
export type ParsedAddress = { ok: true; address: string; local: string; domain: string } | { ok: false; address: string };

/**
 * Plain addresses only: no quoted local parts, source routes, `%` or `!` relaying tricks, address
 * literals or trailing dots. (smtp-server already strips source routes and refuses some of these.)
 */
export function parseAddress(given: string): ParsedAddress {
  // smtp-server hands over internationalised domains decoded (bücher.example); policy and the
  // relay work with the ASCII form (xn--bcher-kva.example). Local parts stay ASCII-only.
  const at = given.lastIndexOf('@');
  const domain = at > 0 && /[^\x00-\x7f]/.test(given.slice(at + 1)) ? domainToASCII(given.slice(at + 1)) : given.slice(at + 1);
  const address = at > 0 && domain ? `${given.slice(0, at)}@${domain}` : given;
  if (!isPlainAddress(address)) return { ok: false, address: given };
  return { ok: true, address, local: address.slice(0, at), domain: domain.toLowerCase() };
}

export const isLocalDomain = (domain: string, defaultDomain: string, added: boolean): boolean =>
  domain.toLowerCase() === defaultDomain.toLowerCase() || added;

export type RecipientDecision =
  | { kind: 'local'; address: string; mailbox: LocalMailbox }
  | { kind: 'relay'; address: string }
  | { kind: 'reject'; reply: Reply };

/**
 * Local domain: an existing mailbox or 550 5.1.1. Any other domain: relayed only for an
 * authenticated session (the relay delivers it), else 554 5.7.1 - no open relay.
 */
export function decideRecipient(input: {
  parsed: ParsedAddress;
  domainIsLocal: boolean;
  mailbox: LocalMailbox | null;
  authenticated: boolean;
}): RecipientDecision {
  const { parsed } = input;
  if (!parsed.ok) return { kind: 'reject', reply: replies.badAddress(parsed.address) };
  if (input.domainIsLocal) {
    return input.mailbox ? { kind: 'local', address: parsed.address, mailbox: input.mailbox } : { kind: 'reject', reply: replies.unknownMailbox(parsed.address) };
  }
  return input.authenticated ? { kind: 'relay', address: parsed.address } : { kind: 'reject', reply: replies.relayDenied(parsed.address) };
}

export interface SessionUser {
  id: string;
  email: string;
}

export type SenderDecision = { ok: true; mailbox: LocalMailbox | null } | { ok: false; reply: Reply };

/**
 * Authenticated: MAIL FROM must be one of the user's own mailboxes (553 5.7.1), never `<>`.
 * Unauthenticated: anything but a local domain's address (a spoofed local sender needs AUTH).
 */
export function decideSender(input: {
  address: string;
  parsed: ParsedAddress | null;
  domainIsLocal: boolean;
  user: SessionUser | null;
  senderMailbox: LocalMailbox | null;
}): SenderDecision {
  if (input.user) {
    if (input.address === '') return { ok: false, reply: replies.nullSenderSubmission() };
    if (!input.senderMailbox || input.senderMailbox.userId !== input.user.id) return { ok: false, reply: replies.senderNotOwned(input.address) };
    return { ok: true, mailbox: input.senderMailbox };
  }
  if (input.address !== '' && input.domainIsLocal) return { ok: false, reply: replies.localSenderNeedsAuth(input.address) };
  return { ok: true, mailbox: null };
}

/** A submission's From header must name only the sender's own address(es). */
export function decideHeaderFrom(from: Address[], own: string[]): Reply | null {
  const mine = new Set(own.map((a) => a.toLowerCase()));
  if (from.length === 0) return replies.noHeaderFrom();
  const foreign = from.find((a) => !mine.has(a.address.toLowerCase()));
  return foreign ? replies.headerFromNotOwned(foreign.address) : null;
}

/** Minimal view of a DMARC verdict, from the authentication check. */
export interface DmarcVerdict {
  result: string;
  policy: string | null;
  domain: string | null;
}

/** With DMARC_REJECT on, a DMARC fail under p=reject (or sp=reject for a subdomain) is refused. */
export function decideDmarc(dmarc: DmarcVerdict | null, dmarcReject: boolean): Reply | null {
  if (!dmarcReject || !dmarc) return null;
  return dmarc.result === 'fail' && dmarc.policy?.toLowerCase() === 'reject' ? replies.dmarcReject(dmarc.domain ?? 'the sender domain') : null;
}


/** Renders a reply's text the way smtp-server prints it after the code: "5.7.1 relaying denied". */
export const replyText = (r: Reply): string => `${r.enhanced} ${r.text}`;

/** An error smtp-server turns into this reply. */
export function replyError(r: Reply): Error & { responseCode: number } {
  return Object.assign(new Error(replyText(r)), { responseCode: r.code });
}
