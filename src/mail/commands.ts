import type { Meta, NewEvent } from '../events/envelope.js';
import type { Address, DsnRequest, EventData, MessageSummary } from '../events/types.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';
import { inboundMailId, mailStream, sentMailId } from './ids.js';
import type { StoredBlobs } from './intake.js';
import type { SummaryFields } from './summary.js';

/**
 * Mail commands shared by SMTP and the API: pure functions that decide which events a
 * received or submitted message becomes, and the one function that appends them.
 */

export interface LocalMailbox {
  id: string;
  userId: string;
  address: string;
}

/** One envelope recipient that is a local mailbox. */
export interface LocalDelivery {
  mailbox: Pick<LocalMailbox, 'id' | 'userId'>;
  /** The RCPT TO address as the client gave it. */
  recipient: string;
}

/** What makes two deliveries "the same message": Message-ID as received and the bytes as received. */
export interface DedupeKey {
  messageId: string | null;
  sha256: string;
}

export type ReceivedEnvelope = EventData<'MailReceived'>['envelope'];
export type AuthResults = EventData<'MailReceived'>['authResults'];

export interface PlannedAppend {
  streamId: string;
  mailId: string;
  event: NewEvent;
}

export const messageSummary = (fields: SummaryFields, blobs: StoredBlobs): MessageSummary => ({
  ...fields,
  text: blobs.text,
  html: blobs.html,
  attachments: blobs.attachments,
});

/**
 * One `MailReceived` per local mailbox among the envelope recipients (the envelope is the truth:
 * Bcc recipients get their copy, To/Cc headers naming others do not). Each copy's envelope lists
 * only its own recipient, so a Bcc recipient is never revealed to the others.
 */
export function planInbound(input: {
  deliveries: LocalDelivery[];
  dedupe: DedupeKey;
  raw: StoredBlobs['raw'];
  message: MessageSummary;
  envelope: Omit<ReceivedEnvelope, 'rcptTo'>;
  authResults: AuthResults;
}): PlannedAppend[] {
  const seen = new Set<string>();
  const out: PlannedAppend[] = [];
  for (const d of input.deliveries) {
    if (seen.has(d.mailbox.id)) continue;
    seen.add(d.mailbox.id);
    const mailId = inboundMailId(d.mailbox.id, input.dedupe.messageId, input.dedupe.sha256);
    out.push({
      streamId: mailStream(mailId),
      mailId,
      event: {
        type: 'MailReceived',
        data: {
          mailId,
          mailboxId: d.mailbox.id,
          userId: d.mailbox.userId,
          raw: input.raw,
          envelope: { ...input.envelope, rcptTo: [d.recipient] },
          message: input.message,
          authResults: input.authResults,
        },
      },
    });
  }
  return out;
}

/**
 * The copies that a send from the API decided for its local recipients (none for an SMTP
 * submission, which stores its copies itself). The API appends them after `MailSent`, and the
 * local delivery follower again after a crash: both plan the same streams, so each is stored once.
 */
export function planLocalCopies(sent: EventData<'MailSent'>): PlannedAppend[] {
  if (!sent.localCopies) return [];
  return planInbound({
    deliveries: sent.localCopies.recipients.map((r) => ({ mailbox: { id: r.mailboxId, userId: r.userId }, recipient: r.address })),
    dedupe: { messageId: sent.messageId, sha256: sent.raw.sha256 },
    raw: sent.raw,
    message: sent.message,
    envelope: { mailFrom: sent.envelope.mailFrom, remoteAddress: 'api', helo: 'api', tls: true, authUser: sent.localCopies.authUser },
    authResults: null,
  });
}

/** The sender's copy of a submission, in its `sent` folder; `relayTo` is what the relay must deliver. */
export function planSent(input: {
  sender: LocalMailbox;
  mailFrom: string;
  relayTo: string[];
  dedupe: DedupeKey;
  messageId: string;
  raw: StoredBlobs['raw'];
  message: MessageSummary;
  bcc: Address[];
  /** The DSN parameters the client gave for the relayed recipients, if any. */
  dsn?: DsnRequest | undefined;
  /** The client gave REQUIRETLS. */
  requireTls?: boolean;
}): PlannedAppend {
  const mailId = sentMailId(input.sender.id, input.dedupe.messageId ?? '', input.dedupe.sha256, input.relayTo);
  return {
    streamId: mailStream(mailId),
    mailId,
    event: {
      type: 'MailSent',
      data: {
        mailId,
        mailboxId: input.sender.id,
        userId: input.sender.userId,
        messageId: input.messageId,
        raw: input.raw,
        envelope: { mailFrom: input.mailFrom, rcptTo: input.relayTo },
        message: input.message,
        bcc: input.bcc,
        wasDraft: false,
        ...(input.dsn ? { dsn: input.dsn } : {}),
        ...(input.requireTls ? { requireTls: true as const } : {}),
      },
    },
  };
}

/**
 * Bcc of a submission: the Bcc header field's addresses, plus envelope recipients that no To or
 * Cc header names.
 */
export function submissionBcc(recipients: string[], message: Pick<MessageSummary, 'to' | 'cc'>, headerBcc: Address[]): Address[] {
  const visible = new Set([...message.to, ...message.cc].map((a) => a.address.toLowerCase()));
  const out = new Map<string, Address>();
  for (const a of headerBcc) out.set(a.address.toLowerCase(), a);
  for (const r of recipients) {
    const key = r.toLowerCase();
    if (!visible.has(key) && !out.has(key)) out.set(key, { name: '', address: r });
  }
  return [...out.values()];
}

export type AppendOutcome =
  | { mailId: string; stored: 'new'; position: number }
  /** Already in the log (a retry): `correlationId` is the one it was first stored under. */
  | { mailId: string; stored: 'duplicate'; correlationId: string };

/**
 * Appends each planned mail to its own stream with "no stream" expected. They are issued in the
 * same tick, so the SQLite store commits them (and those of concurrent sessions) in one
 * transaction. A stream that exists already is a retry of a stored message: not an error.
 */
export async function appendMails(store: Store, planned: PlannedAppend[], meta: Meta): Promise<AppendOutcome[]> {
  return Promise.all(
    planned.map(async (p): Promise<AppendOutcome> => {
      try {
        const r = await store.events.append(p.streamId, [p.event], { expectedVersion: 'no_stream', meta });
        return { mailId: p.mailId, stored: 'new', position: r.lastPosition };
      } catch (error) {
        if (!(error instanceof WrongExpectedVersionError)) throw error;
        const [first] = await store.events.readStream(p.streamId);
        return { mailId: p.mailId, stored: 'duplicate', correlationId: first?.meta.correlationId ?? meta.correlationId };
      }
    }),
  );
}
