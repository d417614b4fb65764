import { defineProjection } from '../src/projection/projection.js';

export type AliasDoc = {
  /** The address in lower case: recipients are matched case-insensitively. */
  id: string;
  /** As the admin added it. */
  address: string;
  mailboxId: string;
  userId: string;
  addedAt: string;
};

/** Addresses that lead to a mailbox besides its own; a removed one leaves the view. */
export const aliases = defineProjection<AliasDoc>({
  spec: { name: 'aliases', indexed: ['userId'], indexes: [['userId']] },
  version: 1,
  keys: (e) => (e.type === 'AliasAdded' || e.type === 'AliasRemoved' ? [e.data.address.toLowerCase()] : []),
  evolve(doc, e, id) {
    if (e.type === 'AliasAdded') return { id, address: e.data.address, mailboxId: e.data.mailboxId, userId: e.data.userId, addedAt: e.recordedAt };
    if (e.type === 'AliasRemoved') return null;
    return doc;
  },
});
