import { Readable } from 'node:stream';
import MimeNode from 'nodemailer/lib/mime-node';
import { v5 as uuidv5 } from 'uuid';
import type { OutboxDoc } from '../../projections/outbox.js';
import type { Meta, NewEvent } from '../events/envelope.js';
import type { BlobRef, DsnRequest, EventData, MessageSummary } from '../events/types.js';
import { messageSummary } from '../mail/commands.js';
import { rfc5322Date } from '../mail/headers.js';
import { mailStream } from '../mail/ids.js';
import { receiveMessage } from '../mail/intake.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';

/**
 * Delivery status notifications (RFC 3464) that a sender gets in their inbox: a bounce when a
 * recipient failed for good, and, when the submission asked for it (DSN, RFC 3461: NOTIFY=SUCCESS),
 * a report that the mail was relayed or delivered. From MAILER-DAEMON@<sender's domain>, stored
 * like any received mail (raw blob, then a `MailReceived` with a summary made by the same intake
 * SMTP uses). A sender elsewhere who asked for a success notice on mail to a local mailbox gets
 * it through the relay instead (`sendNotice`).
 */

const BOUNCE_NAMESPACE = '3d6f2b8e-9c41-4a7e-b5d0-8e1f4c2a7b63';

/**
 * One bounce per sent mail and attempt: a retried attempt (after a crash) lands on the same
 * stream. Keyed by the sent mail, not its Message-ID, which other mails may share (the same
 * message sent on to other recipients, or another user's message with the same id).
 */
export const bounceMailId = (sentMailId: string, attempt: number): string => noticeMailId(sentMailId, 'failed', attempt);
const NOTICE_KEY: Record<NoticeAction, string> = { failed: 'bounce', relayed: 'success', delivered: 'success', delayed: 'delay' };
/** Likewise for every notice: one per sent mail (or, for a notice to a sender elsewhere, received mail), attempt (0: the local recipients, at submission) and kind. */
export const noticeMailId = (sentMailId: string, action: NoticeAction, attempt: number): string => uuidv5(`${sentMailId}\n${NOTICE_KEY[action]}\n${attempt}`, BOUNCE_NAMESPACE);

/**
 * Whether the submission asked for a notice of `what` for `recipient`: with no NOTIFY given, a
 * failure gets one and a success or a delay does not (RFC 3461 4.1); NOTIFY=NEVER asks for none.
 */
export function noticeRequested(dsn: DsnRequest | undefined, recipient: string, what: 'SUCCESS' | 'FAILURE' | 'DELAY'): boolean {
  const asked = dsn?.recipients.find((r) => r.address.toLowerCase() === recipient.toLowerCase());
  if (!asked || asked.notify === null) return what === 'FAILURE';
  return asked.notify.includes(what);
}

/** What a DSN field shows of a value the client gave: one line of printable ASCII. */
const printable = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?');

/** The most of the original a failure notice returns whole when the submission asked for RET=FULL; a bigger one gets its header section. */
export const RETURN_FULL_MAX_BYTES = 1024 * 1024;

const domainOf = (address: string): string | null => {
  const at = address.lastIndexOf('@');
  return at > 0 && at < address.length - 1 ? address.slice(at + 1).toLowerCase() : null;
};

/** The header section of a message (what a DSN returns instead of the whole message). */
function headerSection(raw: Buffer): Buffer {
  const crlf = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 2 : lf >= 0 ? lf + 1 : raw.length;
  return raw.subarray(0, Math.min(end, 64 * 1024));
}

export type NoticeAction = 'failed' | 'delayed' | 'relayed' | 'delivered';

export interface NoticeInput {
  /** What happened to every recipient of this notice: one notice per action. */
  action: NoticeAction;
  entry: Pick<OutboxDoc, 'id' | 'messageId' | 'mailboxId' | 'userId' | 'mailFrom' | 'sentAt'>;
  sent: Pick<EventData<'MailSent'>, 'message' | 'dsn'>;
  /** The recipients, with the reply that decided each (a 250 for a success). */
  recipients: { recipient: string; response: string }[];
  attempt: number;
  /** A delay notice: until when the relay keeps trying. */
  willRetryUntil?: Date;
  /** The original message, for its header section (or all of it); null if its blob is unavailable. */
  raw: Buffer | null;
  heloName: string;
  /** The domain of the notice's MAILER-DAEMON: by default the sender's (local); a notice to a sender elsewhere comes from ours. */
  reportingDomain?: string;
  now: Date;
  meta: Meta;
}

/** A reply on one line (a multiline SMTP reply is joined). */
const oneLine = (s: string): string => s.replace(/\s+/g, ' ').trim();
/** One line of a delivery-status field: ASCII, bounded. */
const fieldText = (s: string): string => oneLine(s).replace(/[^\x20-\x7e]/g, '?').slice(0, 900);

/**
 * The recipient's status code (RFC 3463): the enhanced code a reply starts with ("550 5.1.1 …"),
 * else its reply code's class. Without a reply (a timeout, a refused connection, no MX) the code
 * says so: a delay 4.4.1 (no answer from host); a failure 4.4.7 once the retries ran out, else
 * 5.4.4 (unable to route).
 */
export function statusOf(response: string, action: NoticeAction): string {
  const reply = /^([245])\d\d(?:[ -]([245]\.\d{1,3}\.\d{1,3})\b)?/.exec(response);
  // The class is the action's (RFC 3464 2.3.4): a 5xx the relay retries (a smart host refusing its
  // login) is still a delay; a success is 2.
  const cls = action === 'delayed' ? '4' : action === 'relayed' || action === 'delivered' ? '2' : null;
  if (reply) {
    const code = reply[2] && reply[2][0] === reply[1] ? reply[2] : `${reply[1]}.0.0`;
    return cls ? `${cls}${code.slice(1)}` : code;
  }
  if (action === 'delayed') return '4.4.1';
  if (action === 'failed') return /retry deadline passed/.test(response) ? '4.4.7' : '5.4.4';
  return '2.0.0';
}

/**
 * The `message/delivery-status` body (RFC 3464): the per-message fields, then one block per
 * recipient. A reply from the receiving server is its `smtp` diagnostic; a failure before any
 * reply (no MX, a refused connection) has none, and the human-readable part says what it was.
 * ENVID and ORCPT come back as the submission gave them.
 */
function deliveryStatus(input: NoticeInput): string {
  const { dsn } = input.sent;
  const blocks = [
    [
      ...(dsn?.envid ? [`Original-Envelope-Id: ${printable(dsn.envid)}`] : []),
      `Reporting-MTA: dns; ${input.heloName}`,
      `Arrival-Date: ${rfc5322Date(new Date(input.entry.sentAt))}`,
    ],
  ];
  for (const r of input.recipients) {
    const orcpt = dsn?.recipients.find((x) => x.address.toLowerCase() === r.recipient.toLowerCase())?.orcpt;
    blocks.push([
      ...(orcpt ? [`Original-Recipient: ${printable(orcpt)}`] : []),
      `Final-Recipient: ${/^[\x20-\x7e]*$/.test(r.recipient) ? 'rfc822' : 'utf-8'}; ${r.recipient.replace(/[\r\n]/g, '')}`,
      `Action: ${input.action}`,
      `Status: ${statusOf(r.response, input.action)}`,
      ...(/^\d{3}[ -]/.test(r.response) ? [`Diagnostic-Code: smtp; ${fieldText(r.response)}`] : []),
      `Last-Attempt-Date: ${rfc5322Date(input.now)}`,
      ...(input.action === 'delayed' && input.willRetryUntil ? [`Will-Retry-Until: ${rfc5322Date(input.willRetryUntil)}`] : []),
    ]);
  }
  return blocks.map((lines) => `${lines.join('\r\n')}\r\n`).join('\r\n');
}

/** The human-readable part. */
function noticeText(input: NoticeInput, returned: 'whole' | 'headers' | null): string {
  const who = input.recipients.map((r) => r.recipient).join(', ');
  const lines = input.recipients.map((r) => `  ${r.recipient}: ${oneLine(r.response)}`);
  const original = `Original message: "${input.sent.message.subject}", Message-ID ${input.entry.messageId}, sent ${input.entry.sentAt}`;
  const attached = returned === 'whole' ? 'It is attached.' : returned === 'headers' ? 'Its header section is attached.' : '';
  if (input.action === 'failed') {
    const first = input.recipients[0];
    return [
      `Your message could not be delivered to ${who}${input.recipients.length === 1 && first ? `: ${oneLine(first.response)}` : '.'}`,
      '',
      `This is the mail system at ${input.heloName}. The following recipient(s) failed permanently:`,
      '',
      ...lines,
      '',
      `${original}, after ${input.attempt} attempt(s).`,
      attached,
      '',
    ].join('\n');
  }
  if (input.action === 'delayed') {
    return [
      `Your message has not been delivered to ${who} yet. There is nothing you need to do:`,
      `the mail system at ${input.heloName} keeps trying${input.willRetryUntil ? ` until ${rfc5322Date(input.willRetryUntil)}` : ''}, and you get a notice if it gives up.`,
      '',
      ...lines,
      '',
      `${original}, ${input.attempt} attempt(s) so far.`,
      attached,
      '',
    ].join('\n');
  }
  return [
    input.action === 'delivered'
      ? `Your message was delivered to ${who}, as you asked to be told.`
      : `Your message was handed on to the mail server of ${who}, as you asked to be told. This server does not pass your request on, so you hear no more unless that server or one after it cannot deliver it.`,
    '',
    `This is the mail system at ${input.heloName}.`,
    '',
    ...lines,
    '',
    `${original}.`,
    attached,
    '',
  ].join('\n');
}

const SUBJECTS: Record<NoticeAction, string> = {
  failed: 'Undelivered Mail Returned to Sender',
  delayed: 'Delayed Mail (still being retried)',
  relayed: 'Successful Mail Delivery Report',
  delivered: 'Successful Mail Delivery Report',
};

/**
 * The raw notice: a delivery status notification (RFC 3464, `multipart/report`) with a
 * human-readable part, the machine-readable status of each recipient, and the original's header
 * section — or the whole original, for a failure when the submission asked for it (RET=FULL) and it
 * is not too big.
 */
export async function composeNotice(input: NoticeInput, mailId: string): Promise<Buffer> {
  const domain = input.reportingDomain ?? domainOf(input.entry.mailFrom) ?? input.heloName;
  const whole = input.raw !== null && input.action === 'failed' && input.sent.dsn?.ret === 'FULL' && input.raw.length <= RETURN_FULL_MAX_BYTES;
  const returned = input.raw === null ? null : whole ? 'whole' : 'headers';
  // Boundaries from the notice's id: the same notice is the same bytes.
  const report = new MimeNode('multipart/report; report-type=delivery-status', { baseBoundary: mailId, newline: 'win' });
  report.setHeader({
    from: { name: 'Mail Delivery System', address: `MAILER-DAEMON@${domain}` },
    to: input.entry.mailFrom,
    subject: SUBJECTS[input.action],
    'message-id': `<${mailId}@${domain}>`,
    date: input.now,
    'in-reply-to': input.entry.messageId,
    references: input.entry.messageId,
    'auto-submitted': 'auto-replied',
  });
  report.createChild('text/plain; charset=utf-8').setContent(noticeText(input, returned));
  report.createChild('message/delivery-status').setContent(deliveryStatus(input));
  if (input.raw && whole) {
    const original = report.createChild('message/rfc822', { filename: 'original.eml' }).setContent(input.raw);
    // A message/rfc822 part is never encoded: say so when the original has 8-bit bytes (RFC 2046 5.2.1).
    if (input.raw.some((b) => b > 0x7f)) original.setHeader('content-transfer-encoding', '8bit');
  }
  else if (input.raw) report.createChild('text/rfc822-headers', { filename: 'original-headers.txt' }).setContent(headerSection(input.raw));
  return report.build();
}

/**
 * Puts the notice into the sender's inbox unless it is there already. Appended with "no stream"
 * under a deterministic mail id (per sent mail, attempt and kind), so a retry never sends it
 * twice. A null sender (a bounce itself) gets no notice. Returns the notice's mail id, or null
 * when none was due.
 */
export async function deliverNotice(store: Store, input: NoticeInput): Promise<string | null> {
  return storeNotice(store, input, (mailId, raw, message) => ({
    type: 'MailReceived',
    data: {
      mailId,
      mailboxId: input.entry.mailboxId,
      userId: input.entry.userId,
      raw,
      envelope: { mailFrom: '', rcptTo: [input.entry.mailFrom], remoteAddress: '127.0.0.1', helo: input.heloName, tls: false, authUser: null },
      message,
      authResults: null,
    },
  }));
}

/**
 * The sender's "delivered" notice for the local recipients of a send that asked for one
 * (NOTIFY=SUCCESS), once their copies are stored (the relay reports on the others). Stored once
 * per sent mail, whoever retries.
 */
export async function noticeLocalDelivered(
  store: Store,
  input: Pick<NoticeInput, 'entry' | 'sent' | 'heloName' | 'meta'> & { recipients: string[]; raw: BlobRef },
): Promise<string | null> {
  const recipients = input.recipients.filter((r) => noticeRequested(input.sent.dsn, r, 'SUCCESS')).map((recipient) => ({ recipient, response: '2.0.0 delivered to the mailbox' }));
  if (recipients.length === 0) return null;
  // Stored already (nearly always, when the local delivery follower goes over the send): no blob read.
  const mailId = noticeMailId(input.entry.id, 'delivered', 0);
  if ((await store.events.readStream(mailStream(mailId))).length > 0) return mailId;
  // Without the original (freed by blobs:gc after the mail was deleted) the notice goes without its header section.
  const raw = await store.blobs.get(input.raw.sha256).catch(() => null);
  return deliverNotice(store, { ...input, action: 'delivered', recipients, attempt: 0, raw, now: new Date() });
}

/**
 * Sends the notice to a sender elsewhere (a success they asked for on mail to a local mailbox):
 * from the null sender, through the relay, as a `MailSent` marked `notice` and filed under the
 * recipient's mailbox (`entry`). Once per received message, like `deliverNotice`; a notice that
 * cannot be delivered bounces to no one. Smart hosts that refuse the null sender drop it.
 */
export async function sendNotice(store: Store, input: NoticeInput, opts: { requireTls?: boolean } = {}): Promise<string | null> {
  return storeNotice(store, input, (mailId, raw, message) => ({
    type: 'MailSent',
    data: {
      mailId,
      mailboxId: input.entry.mailboxId,
      userId: input.entry.userId,
      messageId: message.messageId ?? `<${mailId}@${input.heloName}>`,
      raw,
      envelope: { mailFrom: '', rcptTo: [input.entry.mailFrom] },
      message,
      bcc: [],
      wasDraft: false,
      notice: true,
      // Its header section is the original's: it goes on as the original had to (RFC 8689 5).
      ...(opts.requireTls ? { requireTls: true as const } : {}),
    },
  }));
}

/** Composes the notice, stores its blobs and appends `event` for it under its own id, unless it is there already. */
async function storeNotice(store: Store, input: NoticeInput, event: (mailId: string, raw: BlobRef, message: MessageSummary) => NewEvent): Promise<string | null> {
  if (!domainOf(input.entry.mailFrom) || input.recipients.length === 0) return null;
  const mailId = noticeMailId(input.entry.id, input.action, input.attempt);
  const stream = mailStream(mailId);
  if ((await store.events.readStream(stream)).length > 0) return mailId;
  const raw = await composeNotice(input, mailId);
  const outcome = await receiveMessage(Readable.from([raw]), { blobs: store.blobs });
  if (outcome.kind !== 'received') {
    throw new Error(`delivery status notice could not be stored (${outcome.kind}${outcome.kind === 'failed' ? `: ${outcome.error.message}` : ''})`);
  }
  const blobs = await outcome.message.commit();
  try {
    await store.events.append(stream, [event(mailId, blobs.raw, messageSummary(outcome.message.summary, blobs))], { expectedVersion: 'no_stream', meta: input.meta });
  } catch (error) {
    if (!(error instanceof WrongExpectedVersionError)) throw error; // someone else stored this notice
  }
  return mailId;
}
