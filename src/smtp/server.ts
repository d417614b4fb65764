import type net from 'node:net';
import type tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerAuthenticationResponse, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { v7 as uuidv7 } from 'uuid';
import type { MailboxDoc } from '../../projections/mailboxes.js';
import type { UserDoc } from '../../projections/users.js';
import { verifyPassword } from '../accounts/accounts.js';
import { recipientMailbox, sendsAs } from '../accounts/aliases.js';
import { domainOf } from '../accounts/domains.js';
import type { Config } from '../config.js';
import type { Meta } from '../events/envelope.js';
import type { DsnRequest, MessageSummary } from '../events/types.js';
import { noticeLocalDelivered, noticeMailId, noticeRequested, sendNotice } from '../relay/dsn.js';
import type { Logger } from '../log.js';
import { appendMails, messageSummary, planInbound, planSent, submissionBcc, type LocalDelivery, type LocalMailbox, type PlannedAppend } from '../mail/commands.js';
import { headerFacts, headerField, headerFields, rewriteHeaderSection, rfc5322Date } from '../mail/headers.js';
import { mailStream } from '../mail/ids.js';
import { receiveMessage, type StoredBlobs } from '../mail/intake.js';
import type { Store } from '../store/port.js';
import { startAuthCheck, type AuthCheckOutcome } from './auth-check.js';
import { DataGuard } from './data-guard.js';
import { cachingResolver, systemResolver, type DnsResolver } from './dns.js';
import { countAttempt, FailureLimiter, isLoopback, RateLimiter, TtlCache } from '../security/limits.js';
import {
  decideDmarc,
  decideHeaderFrom,
  decideRecipient,
  decideSender,
  isLocalDomain,
  parseAddress,
  replies,
  replyError,
  replyText,
  type Reply,
  type SessionUser,
} from './policy.js';
import { receivedHeader } from './received.js';
import { loadTlsMaterial } from './tls.js';

/**
 * The SMTP side (imperative shell): smtp-server for the protocol, the pure policy in policy.ts
 * for every decision, the mail commands for what a message becomes.
 *
 * DATA path, per message: the bytes stream (with the guard against oversize, NUL and smuggling
 * patterns) into the blob store, mailparser and - for unauthenticated mail - mailauth, all at
 * once; then the policy decides; then the blobs are stored, then the events are appended (durable,
 * and with them every blob they name; one transaction shared with every other append of the
 * same tick), then 250
 * with the queue id. Nothing before that point leaves anything in the store.
 */

/** Views the SMTP server reads to decide on senders and recipients: current before it answers "no such mailbox". */
export const SMTP_VIEWS = ['users', 'mailboxes', 'domains', 'aliases'];

export interface SmtpDeps {
  config: Config;
  logger: Logger;
  store: Store;
  /** DNS for SPF/DKIM/DMARC/ARC; tests inject one to run offline. Default: the system resolver. */
  resolver?: DnsResolver;
  /**
   * Resolves true once the views SMTP reads (mailboxes, domains, users) have applied the whole log
   * as of now; used before a "no such mailbox" answer, so a just-created mailbox is not refused.
   */
  viewsCurrent?: (timeoutMs: number) => Promise<boolean>;
  /** Told of every accepted connection and every finished transaction (for metrics). */
  observer?: SmtpObserver;
}

export interface SmtpObserver {
  connection?(): void;
  /**
   * `reason`: 'ok' for an accepted message, else the enhanced status code of the refusal
   * (e.g. '5.3.4' too big, '5.6.0' smuggling/NUL/unparseable, '5.7.1' DMARC/From) or the result
   * ('aborted': the client left mid-message, 'abandoned': no DATA).
   */
  transaction?(t: { outcome: 'accepted' | 'rejected' | 'aborted' | 'abandoned'; reason: string; bytes: number }): void;
}

export interface SmtpService {
  port: number;
  securePort: number | null;
  /** Stops accepting, lets messages being received finish (up to SMTP_SHUTDOWN_TIMEOUT_MS), closes every connection. */
  close(): Promise<void>;
}

interface Transaction {
  /** Queue id given in the 250 reply and correlationId of the events. */
  id: string;
  startedAt: number;
  mailFrom: string;
  sender: LocalMailbox | null;
  recipients: Map<string, { kind: 'local'; address: string; mailbox: LocalMailbox } | { kind: 'relay'; address: string }>;
  /** DSN parameters (RFC 3461): RET and ENVID of MAIL, NOTIFY and ORCPT of each RCPT (by lower-cased address). */
  dsn: { ret: 'FULL' | 'HDRS' | null; envid: string | null; recipients: Map<string, Omit<DsnRequest['recipients'][number], 'address'>> };
  /** MAIL gave REQUIRETLS (RFC 8689; smtp-server accepts it over TLS only). */
  requireTls: boolean;
  refusedRecipients: number;
  done: boolean;
}

interface SessionState {
  tx: Transaction | null;
}

type TransactionResult = 'accepted' | 'refused' | 'aborted' | 'abandoned';

/** MAIL and RCPT parameters of the extensions offered: SIZE, 8BITMIME, SMTPUTF8, AUTH= (RFC 4954), DSN (RFC 3461), REQUIRETLS (RFC 8689). */
const MAIL_PARAMETERS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'AUTH', 'RET', 'ENVID', 'REQUIRETLS']);
const RCPT_PARAMETERS = new Set<string>(['NOTIFY', 'ORCPT']);
/** ENVID and ORCPT as smtp-server hands them over (decoded from xtext): printable ASCII (RFC 3461 4). */
const PRINTABLE = /^[\x20-\x7e]*$/;

/** The DSN request a submission keeps for `recipients`; undefined when the client gave no DSN parameter. */
function dsnRequest(dsn: Transaction['dsn'], recipients: string[]): DsnRequest | undefined {
  const asked = recipients.flatMap((address) => {
    const r = dsn.recipients.get(address.toLowerCase());
    return r && (r.notify !== null || r.orcpt !== null) ? [{ address, ...r }] : [];
  });
  if (dsn.ret === null && dsn.envid === null && asked.length === 0) return undefined;
  return { ret: dsn.ret, envid: dsn.envid, recipients: asked };
}

/** The first parameter of a MAIL or RCPT command that no offered extension defines (RFC 5321 4.1.1.11: 555). */
function unknownParameters(address: SMTPServerAddress, known: Set<string>): string | null {
  const given = Object.keys(address.args || {});
  return given.find((name) => !known.has(name.toUpperCase())) ?? null;
}

/** Success notices per sender domain: a burst of this many, refilled over an hour (per process). */
const NOTICES_PER_HOUR = 60;
/** The largest original whose header section a success notice carries. */
const NOTICE_ORIGINAL_MAX = 1024 * 1024;

/** Mail a machine sent (RFC 3834 Auto-Submitted other than "no", a delivery or disposition report), by its header section: never answered with a notice. */
export function isAutomatic(head: Buffer): boolean {
  const fields = headerFields(head);
  const submitted = headerField(fields, 'auto-submitted');
  return (submitted !== null && !/^no(?![\w-])/i.test(submitted)) || /^multipart\/report\b/i.test(headerField(fields, 'content-type') ?? '');
}

/** How long a local-domain or mailbox answer is reused. */
const LOOKUP_TTL_MS = 5000;

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

const toLocalMailbox = (m: MailboxDoc): LocalMailbox => ({ id: m.id, userId: m.userId, address: m.address });

// smtp-server sets `user` to false when STARTTLS drops a session's authentication: only an object is a user.
const sessionUser = (session: SMTPServerSession): SessionUser | null => {
  const user: unknown = session.user;
  return typeof user === 'object' && user !== null ? (user as SessionUser) : null;
};

type CommandHandler = (command: Buffer, callback: () => void) => void;

/**
 * Where smtp-server's behaviour differs from what mailtrail answers, per connection:
 * - it derives the enhanced status code from the basic code alone (554 is always 5.6.0), so
 *   replies whose text already starts with one (all of ours: "5.7.1 relaying denied") are sent as
 *   they are;
 * - its 421 for an over-long command line becomes 500 5.5.2 (then the connection is closed, as
 *   the command parser cannot go on);
 * - it offers AUTH before STARTTLS even when AUTH will be refused there (RFC 4954 4: no plain
 *   mechanism without TLS), inviting clients to send a password in clear;
 * - it takes AUTH in the middle of a mail transaction, which RFC 4954 4 says MUST get 503: the
 *   transaction's sender and recipients were checked as unauthenticated.
 */
function adjustConnection(conn: SMTPConnection, insecureAuth: boolean): void {
  const send = conn.send.bind(conn);
  conn.send = (code: number, data?: string | string[] | null, context?: string | false): void => {
    if (code === 421 && typeof data === 'string' && data.startsWith('Error: Command line too long')) {
      const r = replies.lineTooLong();
      send(r.code, replyText(r), false);
      conn.close();
      return;
    }
    if (code === 250 && Array.isArray(data) && !conn.secure && !insecureAuth) return send(code, data.filter((line) => !line.startsWith('AUTH ')), context);
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data) && data[0] === String(code)[0]) return send(code, data, false);
    send(code, data, context);
  };
  const handlers = conn as unknown as { handler_AUTH: CommandHandler };
  const auth = handlers.handler_AUTH.bind(conn);
  handlers.handler_AUTH = (command, callback) => {
    if (conn.session.envelope.mailFrom) {
      const r = replies.authInTransaction();
      send(r.code, replyText(r), false);
      return callback();
    }
    auth(command, callback);
  };
}

/**
 * The views that say which domains and mailboxes exist have not caught up with the log (e.g. while
 * they are being rebuilt): "no such mailbox" could be wrong, so the answer is a temporary one.
 */
class ViewsBehindError extends Error {
  constructor() {
    super('the mailbox views are behind the log');
    this.name = 'ViewsBehindError';
  }
}

class MailtrailSmtpServer extends SMTPServer {
  constructor(private readonly serverOptions: SMTPServerOptions) {
    super(serverOptions);
  }

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: Parameters<SMTPServer['connect']>[1]): void {
    super.connect(socket, socketOptions);
    let newest: SMTPConnection | undefined;
    for (const c of this.connections) newest = c;
    if (newest) adjustConnection(newest, this.serverOptions.allowInsecureAuth === true);
  }
}

export async function startSmtpServer(deps: SmtpDeps): Promise<SmtpService> {
  const { config, logger, store } = deps;
  const log = logger.child({ component: 'smtp' });
  const material = loadTlsMaterial({ keyFile: config.TLS_KEY, certFile: config.TLS_CERT, dataDir: config.DATA_DIR, hostname: config.SMTP_HOSTNAME, logger: log });
  const resolver = cachingResolver(deps.resolver ?? systemResolver(config.SMTP_DNS_TIMEOUT_MS));
  const connectionRate = new RateLimiter(config.SMTP_CONNECTION_RATE_PER_IP, 60_000);
  const messageRate = new RateLimiter(config.SMTP_MESSAGE_RATE_PER_IP, 60_000);
  const noticeRate = new RateLimiter(NOTICES_PER_HOUR, 3_600_000);
  const accountFailures = new FailureLimiter(config.SMTP_AUTH_MAX_FAILURES, config.SMTP_AUTH_FAILURE_WINDOW_MS);
  const ipFailures = new FailureLimiter(config.SMTP_AUTH_MAX_FAILURES_PER_IP, config.SMTP_AUTH_FAILURE_WINDOW_MS);
  const rateExempt = (ip: string): boolean => !config.RATE_LIMIT_LOOPBACK && isLoopback(ip);
  const sessions = new Map<string, SessionState>();
  const receiving = new Map<string, Promise<void>>();
  let closing = false;

  const stateOf = (session: SMTPServerSession): SessionState => {
    let s = sessions.get(session.id);
    if (!s) sessions.set(session.id, (s = { tx: null }));
    return s;
  };

  /** One log line per SMTP transaction, whatever its end. */
  const logTransaction = (
    session: SMTPServerSession,
    tx: Transaction,
    result: TransactionResult,
    detail: { reply?: Reply | string; size?: number; mailIds?: string[]; duplicates?: number; error?: unknown } = {},
  ): void => {
    if (tx.done) return;
    tx.done = true;
    const reply = typeof detail.reply === 'string' ? detail.reply : detail.reply ? `${detail.reply.code} ${replyText(detail.reply)}` : undefined;
    try {
      deps.observer?.transaction?.({
        outcome: result === 'refused' ? 'rejected' : result,
        reason: result === 'accepted' ? 'ok' : typeof detail.reply === 'object' ? detail.reply.enhanced : result,
        bytes: detail.size ?? 0,
      });
    } catch (error) {
      log.warn({ err: error }, 'smtp observer failed');
    }
    log.info(
      {
        tx: tx.id,
        session: session.id,
        ip: session.remoteAddress,
        helo: session.hostNameAppearsAs || null,
        tls: session.secure,
        user: sessionUser(session)?.email ?? null,
        mailFrom: tx.mailFrom,
        recipients: [...tx.recipients.values()].map((r) => r.address),
        refusedRecipients: tx.refusedRecipients,
        result,
        reply,
        size: detail.size,
        mailIds: detail.mailIds,
        duplicates: detail.duplicates || undefined,
        err: detail.error,
        ms: Date.now() - tx.startedAt,
      },
      'smtp transaction',
    );
  };

  // Every transaction asks these again; a few seconds of staleness is fine (a domain, mailbox or
  // alias added meanwhile is found through the "views current" re-check below; mailboxes are never
  // removed, and aliases, which are, are not cached). Senders are checked against the log
  // (sendsAs), so a removed alias cannot be sent as.
  const localDomains = new TtlCache<boolean>(LOOKUP_TTL_MS);
  const mailboxes = new TtlCache<LocalMailbox>(LOOKUP_TTL_MS);
  const authOutcomes = new TtlCache<AuthCheckOutcome>(60_000);

  /** `fresh`: ask the view (caught up with the log), not the cache - before a permanent refusal. */
  const domainIsLocal = async (domain: string, fresh = false): Promise<boolean> => {
    const key = domain.toLowerCase();
    if (key === config.DEFAULT_DOMAIN) return true;
    const cached = fresh ? undefined : localDomains.get(key);
    if (cached !== undefined) return cached;
    if (fresh && deps.viewsCurrent && !(await deps.viewsCurrent(1000))) throw new ViewsBehindError();
    const added = (await store.views.get('domains', key)) !== null;
    localDomains.set(key, added);
    return isLocalDomain(key, config.DEFAULT_DOMAIN, added);
  };

  /**
   * The mailbox of an address (its own, an alias's, or a +tag's: see recipientMailbox), re-checked
   * once the views have caught up before saying there is none.
   */
  const findMailbox = async (address: string): Promise<LocalMailbox | null> => {
    const key = address.toLowerCase();
    const cached = mailboxes.get(key);
    if (cached) return cached;
    let found = await recipientMailbox(store, address, config.RECIPIENT_DELIMITER);
    if (!found && deps.viewsCurrent) {
      if (!(await deps.viewsCurrent(1000))) throw new ViewsBehindError();
      found = await recipientMailbox(store, address, config.RECIPIENT_DELIMITER);
    }
    if (!found) return null;
    const mailbox = toLocalMailbox(found);
    // Only a mailbox's own address is cached: an alias (or a +tag of one) can be removed, and its
    // mail must stop reaching the mailbox as soon as the views say so.
    if (found.addressKey === key) mailboxes.set(key, mailbox);
    return mailbox;
  };

  /**
   * Where postmaster@ a local domain has no mailbox of its own, mail to it goes to the first admin
   * (ADMIN_EMAILS in order, then accounts made with --admin): RFC 5321 4.5.1 requires postmaster
   * to be accepted. Null when there is no admin either.
   */
  const postmasterFallback = async (): Promise<LocalMailbox | null> => {
    const users = (await store.views.all('users')) as UserDoc[];
    const admins = [
      ...config.ADMIN_EMAILS,
      ...users.filter((u) => u.role === 'admin' && !u.disabled).map((u) => u.emailKey).sort(),
    ];
    for (const email of admins) {
      const mailbox = await findMailbox(email);
      if (mailbox) return mailbox;
    }
    return null;
  };

  /** A sender or recipient could not be looked up: always a temporary answer, the client retries. */
  const lookupFailed = (error: unknown, command: string): Reply => {
    if (error instanceof ViewsBehindError) {
      log.warn({ command }, 'smtp: the mailbox views are behind the log; answering 451');
      return replies.viewsBehind();
    }
    log.error({ err: error, command }, 'smtp lookup failed');
    return replies.lookupFailed();
  };

  const handlers: Pick<SMTPServerOptions, 'onConnect' | 'onAuth' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'> = {
    onConnect(session, callback) {
      if (closing) return callback(replyError(replies.shuttingDown()));
      if (!rateExempt(session.remoteAddress) && !connectionRate.hit(session.remoteAddress)) {
        log.warn({ ip: session.remoteAddress }, 'smtp connection rate limit');
        return callback(replyError(replies.connectionRate()));
      }
      sessions.set(session.id, { tx: null });
      deps.observer?.connection?.();
      callback();
    },

    onAuth(auth: SMTPServerAuthentication, session, callback: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void) {
      const username = (auth.username ?? '').trim();
      const ipKey = session.remoteAddress;
      const accountKey = username.toLowerCase();
      const refuse = (r: Reply): void => callback(null, { message: replyText(r), responseCode: r.code });
      const attempt = countAttempt([
        { limiter: ipFailures, key: ipKey, resetOnSuccess: false },
        { limiter: accountFailures, key: accountKey, resetOnSuccess: true },
      ]);
      if (!attempt) {
        log.warn({ ip: session.remoteAddress, user: username }, 'smtp auth refused: too many failures');
        return refuse(replies.authLocked());
      }
      // PLAIN may name an authorization identity: only "the same user" is accepted.
      const impersonating = auth.method === 'PLAIN' && auth.authzid && auth.authcid && auth.authzid.toLowerCase() !== auth.authcid.toLowerCase();
      const check = impersonating ? Promise.resolve(null) : verifyPassword(store, username, auth.password ?? '', config.BCRYPT_COST);
      check.then(
        (user) => {
          if (!user) {
            log.info({ ip: session.remoteAddress, user: username, method: auth.method }, 'smtp auth failed');
            return refuse(replies.authFailed());
          }
          attempt.succeeded();
          const sessionUserValue: SessionUser = { id: user.id, email: user.email };
          callback(null, { user: sessionUserValue });
        },
        (error: unknown) => {
          attempt.abandoned();
          log.error({ err: error }, 'smtp auth error');
          callback(replyError({ code: 454, enhanced: '4.7.0', text: 'temporary authentication failure' }));
        },
      );
    },

    onMailFrom(address: SMTPServerAddress, session, callback) {
      const state = stateOf(session);
      if (state.tx && !state.tx.done) logTransaction(session, state.tx, 'abandoned');
      state.tx = null;
      if (!rateExempt(session.remoteAddress) && !messageRate.hit(session.remoteAddress)) return callback(replyError(replies.messageRate()));
      const unknown = unknownParameters(address, MAIL_PARAMETERS);
      if (unknown) return callback(replyError(replies.unknownParameter(unknown)));
      // This command's own parameters: smtp-server keeps those of a refused MAIL in the session.
      const ret = typeof address.args === 'object' && typeof address.args.RET === 'string' ? address.args.RET.toUpperCase() : null;
      const envid = typeof address.args === 'object' && typeof address.args.ENVID === 'string' ? address.args.ENVID : null;
      if (envid !== null && (envid.length > 100 || !PRINTABLE.test(envid))) return callback(replyError(replies.badDsnParameter('ENVID', 'must be printable ASCII of at most 100 characters')));
      const requireTls = typeof address.args === 'object' && address.args.REQUIRETLS === true;
      const user = sessionUser(session);
      const mailFrom = address.address;
      const parsed = mailFrom ? parseAddress(mailFrom) : null;
      (async () => {
        // The domain of an address the policy does not take apart ("bob"@, bob%x@) still says
        // whether it claims to be local: such a sender needs AUTH like any other local one.
        const local = parsed ? await domainIsLocal(parsed.ok ? parsed.domain : domainOf(mailFrom)) : false;
        // The user's own mailbox, if it may send as this address (the rule the API applies too).
        const own = user && mailFrom ? await findMailbox(user.email) : null;
        const senderMailbox = own && (await sendsAs(store, own, mailFrom, config.RECIPIENT_DELIMITER)) ? own : null;
        return decideSender({ address: mailFrom, parsed, domainIsLocal: local, user, senderMailbox });
      })().then(
        (decision) => {
          if (!decision.ok) return callback(replyError(decision.reply));
          const dsn: Transaction['dsn'] = { ret: ret === 'FULL' || ret === 'HDRS' ? ret : null, envid, recipients: new Map() };
          state.tx = { id: uuidv7(), startedAt: Date.now(), mailFrom, sender: decision.mailbox, recipients: new Map(), dsn, requireTls, refusedRecipients: 0, done: false };
          callback();
        },
        (error: unknown) => callback(replyError(lookupFailed(error, 'MAIL FROM'))),
      );
    },

    onRcptTo(address: SMTPServerAddress, session, callback) {
      const tx = stateOf(session).tx;
      if (!tx) return callback(replyError({ code: 503, enhanced: '5.5.1', text: 'need MAIL command' }));
      const unknown = unknownParameters(address, RCPT_PARAMETERS);
      if (unknown) return callback(replyError(replies.unknownParameter(unknown)));
      const orcpt = address.dsn?.orcpt ?? null;
      if (orcpt !== null && (orcpt.length > 500 || !PRINTABLE.test(orcpt))) {
        return callback(replyError(replies.badDsnParameter('ORCPT', 'must be an address type, ";" and an address in printable ASCII, at most 500 characters')));
      }
      const notify = address.dsn?.notify ? address.dsn.notify.filter((n): n is 'SUCCESS' | 'FAILURE' | 'DELAY' => n === 'SUCCESS' || n === 'FAILURE' || n === 'DELAY') : null;
      const given = address.address.toLowerCase() === 'postmaster' ? `postmaster@${config.DEFAULT_DOMAIN}` : address.address;
      const parsed = parseAddress(given);
      const authenticated = sessionUser(session) !== null;
      (async () => {
        let local = parsed.ok ? await domainIsLocal(parsed.domain) : false;
        // A domain added a moment ago may still be "not local" in the cache: look again before refusing.
        if (parsed.ok && !local && !authenticated) local = await domainIsLocal(parsed.domain, true);
        let mailbox = local ? await findMailbox(given) : null;
        if (local && !mailbox && parsed.ok && parsed.local.toLowerCase() === 'postmaster') mailbox = await postmasterFallback();
        return decideRecipient({ parsed, domainIsLocal: local, mailbox, authenticated });
      })().then(
        (decision) => {
          if (decision.kind === 'reject') {
            tx.refusedRecipients += 1;
            return callback(replyError(decision.reply));
          }
          tx.recipients.set(address.address.toLowerCase(), decision);
          // By the address as decided (postmaster → postmaster@DEFAULT_DOMAIN), which deliveries and relayTo name.
          tx.dsn.recipients.set(decision.address.toLowerCase(), { notify, orcpt });
          callback();
        },
        (error: unknown) => callback(replyError(lookupFailed(error, 'RCPT TO'))),
      );
    },

    onData(stream: SMTPServerDataStream, session, callback) {
      const tx = stateOf(session).tx;
      const work = (async (): Promise<{ reply: Reply | null; message: string | null }> => {
        if (!tx) {
          stream.resume();
          return { reply: { code: 503, enhanced: '5.5.1', text: 'need MAIL command' }, message: null };
        }
        return receive(stream, session, tx);
      })();
      const settled = work.then(
        ({ reply, message }) => callback(reply ? replyError(reply) : null, message ?? undefined),
        (error: unknown) => {
          if (tx) logTransaction(session, tx, 'refused', { reply: replies.storeFailed(), error });
          callback(replyError(replies.storeFailed()));
        },
      );
      receiving.set(session.id, settled);
      void settled.finally(() => receiving.delete(session.id));
    },

    onClose(session) {
      const state = sessions.get(session.id);
      if (state?.tx && !state.tx.done) logTransaction(session, state.tx, 'abandoned');
      sessions.delete(session.id);
    },
  };

  async function receive(stream: SMTPServerDataStream, session: SMTPServerSession, tx: Transaction): Promise<{ reply: Reply | null; message: string | null }> {
    const user = sessionUser(session);
    const envelopeRecipients = session.envelope.rcptTo.map((r) => tx.recipients.get(r.address.toLowerCase())).filter((r) => r !== undefined);
    const authCheck = user
      ? null
      : startAuthCheck({
          ip: session.remoteAddress,
          helo: session.hostNameAppearsAs || session.remoteAddress,
          mailFrom: tx.mailFrom,
          mta: config.SMTP_HOSTNAME,
          resolver,
          budgetMs: config.SMTP_DNS_TIMEOUT_MS,
          cache: authOutcomes,
        });
    // Every stored copy starts with this server's trace field (RFC 5321 4.4). A submission is
    // also completed the way an MSA does (RFC 6409 8): Message-ID, Date and From added when
    // missing, Bcc removed. The parser, mailauth and the dedupe hash see the bytes as received.
    const trace = receivedHeader({
      helo: session.hostNameAppearsAs || '',
      remoteAddress: session.remoteAddress,
      by: config.SMTP_HOSTNAME,
      protocol: session.transmissionType,
      id: tx.id,
      recipient: envelopeRecipients.length === 1 ? envelopeRecipients[0]!.address : null,
      at: new Date(),
    });
    const added: { messageId?: string; date?: string; from?: string } = {};
    let fromFields = 0;
    // Kept for a success notice, which looks at it only if one is asked for (not on every message).
    let inboundHead: Buffer | null = null;
    const rewriteHeader = (head: Buffer): Buffer => {
      const prepend = [trace];
      if (!user || !tx.sender) {
        inboundHead = head;
        return rewriteHeaderSection(head, { prepend, dropBcc: false });
      }
      const facts = headerFacts(head);
      fromFields = facts.fromFields;
      if (!facts.hasMessageId) prepend.push(`Message-ID: ${(added.messageId = `<${uuidv7()}@${config.SMTP_HOSTNAME}>`)}`);
      if (!facts.hasDate) prepend.push(`Date: ${(added.date = rfc5322Date(new Date()))}`);
      if (!facts.hasFrom) prepend.push(`From: <${(added.from = tx.sender.address)}>`);
      return rewriteHeaderSection(head, { prepend, dropBcc: facts.hasBcc });
    };
    const guard = new DataGuard(config.MAX_MESSAGE_SIZE);
    const outcome = await receiveMessage(stream, {
      blobs: store.blobs,
      inspector: guard,
      taps: authCheck ? [authCheck.tap] : [],
      rewriteHeader,
    });

    const refuse = (reply: Reply, result: TransactionResult = 'refused', error?: unknown) => {
      logTransaction(session, tx, result, { reply, size: guard.size, error });
      return { reply, message: null };
    };
    if (outcome.kind === 'refused') return refuse(outcome.reason);
    if (outcome.kind === 'failed') {
      if (outcome.stage === 'source') return refuse(replies.storeFailed(), 'aborted', outcome.error.message);
      return refuse(outcome.stage === 'parse' ? replies.unparseable() : replies.storeFailed(), 'refused', outcome.error);
    }
    const message = outcome.message;
    const auth = authCheck ? await authCheck.finish() : null;
    if (auth?.error) log.debug({ tx: tx.id, error: auth.error }, 'mail authentication incomplete');

    // A submission's From: the one the message has (exactly one, with an address of the user's),
    // or the one this server added for a message that had none.
    const submittedFrom = added.from ? [{ name: '', address: added.from }] : message.summary.from;
    const verdict =
      decideDmarc(auth?.dmarc ?? null, config.DMARC_REJECT) ??
      (user && tx.sender ? (fromFields > 1 ? replies.severalHeaderFroms() : decideHeaderFrom(submittedFrom, [tx.sender.address, user.email, tx.mailFrom])) : null);
    if (verdict) {
      message.abort();
      return refuse(verdict);
    }

    let blobs: StoredBlobs;
    try {
      blobs = await message.commit();
    } catch (error) {
      return refuse(replies.storeFailed(), 'refused', error);
    }
    const fields = {
      ...message.summary,
      messageId: message.summary.messageId ?? added.messageId ?? null,
      date: message.summary.date ?? (added.date ? new Date(added.date).toISOString() : null),
      from: added.from ? [{ name: '', address: added.from }] : message.summary.from,
    };
    const summary = messageSummary(fields, blobs);
    // A retried message (same Message-ID, same bytes) is stored once. One without a Message-ID is
    // keyed by this transaction: identical messages (a cron job's alerts) are different messages,
    // and storing a retry twice is better than dropping one (RFC 5321 6.1).
    const dedupe = { messageId: message.summary.messageId ?? `<${tx.id}@${config.SMTP_HOSTNAME}>`, sha256: message.receivedSha256 ?? blobs.raw.sha256 };
    const deliveries: LocalDelivery[] = envelopeRecipients.flatMap((r) => (r.kind === 'local' ? [{ mailbox: r.mailbox, recipient: r.address }] : []));
    const planned: PlannedAppend[] = planInbound({
      deliveries,
      dedupe,
      raw: blobs.raw,
      message: summary,
      envelope: {
        mailFrom: tx.mailFrom,
        remoteAddress: session.remoteAddress,
        helo: session.hostNameAppearsAs || '',
        tls: session.secure,
        authUser: user?.email ?? null,
      },
      authResults: auth?.results ?? null,
    });
    const relayTo = envelopeRecipients.flatMap((r) => (r.kind === 'relay' ? [r.address] : []));
    if (user && tx.sender) {
      planned.unshift(
        planSent({
          sender: tx.sender,
          mailFrom: tx.mailFrom,
          relayTo,
          dsn: dsnRequest(tx.dsn, relayTo),
          requireTls: tx.requireTls,
          dedupe,
          messageId: summary.messageId ?? added.messageId ?? `<${tx.id}@${config.SMTP_HOSTNAME}>`,
          raw: blobs.raw,
          message: summary,
          bcc: submissionBcc(
            envelopeRecipients.map((r) => r.address),
            summary,
            message.headerBcc,
          ),
        }),
      );
    }
    const meta: Meta = { correlationId: tx.id, causationId: null, actor: { kind: 'smtp', id: user?.email ?? null } };
    try {
      const stored = await appendMails(store, planned, meta);
      if (user && tx.sender) await noticeLocalDeliveries(tx, tx.sender, planned[0]!.mailId, deliveries, summary, blobs, meta);
      else if (!user && deliveries.length > 0) await answerSuccessRequests(tx, planned, deliveries, summary, blobs, { spf: auth?.results?.spf ?? null, head: inboundHead }, meta);
      const fresh = stored.filter((s) => s.stored === 'new');
      const queueId = fresh.length > 0 ? tx.id : stored[0]?.stored === 'duplicate' ? stored[0].correlationId : tx.id;
      const text = `Ok: queued as ${queueId}`;
      logTransaction(session, tx, 'accepted', { reply: `250 ${text}`, size: guard.size, mailIds: stored.map((s) => s.mailId), duplicates: stored.length - fresh.length });
      return { reply: null, message: text };
    } catch (error) {
      return refuse(replies.storeFailed(), 'refused', error);
    }
  }

  /** A submission's local recipients that asked for a success notice get it (noticeLocalDelivered); a failure is logged, the mail is stored. */
  async function noticeLocalDeliveries(tx: Transaction, sender: LocalMailbox, sentMailId: string, deliveries: LocalDelivery[], message: MessageSummary, blobs: StoredBlobs, meta: Meta): Promise<void> {
    const recipients = deliveries.map((d) => d.recipient);
    try {
      await noticeLocalDelivered(store, {
        entry: { id: sentMailId, messageId: message.messageId ?? '', mailboxId: sender.id, userId: sender.userId, mailFrom: tx.mailFrom, sentAt: new Date(tx.startedAt).toISOString() },
        sent: { message, dsn: dsnRequest(tx.dsn, recipients) },
        recipients,
        raw: blobs.raw,
        heloName: config.SMTP_HOSTNAME,
        meta,
      });
    } catch (error) {
      log.error({ err: error, tx: tx.id }, 'the delivery status notice for local recipients could not be stored');
    }
  }

  /**
   * Mail from elsewhere whose sender asked for a success notice (NOTIFY=SUCCESS, RFC 3461 6.2):
   * this is the final delivery, so the notice is ours to send, through the relay (wherever one
   * runs). Only to an envelope sender whose domain's SPF vouched for the sending host, at most
   * NOTICES_PER_HOUR per sender domain, and never for mail that is itself automatic (a report, an
   * auto-reply), so that it cannot be aimed at someone else or loop. Stored once per received
   * message; a failure is logged, the mail is stored.
   */
  async function answerSuccessRequests(
    tx: Transaction,
    planned: PlannedAppend[],
    deliveries: LocalDelivery[],
    message: MessageSummary,
    blobs: StoredBlobs,
    facts: { spf: string | null; head: Buffer | null },
    meta: Meta,
  ): Promise<void> {
    const dsn = dsnRequest(tx.dsn, deliveries.map((d) => d.recipient));
    const asked = deliveries.filter((d) => noticeRequested(dsn, d.recipient, 'SUCCESS'));
    if (asked.length === 0 || !tx.mailFrom) return;
    const skip = (why: string): void => log.info({ tx: tx.id, mailFrom: tx.mailFrom, spf: facts.spf }, `no success notice sent: ${why}`);
    if (facts.spf !== 'pass') return skip('SPF does not vouch for the sender');
    if (facts.head && isAutomatic(facts.head)) return skip('the mail is itself automatic');
    const owner = asked[0]!.mailbox;
    // Keyed by the copy of the mailbox it is filed under: the same message received again is answered once.
    const keyedBy = planned.find((p) => p.event.type === 'MailReceived' && p.event.data.mailboxId === owner.id)?.mailId ?? planned[0]!.mailId;
    try {
      // A retry that was answered already costs the sender's domain nothing.
      if ((await store.events.readStream(mailStream(noticeMailId(keyedBy, 'delivered', 0)))).length > 0) return;
      if (!noticeRate.hit(domainOf(tx.mailFrom))) return skip('too many notices to this domain this hour');
      // Its header section goes into the notice; a bigger message's is left out rather than read whole.
      const raw = blobs.raw.size <= NOTICE_ORIGINAL_MAX ? await store.blobs.get(blobs.raw.sha256) : null;
      await sendNotice(store, {
        action: 'delivered',
        entry: { id: keyedBy, messageId: message.messageId ?? '', mailboxId: owner.id, userId: owner.userId, mailFrom: tx.mailFrom, sentAt: new Date(tx.startedAt).toISOString() },
        sent: { message, dsn },
        recipients: asked.map((d) => ({ recipient: d.recipient, response: '2.0.0 delivered to the mailbox' })),
        attempt: 0,
        raw,
        heloName: config.SMTP_HOSTNAME,
        reportingDomain: domainOf(asked[0]!.recipient),
        now: new Date(),
        meta,
      }, { requireTls: tx.requireTls });
    } catch (error) {
      log.error({ err: error, tx: tx.id }, 'the delivery status notice for the sender could not be stored');
    }
  }

  const options: SMTPServerOptions = {
    name: config.SMTP_HOSTNAME,
    banner: 'mailtrail',
    size: config.MAX_MESSAGE_SIZE,
    rejectOversized: true,
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: true,
    allowInsecureAuth: config.SMTP_ALLOW_INSECURE_AUTH,
    hideENHANCEDSTATUSCODES: false,
    // Requests are honoured for submissions; inbound mail is decided before the 250, so it has no
    // failure to report later, and its success requests are answered (answerSuccessRequests).
    hideDSN: false,
    // Offered over TLS only (smtp-server); a submission's request is kept for the relay, and
    // inbound mail is for local mailboxes, which it reaches without another hop.
    hideREQUIRETLS: false,
    disableReverseLookup: true,
    maxClients: config.SMTP_MAX_CONNECTIONS,
    maxRecipients: config.SMTP_MAX_RECIPIENTS,
    maxCommandLength: config.SMTP_MAX_COMMAND_LENGTH,
    socketTimeout: config.SMTP_IDLE_TIMEOUT_MS,
    closeTimeout: Math.max(1000, config.SMTP_SHUTDOWN_TIMEOUT_MS),
    key: material.key,
    cert: material.cert,
    logger: false,
    ...handlers,
  };

  const listen = (server: SMTPServer, port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.server.once('error', reject);
      server.listen(port, config.HOST, () => {
        server.server.off('error', reject);
        resolve((server.server.address() as AddressInfo).port);
      });
    });

  const servers: SMTPServer[] = [];
  const onServerError = (err: Error): void => log.warn({ err: err.message, code: (err as { code?: string }).code }, 'smtp connection error');
  const plain = new MailtrailSmtpServer(options);
  plain.on('error', onServerError);
  servers.push(plain);
  const port = await listen(plain, config.SMTP_PORT);
  let securePort: number | null = null;
  if (config.SMTPS_PORT !== undefined) {
    const secure = new MailtrailSmtpServer({ ...options, secure: true });
    secure.on('error', onServerError);
    servers.push(secure);
    securePort = await listen(secure, config.SMTPS_PORT);
  }
  log.info({ port, securePort, hostname: config.SMTP_HOSTNAME, selfSignedTls: material.selfSigned }, 'smtp listening');

  let closed: Promise<void> | null = null;
  return {
    port,
    securePort,
    close() {
      closed ??= (async () => {
        closing = true;
        const stopped = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
        /** Connections not receiving a message are told to come back later and closed. */
        const closeIdle = (): void => {
          for (const s of servers) {
            for (const c of [...s.connections]) {
              if (receiving.has(c.session.id)) continue;
              c.send(421, replyText(replies.shuttingDown()));
              c.close();
            }
          }
        };
        closeIdle();
        const inFlight = [...receiving.values()];
        if (inFlight.length) {
          log.info({ messages: inFlight.length }, 'smtp shutdown: finishing messages being received');
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([Promise.allSettled(inFlight), new Promise((r) => (timer = setTimeout(r, config.SMTP_SHUTDOWN_TIMEOUT_MS)))]);
          clearTimeout(timer);
        }
        closeIdle();
        await Promise.all(stopped);
      })();
      return closed;
    },
  };
}
