import { parse as parseUuid, v5 as uuidv5 } from 'uuid';

/**
 * Deterministic ids for mails, so that a retried delivery or submission of the same message lands
 * on the same stream (`mail-<mailId>`, appended with "no stream" expected) and is stored once.
 */

// As bytes, and the names below as UTF-8 bytes: the same UUIDs as from strings, without uuid
// converting both on every message.
const INBOUND_NAMESPACE = parseUuid('6f0e7c52-3b7e-4b57-9a55-2a1f1a0b6c01');
const SENT_NAMESPACE = parseUuid('0c9d3c4e-81f4-4f8b-8f0a-5d2b7c9e4a12');

export const mailStream = (mailId: string): string => `mail-${mailId}`;

/** A copy of a message in a mailbox's inbox: same mailbox + same Message-ID + same bytes = same mail. */
export function inboundMailId(mailboxId: string, messageId: string | null, rawSha256: string): string {
  return uuidv5(Buffer.from(`${mailboxId}\n${messageId ?? ''}\n${rawSha256}`), INBOUND_NAMESPACE);
}

/**
 * The sender's copy of a submission (its `sent` folder). The recipients to relay to are part of
 * it: the same message submitted again to others (a client splitting its recipients after 452)
 * is another sending, which the relay must deliver too.
 */
export function sentMailId(mailboxId: string, messageId: string, rawSha256: string, relayTo: string[]): string {
  const recipients = [...new Set(relayTo.map((r) => r.toLowerCase()))].sort().join(',');
  return uuidv5(Buffer.from(`${mailboxId}\n${messageId}\n${rawSha256}\n${recipients}`), SENT_NAMESPACE);
}
