import { createHash } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { accountStream } from '../../src/accounts/accounts.js';
import { systemMeta, type NewEvent } from '../../src/events/envelope.js';
import type { BlobRef, MessageSummary } from '../../src/events/types.js';
import type { Store } from '../../src/store/port.js';

/** Realistic events for tests and benchmarks, built the way commands will build them. */

export const meta = systemMeta;

export const fakeBlob = (seed: string): BlobRef => ({ sha256: createHash('sha256').update(seed).digest('hex'), size: seed.length });

export function summary(subject: string, over: Partial<MessageSummary> = {}): MessageSummary {
  return {
    messageId: `<${uuidv7()}@example.org>`,
    subject,
    from: [{ name: 'Alice', address: 'alice@example.org' }],
    to: [{ name: '', address: 'bob@mail.test' }],
    cc: [],
    date: '2026-11-23T10:00:00.000Z',
    inReplyTo: null,
    references: [],
    snippet: `${subject} body`,
    text: fakeBlob(`text:${subject}`),
    html: null,
    attachments: [],
    ...over,
  };
}

export interface Account {
  userId: string;
  mailboxId: string;
  address: string;
}

/** An account as `registerAccount` in src/accounts makes it, without paying for bcrypt. */
export async function registerAccount(store: Store, address: string): Promise<Account> {
  const account = { userId: uuidv7(), mailboxId: uuidv7(), address };
  await store.events.append(
    accountStream(address),
    [
      { type: 'UserRegistered', data: { userId: account.userId, email: address, name: address.split('@')[0]!, passwordHash: '$2b$04$x', role: 'user' } },
      { type: 'MailboxCreated', data: { mailboxId: account.mailboxId, userId: account.userId, address } },
    ],
    { expectedVersion: 'no_stream', meta: meta() },
  );
  return account;
}

export function mailReceived(account: Account, subject: string, mailId: string = uuidv7()): NewEvent {
  return {
    type: 'MailReceived',
    data: {
      mailId,
      mailboxId: account.mailboxId,
      userId: account.userId,
      raw: fakeBlob(`raw:${mailId}`),
      envelope: { mailFrom: 'alice@example.org', rcptTo: [account.address], remoteAddress: '127.0.0.1', helo: 'client.example.org', tls: false, authUser: null },
      message: summary(subject),
      authResults: null,
    },
  };
}

export async function receive(store: Store, account: Account, subject: string): Promise<string> {
  const mailId = uuidv7();
  await store.events.append(`mail-${mailId}`, [mailReceived(account, subject, mailId)], { expectedVersion: 'no_stream', meta: meta() });
  return mailId;
}

/** A draft that is sent to one external recipient and then delivered (or fails). */
export async function draftSendDeliver(store: Store, account: Account, outcome: 'delivered' | 'failed' | 'queued'): Promise<string> {
  const mailId = uuidv7();
  const stream = `mail-${mailId}`;
  const draft = {
    to: [{ name: '', address: 'carol@remote.example' }],
    cc: [],
    bcc: [],
    subject: 'draft',
    text: fakeBlob(`draft:${mailId}`),
    html: null,
    attachments: [],
    inReplyTo: null,
    references: [],
  };
  await store.events.append(stream, [{ type: 'DraftCreated', data: { mailId, mailboxId: account.mailboxId, userId: account.userId, draft } }], {
    expectedVersion: 'no_stream',
    meta: meta(),
  });
  await store.events.append(stream, [{ type: 'DraftUpdated', data: { mailId, draft: { ...draft, subject: 'final' } } }], { expectedVersion: 1, meta: meta() });
  const messageId = `<${mailId}@mail.test>`;
  await store.events.append(
    stream,
    [
      {
        type: 'MailSent',
        data: {
          mailId,
          mailboxId: account.mailboxId,
          userId: account.userId,
          messageId,
          raw: fakeBlob(`sent:${mailId}`),
          envelope: { mailFrom: account.address, rcptTo: ['carol@remote.example'] },
          message: summary('final', { messageId }),
          bcc: [],
          wasDraft: true,
        },
      },
    ],
    { expectedVersion: 2, meta: meta() },
  );
  if (outcome === 'queued') return mailId;
  const attempt = { mailId, messageId, recipients: ['carol@remote.example'], attempt: 1 };
  await store.events.append(
    stream,
    [
      outcome === 'delivered'
        ? { type: 'MailDelivered', data: { ...attempt, response: '250 2.0.0 OK' } }
        : { type: 'MailDeliveryFailed', data: { ...attempt, response: '550 5.1.1 no such user', permanent: true, nextAttemptAt: null } },
    ],
    { expectedVersion: 3, meta: meta() },
  );
  return mailId;
}
