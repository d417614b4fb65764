import { defineProjection } from '../src/projection/projection.js';

/** Mail per folder; `unread` counts the inbox's unread mail. */
export type MailboxCounts = { inbox: number; unread: number; sent: number; drafts: number; trash: number };

export type MailboxDoc = {
  id: string;
  userId: string;
  /** As the user registered it. */
  address: string;
  /** Lower case: recipients are matched case-insensitively. */
  addressKey: string;
  counts: MailboxCounts;
};

const count = (doc: MailboxDoc | null, change: Partial<MailboxCounts>): MailboxDoc | null => {
  if (!doc) return null;
  const counts = { ...doc.counts };
  // `?? 0`: documents built before the trash existed have no trash count.
  for (const [k, v] of Object.entries(change) as [keyof MailboxCounts, number][]) counts[k] = Math.max(0, (counts[k] ?? 0) + v);
  return { ...doc, counts };
};

/** One document per mailbox (an address), with folder counts. */
export const mailboxes = defineProjection<MailboxDoc>({
  spec: { name: 'mailboxes', indexed: ['userId', 'addressKey'], indexes: [['userId'], ['addressKey']] },
  version: 1,
  keys: (e) => ('mailboxId' in e.data ? [e.data.mailboxId] : []),
  evolve(doc, e) {
    switch (e.type) {
      case 'MailboxCreated':
        return {
          id: e.data.mailboxId,
          userId: e.data.userId,
          address: e.data.address,
          addressKey: e.data.address.toLowerCase(),
          counts: { inbox: 0, unread: 0, sent: 0, drafts: 0, trash: 0 },
        };
      case 'MailReceived':
        return count(doc, { inbox: 1, unread: 1 });
      case 'MailRead':
        return count(doc, { unread: -1 });
      case 'MailUnread':
        return count(doc, { unread: 1 });
      case 'DraftCreated':
        return count(doc, { drafts: 1 });
      case 'DraftDeleted':
        return count(doc, { drafts: -1 });
      case 'MailTrashed':
        return count(doc, { [e.data.folder]: -1, trash: 1, unread: e.data.unread ? -1 : 0 });
      case 'MailRestored':
        return count(doc, { [e.data.folder]: 1, trash: -1, unread: e.data.unread ? 1 : 0 });
      case 'MailDeleted':
        return count(doc, { trash: -1 });
      case 'MailSent':
        if (e.data.notice) return doc;
        return count(doc, e.data.wasDraft ? { sent: 1, drafts: -1 } : { sent: 1 });
      default:
        return doc;
    }
  },
});
