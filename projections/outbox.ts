import type { StoredEvent } from '../src/events/envelope.js';
import type { BlobRef } from '../src/events/types.js';
import { defineProjection } from '../src/projection/projection.js';

/**
 * The relay's work list: one entry per sent mail (keyed by mailId) with the delivery state of each
 * external recipient. The relay lists due entries from this view, but before it sends it folds the
 * mail's own stream with this same `evolve` (`outboxFromStream`): the view may lag, the stream is
 * the truth. Rebuilding this view never sends anything.
 */

export type OutboxRecipientState = 'pending' | 'delivered' | 'failed';

export interface OutboxRecipient {
  /** As in the envelope (the local part may be case-sensitive); matched case-insensitively. */
  address: string;
  state: OutboxRecipientState;
  /** Attempts that included this recipient. */
  attempts: number;
  lastResponse: string | null;
}

export type OutboxDoc = {
  id: string;
  messageId: string;
  mailboxId: string;
  userId: string;
  raw: BlobRef;
  mailFrom: string;
  /**
   * An array rather than a map keyed by address: addresses may hold `.` or start with `$`, which
   * make poor MongoDB field names.
   */
  recipients: OutboxRecipient[];
  /** `done` once no recipient is pending. */
  status: 'pending' | 'done';
  /** Attempts recorded for the message (the next one is `attempts + 1`). */
  attempts: number;
  /** When the next attempt is due (ISO 8601, UTC, so strings sort in time order). */
  nextAttemptAt: string;
  /** When MailSent was recorded: retries stop RELAY_RETRY_DEADLINE_MS after it. */
  sentAt: string;
  /** Stream version of the last event that changed this entry: lets the relay tell a lagging view. */
  streamVersion: number;
};

const iso = (t: string): string => new Date(t).toISOString();

function record(doc: OutboxDoc, e: StoredEvent, recipients: string[], state: OutboxRecipientState, attempt: number, response: string): OutboxDoc {
  const hit = new Set(recipients.map((r) => r.toLowerCase()));
  const next = doc.recipients.map((r) =>
    // A recipient already delivered or failed for good stays so (a late duplicate report changes nothing).
    hit.has(r.address.toLowerCase()) && r.state === 'pending' ? { ...r, state, attempts: r.attempts + 1, lastResponse: response } : r,
  );
  return {
    ...doc,
    recipients: next,
    status: next.some((r) => r.state === 'pending') ? 'pending' : 'done',
    attempts: Math.max(doc.attempts, attempt),
    streamVersion: e.version,
  };
}

export const outbox = defineProjection<OutboxDoc>({
  spec: {
    name: 'outbox',
    indexed: ['status', 'nextAttemptAt', 'messageId'],
    indexes: [['status', 'nextAttemptAt'], ['messageId']],
  },
  version: 1,
  keys: (e) => (e.type === 'MailSent' || e.type === 'MailDelivered' || e.type === 'MailDeliveryFailed' ? [e.data.mailId] : []),
  evolve(doc, e) {
    switch (e.type) {
      case 'MailSent': {
        if (doc) return doc; // one MailSent per mail stream; never reset a known entry
        const seen = new Set<string>();
        const recipients: OutboxRecipient[] = [];
        for (const address of e.data.envelope.rcptTo) {
          const key = address.toLowerCase();
          if (seen.has(key)) continue;
          seen.add(key);
          recipients.push({ address, state: 'pending', attempts: 0, lastResponse: null });
        }
        return {
          id: e.data.mailId,
          messageId: e.data.messageId,
          mailboxId: e.data.mailboxId,
          userId: e.data.userId,
          raw: e.data.raw,
          mailFrom: e.data.envelope.mailFrom,
          recipients,
          status: recipients.length ? 'pending' : 'done',
          attempts: 0,
          nextAttemptAt: iso(e.recordedAt),
          sentAt: iso(e.recordedAt),
          streamVersion: e.version,
        };
      }
      case 'MailDelivered':
        return doc && record(doc, e, e.data.recipients, 'delivered', e.data.attempt, e.data.response);
      case 'MailDeliveryFailed': {
        if (!doc) return null;
        const next = record(doc, e, e.data.recipients, e.data.permanent ? 'failed' : 'pending', e.data.attempt, e.data.response);
        // The latest temporary failure of an attempt sets when the next one is due.
        return !e.data.permanent && e.data.nextAttemptAt ? { ...next, nextAttemptAt: iso(e.data.nextAttemptAt) } : next;
      }
      default:
        return doc;
    }
  },
});

/** The outbox entry of one mail from its own stream (the truth the relay acts on); null = nothing to relay. */
export function outboxFromStream(events: StoredEvent[]): OutboxDoc | null {
  let doc: OutboxDoc | null = null;
  for (const e of events) {
    const id = 'mailId' in e.data ? e.data.mailId : '';
    doc = outbox.evolve(doc, e, id) as OutboxDoc | null;
  }
  return doc;
}

/** Recipients the next attempt must go to. */
export const pendingRecipients = (doc: OutboxDoc): string[] => doc.recipients.filter((r) => r.state === 'pending').map((r) => r.address);
