/**
 * The embedded store's log writer thread (src/store/sqlite/log-writer.ts), beyond the contract
 * suite that runs against it too: a blob is readable in the writing process as soon as its put
 * resolves, and a writer thread that dies makes writes fail clearly instead of losing any.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { v7 as uuidv7 } from 'uuid';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { mailReceived, meta, registerAccount } from './support/events.js';
import { addUser, DOMAIN, fakeResolver, rawMessage, receivedWithSubject, SmtpTalk, startTestServer } from './support/smtp.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-log-writer-'));
  dirs.push(d);
  return d;
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

test('a blob put through the writer thread is readable at once here, and by another connection once the next append committed', async () => {
  const dataDir = tempDir();
  const store = await openSqliteStore({ dataDir, writerThread: true });
  try {
    const bytes = Buffer.from('a message '.repeat(500));
    const ref = await store.blobs.put(bytes);
    assert.ok((await store.blobs.get(ref.sha256)).equals(bytes));
    assert.equal(await store.blobs.has(ref.sha256), true);
    const account = await registerAccount(store, `w-${uuidv7()}@mail.test`);
    const e = mailReceived(account, 'with a blob');
    if (e.type === 'MailReceived') e.data.raw = ref;
    await store.events.append(`mail-${uuidv7()}`, [e], { expectedVersion: 'no_stream', meta: meta() });
    const other = await openSqliteStore({ dataDir });
    try {
      assert.ok((await other.blobs.get(ref.sha256)).equals(bytes), 'the index row committed with (or before) the append');
    } finally {
      await other.close();
    }
  } finally {
    await store.close();
  }
});

test('a writer thread that dies: every later write fails naming it, reads go on, nothing acknowledged is lost', async () => {
  const dataDir = tempDir();
  const told: Error[] = [];
  const store = await openSqliteStore({ dataDir, writerThread: true, onWriterFailure: (e) => told.push(e) });
  const account = await registerAccount(store, `w-${uuidv7()}@mail.test`);
  const kept = await store.blobs.put(Buffer.from('kept'));
  const e = mailReceived(account, 'acknowledged');
  if (e.type === 'MailReceived') e.data.raw = kept;
  const mailStream = `mail-${uuidv7()}`;
  await store.events.append(mailStream, [e], { expectedVersion: 'no_stream', meta: meta() });
  const worker = (store.events as unknown as { writer: { worker: Worker } }).writer.worker;
  await worker.terminate();
  await assert.rejects(store.events.append(`mail-${uuidv7()}`, [mailReceived(account, 'lost?')], { expectedVersion: 'no_stream', meta: meta() }), (e: Error & { code?: string }) => e.code === 'ELOGWRITER' && /log writer thread exited.*restart mailtrail/.test(e.message));
  await assert.rejects(store.blobs.put(Buffer.from('after')), (e: Error & { code?: string }) => e.code === 'ELOGWRITER');
  assert.equal(told.length, 1, 'the owner is told once (the server stops for a restart)');
  assert.equal((told[0] as Error & { code?: string }).code, 'ELOGWRITER');
  assert.equal((await store.events.readStream(`account-${account.address}`)).length, 2, 'reads go on');
  await store.close();
  const reopened = await openSqliteStore({ dataDir });
  try {
    assert.equal((await reopened.events.readStream(`account-${account.address}`)).length, 2);
    assert.equal((await reopened.events.readStream(mailStream)).length, 1);
    assert.equal((await reopened.blobs.get(kept.sha256)).toString(), 'kept', 'the blob of an acknowledged event');
  } finally {
    await reopened.close();
  }
});

test('the server whose writer thread dies: a message gets 451 and is not stored, /health says down, the server is told to stop', async () => {
  const fatal: Error[] = [];
  const server = await startTestServer({}, fakeResolver(), { onFatal: (e) => fatal.push(e) });
  try {
    await addUser(server, `bob@${DOMAIN}`);
    const worker = (server.store.events as unknown as { writer: { worker: Worker } }).writer.worker;
    await worker.terminate();
    const { talk } = await SmtpTalk.open(server.port);
    await talk.cmd('EHLO client.example.org');
    const [mail, rcpt] = await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    assert.equal(mail!.code, 250);
    assert.equal(rcpt!.code, 250);
    const reply = await talk.data(rawMessage({ subject: 'after the writer died' }));
    assert.equal(reply.code, 451, `a temporary refusal, the sender retries: ${reply.text}`);
    await talk.quit();
    assert.equal((await receivedWithSubject(server.store, 'after the writer died')).length, 0);
    assert.equal(fatal.length, 1);
    const health = await fetch(`http://127.0.0.1:${server.app.http.port}/health`);
    assert.equal(health.status, 503);
    assert.match(((await health.json()) as { error: string }).error, /log writer thread exited.*restart mailtrail/);
  } finally {
    await server.stop();
  }
});
