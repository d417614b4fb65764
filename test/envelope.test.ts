/**
 * Reading events back: the compiled in-place checks must accept exactly what zod accepts and give
 * what zod gives, and refuse malformed events as zod does.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeStored, MalformedEventError, typesCheckedInPlace, validateData, type RawEvent } from '../src/events/envelope.js';
import { eventTypes } from '../src/events/types.js';
import { mailReceived, meta } from './support/events.js';

const account = { userId: 'u1', mailboxId: 'm1', address: 'bob@mail.test' };

function raw(data: unknown, over: Partial<RawEvent> = {}): RawEvent {
  return { eventId: 'e1', streamId: 'mail-1', version: 1, position: 7, type: 'MailReceived', schemaVersion: 1, data, meta: meta(), recordedAt: '2026-11-24T00:00:00.000Z', ...over };
}

const received = () => structuredClone(mailReceived(account, 'hello').data) as Record<string, unknown> & { message: Record<string, unknown> };

test('every event type is checked in place, not by zod on every read', () => {
  assert.deepEqual([...typesCheckedInPlace].sort(), [...eventTypes].sort());
});

test('a valid stored event decodes to what zod returns', () => {
  const data = received();
  assert.deepStrictEqual(decodeStored(raw(structuredClone(data))).data, validateData('MailReceived', data).data);
});

test('an unknown key is stripped, as zod strips it', () => {
  const data = { ...received(), surprise: 1 };
  const decoded = decodeStored(raw(data)).data as Record<string, unknown>;
  assert.equal('surprise' in decoded, false);
  assert.deepStrictEqual(decoded, validateData('MailReceived', data).data);
});

test('malformed data, meta, an unknown type or schema version are errors', () => {
  const missing = received();
  delete missing.mailId;
  const badSha = received();
  badSha.raw = { sha256: 'xyz', size: 1 };
  const badDate = received();
  badDate.message = { ...badDate.message, date: 'yesterday' };
  for (const data of [missing, badSha, badDate, null, []]) assert.throws(() => decodeStored(raw(data)), MalformedEventError);
  assert.throws(() => decodeStored(raw(received(), { meta: { correlationId: 'c' } })), MalformedEventError);
  assert.throws(() => decodeStored(raw(received(), { type: 'MailTeleported' })), /unknown event type/);
  assert.throws(() => decodeStored(raw(received(), { schemaVersion: 2 })), /schema version 2/);
});

test('a literal field (MailSent.requireTls) is checked in place as zod checks it', () => {
  const received = mailReceived(account, 'sent').data as Record<string, unknown> & { message: unknown; raw: unknown };
  const sent = { mailId: 'm-1', mailboxId: 'm1', userId: 'u1', messageId: '<a@b>', raw: received.raw, envelope: { mailFrom: 'bob@mail.test', rcptTo: ['c@d.example'] }, message: received.message, bcc: [], wasDraft: false };
  const asSent = (data: unknown): RawEvent => raw(data, { type: 'MailSent' });
  assert.equal((decodeStored(asSent({ ...sent, requireTls: true })).data as { requireTls?: boolean }).requireTls, true);
  assert.equal('requireTls' in decodeStored(asSent(structuredClone(sent))).data, false);
  for (const bad of [false, 'true', 1]) assert.throws(() => decodeStored(asSent({ ...sent, requireTls: bad })), MalformedEventError, String(bad));
});
