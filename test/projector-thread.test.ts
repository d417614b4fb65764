/**
 * The projectors' worker thread (src/projection/thread.ts) with the real embedded store: the
 * main thread sees its positions, reads its own writes through waitFor, and a thread that dies is
 * replaced without losing or repeating anything.
 */
import assert from 'node:assert/strict';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import pino from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { allProjections } from '../projections/index.js';
import type { MailboxDoc } from '../projections/mailboxes.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { SharedLogReader } from '../src/projection/shared-reader.js';
import { ProjectorThread } from '../src/projection/thread.js';
import { openStore } from '../src/store/open.js';
import { mailReceived, meta, registerAccount } from './support/events.js';
import { tempDir, testEnv } from './support/smtp.js';

const dataDir = tempDir('projector-thread');
after(() => rmSync(dataDir, { recursive: true, force: true }));

test('the projector thread follows the log, answers waitFor, and is replaced when it dies', async () => {
  const config = loadConfig(testEnv(dataDir));
  const store = await openStore(config);
  const thread = await ProjectorThread.start(config, createLogger(config), store, allProjections.map((p) => p.spec.name));
  try {
    const account = await registerAccount(store, `thread-${uuidv7()}@mail.test`);
    const first = await store.events.append(`mail-${uuidv7()}`, [mailReceived(account, 'before the crash')], { expectedVersion: 'no_stream', meta: meta() });
    thread.wake();
    const mails = thread.projectors.get('mails')!;
    assert.equal(await mails.waitFor(first.lastPosition, 10_000), true);
    assert.equal((await store.views.list('mails', { where: { userId: account.userId, folder: 'inbox' }, orderBy: { field: 'sortAt', direction: 'desc' }, limit: 10 })).length, 1);

    // The thread dies as if it crashed: its views count as parked until another has started.
    const worker = (thread as unknown as { worker: Worker }).worker;
    await worker.terminate();
    assert.equal(mails.status, 'parked');
    assert.match(mails.lastError ?? '', /projector thread exited/);

    const second = await store.events.append(`mail-${uuidv7()}`, [mailReceived(account, 'after the crash')], { expectedVersion: 'no_stream', meta: meta() });
    thread.wake();
    assert.equal(await mails.waitFor(second.lastPosition, 15_000), true, 'the new thread projects what was appended meanwhile');
    assert.equal(mails.status, 'running');
    const listed = await store.views.list('mails', { where: { userId: account.userId, folder: 'inbox' }, orderBy: { field: 'sortAt', direction: 'desc' }, limit: 10 });
    assert.deepEqual(listed.map((m) => m.subject).sort(), ['after the crash', 'before the crash']);
    const mailbox = (await store.views.get('mailboxes', account.mailboxId)) as MailboxDoc | null;
    assert.equal(mailbox?.counts.inbox, 2, 'each mail counted once');
  } finally {
    await thread.stop();
    await store.close();
  }
  for (const p of thread.projectors.values()) assert.equal(p.status, 'stopped');
});

test('a replacement thread that cannot start is retried, with a growing pause, until one can; nothing is lost meanwhile', { timeout: 60_000 }, async () => {
  const dir = tempDir('projector-restart');
  const config = loadConfig(testEnv(dir));
  const logged: { msg?: string }[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write: (line: Buffer, _enc, done) => (logged.push(JSON.parse(line.toString()) as { msg?: string }), done()) }));
  const store = await openStore(config);
  const thread = await ProjectorThread.start(config, logger, store, allProjections.map((p) => p.spec.name));
  try {
    const account = await registerAccount(store, `restart-${uuidv7()}@mail.test`);
    const mails = thread.projectors.get('mails')!;
    const first = await store.events.append(`mail-${uuidv7()}`, [mailReceived(account, 'before')], { expectedVersion: 'no_stream', meta: meta() });
    thread.wake();
    assert.equal(await mails.waitFor(first.lastPosition, 10_000), true);

    // DATA_DIR is made unusable (a file where the folder was), then the thread dies: replacements fail to open the store.
    renameSync(dir, `${dir}.away`);
    writeFileSync(dir, 'not a folder');
    await (thread as unknown as { worker: Worker }).worker.terminate();
    const couldNotStart = (): number => logged.filter((l) => l.msg === 'the projector thread could not start').length;
    const exited = (): number => logged.filter((l) => l.msg === 'projector thread exited; starting another').length;
    // A thread that could not start says so, then exits: its exit (and the next pause) is logged a moment later.
    while (couldNotStart() < 2 || exited() < 3) await new Promise((r) => setTimeout(r, 100));
    assert.equal(mails.status, 'parked', 'no thread projects while none can start');
    const pauses = logged.filter((l) => l.msg === 'projector thread exited; starting another').map((l) => (l as { restartInMs?: number }).restartInMs);
    assert.ok(pauses.length >= 3 && pauses[2]! > pauses[1]!, `the pause grows: ${pauses.join(', ')}`);

    rmSync(dir);
    renameSync(`${dir}.away`, dir);
    const second = await store.events.append(`mail-${uuidv7()}`, [mailReceived(account, 'after')], { expectedVersion: 'no_stream', meta: meta() });
    thread.wake();
    assert.equal(await mails.waitFor(second.lastPosition, 40_000), true, 'a later try starts and catches up');
    assert.equal(mails.status, 'running');
    const mailbox = (await store.views.get('mailboxes', account.mailboxId)) as MailboxDoc | null;
    assert.equal(mailbox?.counts.inbox, 2, 'each mail counted once');
  } finally {
    await thread.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}.away`, { recursive: true, force: true });
  }
});

test('the shared reader reads each batch once: a follower reading from within a remembered batch gets its rest', async () => {
  const dir = tempDir('shared-reader');
  const store = await openStore(loadConfig(testEnv(dir)));
  try {
    const account = await registerAccount(store, `reader-${uuidv7()}@mail.test`);
    await store.events.append(`mail-${uuidv7()}`, Array.from({ length: 10 }, () => mailReceived(account, 'x')), { expectedVersion: 'no_stream', meta: meta() });
    const head = await store.events.head();
    let reads = 0;
    const reader = new SharedLogReader({
      ...store.events,
      readAll: (opts) => {
        reads += 1;
        return store.events.readAll(opts);
      },
    });
    const all = await reader.readAll({ after: 0, limit: 500 });
    assert.equal(all.at(-1)!.position, head);
    assert.deepEqual(await reader.readAll({ after: 0, limit: 500 }), all, 'the same read again');
    const rest = await reader.readAll({ after: head - 4, limit: 500 });
    assert.deepEqual(rest.map((e) => e.position), [head - 3, head - 2, head - 1, head], 'from within the batch');
    assert.deepEqual((await reader.readAll({ after: head - 4, limit: 2 })).map((e) => e.position), [head - 3, head - 2]);
    assert.equal(reads, 1, 'read from the store once');
    assert.deepEqual(await reader.readAll({ after: head, limit: 500 }), [], 'past the batch: from the store');
    assert.equal(reads, 2);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
