import type { EventOf } from '../src/events/envelope.js';
import type { Address, Attachment, BlobRef, Draft, MessageSummary } from '../src/events/types.js';
import { defineProjection } from '../src/projection/projection.js';

export type Folder = 'inbox' | 'sent' | 'drafts' | 'trash';
export type MailStatus = 'received' | 'draft' | 'queued' | 'sent' | 'failed';
export type RecipientState = { state: 'queued' | 'sent' | 'failed'; attempts: number; response: string | null };

export type MailDoc = {
  id: string;
  mailboxId: string;
  userId: string;
  folder: Folder;
  /** Where a mail in the trash came from, and goes back to; null outside the trash. */
  trashedFrom: 'inbox' | 'sent' | null;
  status: MailStatus;
  /** Without angle brackets; null for drafts and for received mail that had none. */
  messageId: string | null;
  from: Address[];
  to: Address[];
  cc: Address[];
  bcc: Address[];
  subject: string;
  snippet: string;
  /** The Date header, else when mailtrail recorded the mail. */
  date: string;
  /** When the mail entered its folder: the order of listings. */
  sortAt: string;
  unread: boolean;
  hasAttachments: boolean;
  attachments: Attachment[];
  text: BlobRef | null;
  html: BlobRef | null;
  raw: BlobRef | null;
  inReplyTo: string | null;
  references: string[];
  authResults: EventOf<'MailReceived'>['data']['authResults'];
  /** Delivery state per relayed recipient (sent mail only). */
  recipients: Record<string, RecipientState>;
};

const stripBrackets = (id: string | null): string | null => (id === null ? null : id.replace(/^<|>$/g, ''));

function fromSummary(m: MessageSummary, recordedAt: string) {
  return {
    messageId: stripBrackets(m.messageId),
    from: m.from,
    to: m.to,
    cc: m.cc,
    subject: m.subject,
    snippet: m.snippet,
    date: m.date ?? recordedAt,
    hasAttachments: m.attachments.length > 0,
    attachments: m.attachments,
    text: m.text,
    html: m.html,
    inReplyTo: m.inReplyTo,
    references: m.references,
  };
}

function fromDraft(d: Draft) {
  return {
    to: d.to,
    cc: d.cc,
    bcc: d.bcc,
    subject: d.subject,
    text: d.text,
    html: d.html,
    attachments: d.attachments,
    hasAttachments: d.attachments.length > 0,
    inReplyTo: d.inReplyTo,
    references: d.references,
    // A draft shows the alias it goes out from; none: the mailbox's own address, at send.
    from: d.from ? [{ name: '', address: d.from }] : [],
  };
}

/** Sent mail is final once every relayed recipient is; it failed if any recipient did. */
function deliveryStatus(recipients: Record<string, RecipientState>): MailStatus {
  const states = Object.values(recipients).map((r) => r.state);
  if (states.includes('queued')) return 'queued';
  return states.includes('failed') ? 'failed' : 'sent';
}

function recordAttempt(
  doc: MailDoc,
  recipients: string[],
  state: RecipientState['state'],
  attempt: number,
  response: string,
): MailDoc {
  const next = { ...doc.recipients };
  for (const r of recipients) next[r.toLowerCase()] = { state, attempts: attempt, response };
  return { ...doc, recipients: next, status: deliveryStatus(next) };
}

/** One document per mail in a mailbox: what listings and the reader show. */
export const mails = defineProjection<MailDoc>({
  spec: {
    name: 'mails',
    indexed: ['userId', 'mailboxId', 'folder', 'sortAt', 'messageId'],
    indexes: [['userId', 'folder', 'sortAt'], ['mailboxId', 'messageId']],
  },
  version: 1,
  keys: (e) => ('mailId' in e.data ? [e.data.mailId] : []),
  evolve(doc, e) {
    switch (e.type) {
      case 'DraftCreated':
        return {
          id: e.data.mailId,
          mailboxId: e.data.mailboxId,
          userId: e.data.userId,
          folder: 'drafts',
          trashedFrom: null,
          status: 'draft',
          messageId: null,
          snippet: '',
          date: e.recordedAt,
          sortAt: e.recordedAt,
          unread: false,
          raw: null,
          authResults: null,
          recipients: {},
          ...fromDraft(e.data.draft),
        };
      case 'DraftUpdated':
        return doc && { ...doc, ...fromDraft(e.data.draft), date: e.recordedAt, sortAt: e.recordedAt };
      case 'DraftDeleted':
        return null;
      case 'MailReceived':
        return {
          id: e.data.mailId,
          mailboxId: e.data.mailboxId,
          userId: e.data.userId,
          folder: 'inbox',
          trashedFrom: null,
          status: 'received',
          bcc: [],
          sortAt: e.recordedAt,
          unread: true,
          raw: e.data.raw,
          authResults: e.data.authResults,
          recipients: {},
          ...fromSummary(e.data.message, e.recordedAt),
        };
      case 'MailSent': {
        if (e.data.notice) return doc;
        const recipients = Object.fromEntries(
          e.data.envelope.rcptTo.map((r): [string, RecipientState] => [r.toLowerCase(), { state: 'queued', attempts: 0, response: null }]),
        );
        return {
          id: e.data.mailId,
          mailboxId: e.data.mailboxId,
          userId: e.data.userId,
          folder: 'sent',
          trashedFrom: null,
          status: deliveryStatus(recipients),
          bcc: e.data.bcc,
          sortAt: e.recordedAt,
          unread: false,
          raw: e.data.raw,
          authResults: null,
          recipients,
          ...fromSummary(e.data.message, e.recordedAt),
          messageId: stripBrackets(e.data.messageId),
        };
      }
      case 'MailRead':
        return doc && { ...doc, unread: false };
      case 'MailUnread':
        return doc && { ...doc, unread: true };
      // sortAt stays: a restored mail goes back to its place in the folder.
      case 'MailTrashed':
        return doc && { ...doc, folder: 'trash', trashedFrom: e.data.folder };
      case 'MailRestored':
        return doc && { ...doc, folder: e.data.folder, trashedFrom: null };
      case 'MailDeleted':
        return null;
      case 'MailDelivered':
        return doc && recordAttempt(doc, e.data.recipients, 'sent', e.data.attempt, e.data.response);
      case 'MailDeliveryFailed':
        return doc && recordAttempt(doc, e.data.recipients, e.data.permanent ? 'failed' : 'queued', e.data.attempt, e.data.response);
      default:
        return doc;
    }
  },
});
