import { createHash } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import type { MailboxDoc } from '../../projections/mailboxes.js';
import { recipientMailbox, sendsAs } from '../accounts/aliases.js';
import { domainOf, isLocalDomain } from '../accounts/domains.js';
import type { Meta } from '../events/envelope.js';
import type { BlobStore, Store } from '../store/port.js';
import type { Draft, DsnRequest, EventData, MessageSummary } from '../events/types.js';
import { appendMails, planLocalCopies } from '../mail/commands.js';
import { mailStream } from '../mail/ids.js';
import { snippetOf } from '../mail/summary.js';
import { noticeLocalDelivered } from '../relay/dsn.js';
import { CommandError, mailState, ownDraft } from './decide.js';

export interface SendResult {
  id: string;
  messageId: string;
  status: 'queued' | 'sent';
  position: number;
}


/**
 * The final MIME of a draft, built once. Everything that MailComposer would draw at random or from
 * the clock is derived from the draft's stream (Message-ID from the mail id, Date from the last
 * edit, multipart boundaries from both), so two racing sends build the same bytes and their local
 * copies coincide.
 */
async function buildMime(blobs: BlobStore, draft: Draft, from: { name: string; address: string }, messageId: string, date: Date, seed: string): Promise<Buffer> {
  const text = draft.text ? (await blobs.get(draft.text.sha256)).toString('utf8') : undefined;
  const html = draft.html ? (await blobs.get(draft.html.sha256)).toString('utf8') : undefined;
  const attachments = await Promise.all(
    draft.attachments.map(async (a) => ({ filename: a.filename ?? undefined, contentType: a.contentType, content: await blobs.get(a.sha256) })),
  );
  const composer = new MailComposer({
    from,
    to: draft.to,
    cc: draft.cc,
    // Bcc recipients are in the envelope only: MailComposer leaves the header out.
    bcc: draft.bcc,
    subject: draft.subject,
    text,
    html,
    attachments,
    messageId,
    date,
    inReplyTo: draft.inReplyTo ?? undefined,
    references: draft.references.length ? draft.references : undefined,
    baseBoundary: createHash('sha256').update(seed).digest('hex').slice(0, 16),
  });
  return composer.compile().build();
}

/** A delivery receipt as SMTP clients ask for one: success and failure notices for every recipient. */
const receiptRequest = (recipients: string[]): DsnRequest => ({ ret: null, envid: null, recipients: recipients.map((address) => ({ address, notify: ['SUCCESS', 'FAILURE'], orcpt: null })) });

/**
 * mails.send: the draft becomes a `MailSent` (appended with the draft's version expected, so it is
 * sent once however often send is called), then every local recipient gets a `MailReceived` copy
 * and, with `deliveryReceipt`, the sender a `delivered` notice for them; the relay delivers the
 * external recipients from `MailSent`.
 */
export async function sendDraft(
  store: Store,
  /** Which domains are local, and the recipient delimiter (bob+tag@ is bob@; empty: off); the host name notices report from. */
  local: { defaultDomain: string; recipientDelimiter: string; smtpHostname?: string },
  cmd: {
    mailId: string;
    user: { id: string; email: string; name: string };
    mailbox: MailboxDoc;
    meta: Meta;
    /** Ask for a notice of each recipient's delivery, or of its failure (DSN NOTIFY=SUCCESS,FAILURE). */
    deliveryReceipt?: boolean;
  },
  /** Told when the copies could not be appended after MailSent: the send stands, the local delivery follower stores them. */
  copiesLeftOut: (error: unknown) => void = () => undefined,
  /** Told when the delivery receipt for the local recipients could not be stored: the send stands. */
  noticeFailed: (error: unknown) => void = () => undefined,
): Promise<SendResult> {
  const stream = mailStream(cmd.mailId);
  const events = await store.events.readStream(stream);
  const draft = ownDraft(mailState(events), cmd.user.id, cmd.mailId);
  const recipients = [...new Map([...draft.draft.to, ...draft.draft.cc, ...draft.draft.bcc].map((a) => [a.address.toLowerCase(), a.address])).values()];
  if (recipients.length === 0) throw new CommandError('BAD_REQUEST', 'to: a mail needs at least one recipient');

  const copies: NonNullable<EventData<'MailSent'>['localCopies']>['recipients'] = [];
  const external: string[] = [];
  for (const address of recipients) {
    if (!(await isLocalDomain(store, local.defaultDomain, domainOf(address)))) {
      external.push(address);
      continue;
    }
    const mailbox = await recipientMailbox(store, address, local.recipientDelimiter);
    if (!mailbox) throw new CommandError('BAD_REQUEST', `to: there is no mailbox ${address} on this server`);
    copies.push({ address, mailboxId: mailbox.id, userId: mailbox.userId });
  }

  // An alias removed since the draft named it is refused, not quietly swapped for another address.
  const fromAddress = draft.draft.from ?? cmd.mailbox.address;
  if (!(await sendsAs(store, cmd.mailbox, fromAddress, local.recipientDelimiter))) throw new CommandError('BAD_REQUEST', `from: ${fromAddress} is no longer an address of yours; choose another`);
  const messageId = `<${cmd.mailId}@${domainOf(fromAddress)}>`;
  const lastEdit = events.at(-1)!;
  const from = { name: cmd.user.name, address: fromAddress };
  const raw = await store.blobs.put(await buildMime(store.blobs, draft.draft, from, messageId, new Date(lastEdit.recordedAt), `${cmd.mailId}:${draft.version}`));
  const d = draft.draft;
  const text = d.text ? (await store.blobs.get(d.text.sha256)).toString('utf8') : undefined;
  const html = d.html ? (await store.blobs.get(d.html.sha256)).toString('utf8') : undefined;
  const message: MessageSummary = {
    messageId,
    subject: d.subject,
    from: [from],
    to: d.to,
    cc: d.cc,
    date: lastEdit.recordedAt,
    inReplyTo: d.inReplyTo,
    references: d.references,
    snippet: snippetOf(text, html),
    text: d.text,
    html: d.html,
    attachments: d.attachments,
  };
  // MailSent first: it is appended at the draft's version, so a send that loses a race (another send,
  // an edit) fails here and no local recipient gets a copy of a mail that was not sent. It names
  // the local recipients, so that their copies, appended next, are never lost: after a crash
  // between the two appends the local delivery follower appends them from MailSent.
  const data: EventData<'MailSent'> = {
    mailId: cmd.mailId,
    mailboxId: cmd.mailbox.id,
    userId: cmd.user.id,
    messageId,
    raw,
    envelope: { mailFrom: fromAddress, rcptTo: external },
    message,
    bcc: d.bcc,
    wasDraft: true,
    // For every recipient: the relay reads its own, the local delivery follower the local ones (a receipt a crash left out).
    ...(cmd.deliveryReceipt ? { dsn: receiptRequest(recipients) } : {}),
    ...(copies.length > 0 ? { localCopies: { authUser: cmd.user.email, recipients: copies } } : {}),
  };
  const sent = await store.events.append(stream, [{ type: 'MailSent', data }], { expectedVersion: draft.version, meta: cmd.meta });
  // The mail is sent from here on: an error now must not tell the sender otherwise (a retry would
  // only hear "already sent"). Copies left out are the follower's to store, as after a crash.
  const stored = await appendMails(store, planLocalCopies(data), cmd.meta).then(
    () => true,
    (error: unknown) => (copiesLeftOut(error), false),
  );
  if (cmd.deliveryReceipt && stored && copies.length > 0) {
    await noticeLocalDelivered(store, {
      entry: { id: cmd.mailId, messageId, mailboxId: cmd.mailbox.id, userId: cmd.user.id, mailFrom: fromAddress, sentAt: new Date().toISOString() },
      sent: { message, dsn: data.dsn },
      recipients: copies.map((c) => c.address),
      raw,
      heloName: local.smtpHostname ?? local.defaultDomain,
      meta: cmd.meta,
    }).catch(noticeFailed);
  }
  return { id: cmd.mailId, messageId: messageId.slice(1, -1), status: external.length ? 'queued' : 'sent', position: sent.lastPosition };
}
