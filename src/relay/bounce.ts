import { Readable } from 'node:stream';
import MimeNode from 'nodemailer/lib/mime-node';
import { v5 as uuidv5 } from 'uuid';
import type { OutboxDoc } from '../../projections/outbox.js';
import type { Meta } from '../events/envelope.js';
import type { EventData } from '../events/types.js';
import { messageSummary } from '../mail/commands.js';
import { rfc5322Date } from '../mail/headers.js';
import { mailStream } from '../mail/ids.js';
import { receiveMessage } from '../mail/intake.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';

/**
 * The bounce notice a sender gets in their inbox when a recipient failed for good: a delivery
 * status notification (RFC 3464) from MAILER-DAEMON@<sender's domain>, stored like any received mail (raw blob, then a
 * `MailReceived` with a summary made by the same intake SMTP uses).
 */

const BOUNCE_NAMESPACE = '3d6f2b8e-9c41-4a7e-b5d0-8e1f4c2a7b63';

/**
 * One bounce per sent mail and attempt: a retried attempt (after a crash) lands on the same
 * stream. Keyed by the sent mail, not its Message-ID, which other mails may share (the same
 * message sent on to other recipients, or another user's message with the same id).
 */
export const bounceMailId = (sentMailId: string, attempt: number): string => uuidv5(`${sentMailId}\nbounce\n${attempt}`, BOUNCE_NAMESPACE);

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

export interface BounceInput {
  entry: OutboxDoc;
  sent: EventData<'MailSent'>;
  failures: { recipient: string; response: string }[];
  attempt: number;
  /** The original message, for its header section; null if its blob is unavailable. */
  raw: Buffer | null;
  heloName: string;
  now: Date;
  meta: Meta;
}

/** A reply on one line (a multiline SMTP reply is joined). */
const oneLine = (s: string): string => s.replace(/\s+/g, ' ').trim();
/** One line of a delivery-status field: ASCII, bounded. */
const fieldText = (s: string): string => oneLine(s).replace(/[^\x20-\x7e]/g, '?').slice(0, 900);

/** The recipient's status code (RFC 3463): the enhanced code of the reply, else its class. */
function statusOf(response: string): string {
  const enhanced = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(response);
  if (enhanced) return enhanced[1]!;
  return response.startsWith('4') ? '4.0.0' : '5.0.0';
}

/**
 * The `message/delivery-status` body (RFC 3464): the per-message fields, then one block per
 * failed recipient. A reply from the receiving server is its `smtp` diagnostic; a failure before
 * any reply (no MX, a refused connection) has none, and the human-readable part says what it was.
 */
function deliveryStatus(input: BounceInput): string {
  const blocks = [[`Reporting-MTA: dns; ${input.heloName}`, `Arrival-Date: ${rfc5322Date(new Date(input.entry.sentAt))}`]];
  for (const f of input.failures) {
    blocks.push([
      `Final-Recipient: ${/^[\x20-\x7e]*$/.test(f.recipient) ? 'rfc822' : 'utf-8'}; ${f.recipient.replace(/[\r\n]/g, '')}`,
      'Action: failed',
      `Status: ${statusOf(f.response)}`,
      ...(/^\d{3}[ -]/.test(f.response) ? [`Diagnostic-Code: smtp; ${fieldText(f.response)}`] : []),
      `Last-Attempt-Date: ${rfc5322Date(input.now)}`,
    ]);
  }
  return blocks.map((lines) => `${lines.join('\r\n')}\r\n`).join('\r\n');
}

/**
 * The raw bounce: a delivery status notification (RFC 3464, `multipart/report`) with a
 * human-readable part, the machine-readable status of each failed recipient, and the original's
 * header section.
 */
export async function composeBounce(input: BounceInput, mailId: string): Promise<Buffer> {
  const domain = domainOf(input.entry.mailFrom) ?? input.heloName;
  const lines = input.failures.map((f) => `  ${f.recipient}: ${oneLine(f.response)}`);
  const who = input.failures.map((f) => f.recipient).join(', ');
  const first = input.failures[0];
  const text = [
    `Your message could not be delivered to ${who}${input.failures.length === 1 && first ? `: ${oneLine(first.response)}` : '.'}`,
    '',
    `This is the mail system at ${input.heloName}. The following recipient(s) failed permanently:`,
    '',
    ...lines,
    '',
    `Original message: "${input.sent.message.subject}", Message-ID ${input.entry.messageId}, sent ${input.entry.sentAt}, after ${input.attempt} attempt(s).`,
    input.raw ? 'Its header section is attached.' : '',
    '',
  ].join('\n');
  // Boundaries from the bounce's id: the same bounce is the same bytes.
  const report = new MimeNode('multipart/report; report-type=delivery-status', { baseBoundary: mailId, newline: 'win' });
  report.setHeader({
    from: { name: 'Mail Delivery System', address: `MAILER-DAEMON@${domain}` },
    to: input.entry.mailFrom,
    subject: 'Undelivered Mail Returned to Sender',
    'message-id': `<${mailId}@${domain}>`,
    date: input.now,
    'in-reply-to': input.entry.messageId,
    references: input.entry.messageId,
    'auto-submitted': 'auto-replied',
  });
  report.createChild('text/plain; charset=utf-8').setContent(text);
  report.createChild('message/delivery-status').setContent(deliveryStatus(input));
  if (input.raw) report.createChild('text/rfc822-headers', { filename: 'original-headers.txt' }).setContent(headerSection(input.raw));
  return report.build();
}

/**
 * Puts the bounce into the sender's inbox unless it is there already. Appended with "no stream"
 * under a deterministic mail id, so a retry never bounces twice. A null sender (a bounce itself)
 * gets no bounce. Returns the bounce's mail id, or null when none was due.
 */
export async function deliverBounce(store: Store, input: BounceInput): Promise<string | null> {
  if (!domainOf(input.entry.mailFrom) || input.failures.length === 0) return null;
  const mailId = bounceMailId(input.entry.id, input.attempt);
  const stream = mailStream(mailId);
  if ((await store.events.readStream(stream)).length > 0) return mailId;
  const raw = await composeBounce(input, mailId);
  const outcome = await receiveMessage(Readable.from([raw]), { blobs: store.blobs });
  if (outcome.kind !== 'received') {
    throw new Error(`bounce message could not be stored (${outcome.kind}${outcome.kind === 'failed' ? `: ${outcome.error.message}` : ''})`);
  }
  const blobs = await outcome.message.commit();
  try {
    await store.events.append(
      stream,
      [
        {
          type: 'MailReceived',
          data: {
            mailId,
            mailboxId: input.entry.mailboxId,
            userId: input.entry.userId,
            raw: blobs.raw,
            envelope: { mailFrom: '', rcptTo: [input.entry.mailFrom], remoteAddress: '127.0.0.1', helo: input.heloName, tls: false, authUser: null },
            message: messageSummary(outcome.message.summary, blobs),
            authResults: null,
          },
        },
      ],
      { expectedVersion: 'no_stream', meta: input.meta },
    );
  } catch (error) {
    if (!(error instanceof WrongExpectedVersionError)) throw error; // someone else bounced this attempt
  }
  return mailId;
}
