/**
 * Child process for the crash test: appends mails (blob, then event) from many concurrent writers
 * to the embedded store in argv[2] (through its log writer thread when argv[3] is "thread") and
 * prints "ack <mailId> <sha256>" once each append resolved. It runs until it is killed.
 */
import { randomBytes } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { openSqliteStore } from '../../src/store/sqlite/index.js';
import { mailReceived, meta, registerAccount } from './events.js';

const store = await openSqliteStore({ dataDir: process.argv[2]!, writerThread: process.argv[3] === 'thread' });
const account = await registerAccount(store, `crash-${uuidv7()}@mail.test`);
process.stdout.write('ready\n');
await Promise.all(
  Array.from({ length: 32 }, async () => {
    for (;;) {
      const mailId = uuidv7();
      const raw = await store.blobs.put(randomBytes(2048 + Math.floor(Math.random() * 8192)));
      const event = mailReceived(account, 'crash test', mailId);
      if (event.type === 'MailReceived') event.data.raw = raw;
      await store.events.append(`mail-${mailId}`, [event], { expectedVersion: 'no_stream', meta: meta() });
      process.stdout.write(`ack ${mailId} ${raw.sha256}\n`);
    }
  }),
);
