/**
 * npm run blobs:gc on a real embedded store: the blobs only deleted mail names go (from the
 * database, zeroed, and from rewritten packs), every other blob stays readable byte for byte, and
 * it refuses to run beside anything else that has the store open.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { v7 as uuidv7 } from 'uuid';
import type { NewEvent } from '../src/events/envelope.js';
import type { Attachment, BlobRef } from '../src/events/types.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import type { Store } from '../src/store/port.js';
import { draftSendDeliver, mailReceived, meta, registerAccount, summary, type Account } from './support/events.js';
import { runScript } from './support/process.js';

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-gc-'));
const env = { DATA_DIR: dataDir };
let store: Store | null = null;
let alice: Account;

/** Bytes that say what they are: the test looks for them in the files afterwards. */
const content = (label: string, size = 200): Buffer => Buffer.from(`${label}:`.padEnd(size, `${label.slice(0, 4)}.`));
const attachment = (ref: BlobRef, name: string): Attachment => ({ ...ref, id: name, filename: name, contentType: 'application/octet-stream' });

/** A received mail naming `raw`, a text body and attachments; returns its id. */
async function receive(raw: BlobRef, text: BlobRef, attachments: Attachment[]): Promise<string> {
  const mailId = uuidv7();
  const event = mailReceived(alice, `mail ${mailId}`, mailId) as NewEvent & { type: 'MailReceived' };
  event.data.raw = raw;
  event.data.message = summary(`mail ${mailId}`, { text, attachments });
  await store!.events.append(`mail-${mailId}`, [event], { expectedVersion: 'no_stream', meta: meta() });
  return mailId;
}

/** Trash, then delete for good. */
async function deleteForGood(mailId: string, folder: 'inbox' | 'sent', version: number): Promise<void> {
  const ids = { mailId, mailboxId: alice.mailboxId };
  await store!.events.append(
    `mail-${mailId}`,
    [
      { type: 'MailTrashed', data: { ...ids, folder, unread: false } },
      { type: 'MailDeleted', data: { ...ids, userId: alice.userId } },
    ],
    { expectedVersion: version, meta: meta() },
  );
}

const blobs: Record<string, { ref: BlobRef; bytes: Buffer }> = {};
async function put(name: string, size?: number): Promise<BlobRef> {
  const bytes = content(name, size);
  blobs[name] = { ref: await store!.blobs.put(bytes), bytes };
  return blobs[name]!.ref;
}

/** Every byte of the store's files, to look for content that should be gone. */
function storeBytes(): Buffer {
  const files = [...readdirSync(dataDir).map((f) => path.join(dataDir, f)), ...readdirSync(path.join(dataDir, 'blobs')).map((f) => path.join(dataDir, 'blobs', f))];
  return Buffer.concat(files.filter((f) => !f.endsWith('blobs')).map((f) => readFileSync(f)));
}

before(async () => {
  store = await openSqliteStore({ dataDir });
  alice = await registerAccount(store, 'alice@mail.test');
  // Deleted: its raw message, text and big attachment are its own; the small attachment is shared with a kept mail.
  const gone = await receive(await put('GONE-RAW'), await put('GONE-TEXT'), [attachment(await put('SHARED-ATTACHMENT'), 'a.bin'), attachment(await put('GONE-BIG', 100_000), 'big.bin')]);
  await deleteForGood(gone, 'inbox', 1);
  // Kept: its blobs, one in the same pack as the deleted big one.
  await receive(await put('KEPT-RAW'), await put('KEPT-TEXT'), [attachment(blobs['SHARED-ATTACHMENT']!.ref, 'a.bin'), attachment(await put('KEPT-BIG', 120_000), 'big.bin')]);
  // Deleted too, but also named by a kept mail: stays.
  const twice = await put('NAMED-TWICE');
  await deleteForGood(await receive(twice, twice, []), 'inbox', 1);
  await receive(twice, twice, []);
  // A deleted sent mail the relay has still to deliver: stays until it has.
  const queued = uuidv7();
  const messageId = `<${queued}@mail.test>`;
  const sent: NewEvent = {
    type: 'MailSent',
    data: {
      mailId: queued,
      mailboxId: alice.mailboxId,
      userId: alice.userId,
      messageId,
      raw: await put('QUEUED-RAW'),
      envelope: { mailFrom: alice.address, rcptTo: ['carol@remote.example'] },
      message: summary('queued', { messageId }),
      bcc: [],
      wasDraft: false,
    },
  };
  await store.events.append(`mail-${queued}`, [sent], { expectedVersion: 'no_stream', meta: meta() });
  await deleteForGood(queued, 'sent', 1);
  // A deleted sent mail that was delivered: goes.
  await deleteForGood(await draftSendDeliver(store, alice, 'delivered'), 'sent', 4);
  // An upload no draft names yet: stays.
  await put('UPLOAD');
});
after(async () => {
  await store?.close();
  store = null;
  rmSync(dataDir, { recursive: true, force: true });
});

test('refused while anything else has the store open, with what to do', async () => {
  const busy = await runScript('scripts/blobs-gc.ts', [], env);
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, /mailtrail\.db is in use by another process \(a running mailtrail\?\); stop it first/);
  await store!.close();
  store = null;
  assert.ok(storeBytes().includes('GONE-BIG:'), 'nothing was removed');
});

test('--dry-run reports and changes nothing', async () => {
  const before = storeBytes().length;
  const dry = await runScript('scripts/blobs-gc.ts', ['--dry-run', 'true'], env);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^deleted: +3 mails and drafts \(1 more kept: the relay has still to deliver them\)$/m);
  assert.match(dry.stdout, /^blobs: +would free 3 /m);
  assert.match(dry.stdout, /nothing was changed/);
  assert.equal(storeBytes().length, before);
  assert.equal((await runScript('scripts/blobs-gc.ts', ['--dry-run', 'maybe'], env)).code, 1, 'a bad flag value is a usage error');
});

test('frees what only deleted mail names, zeroed and out of the packs; everything else stays readable', async () => {
  const ran = await runScript('scripts/blobs-gc.ts', [], env);
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /^blobs: +freed 3 \(0\.0 MiB in the database, 0\.1 MiB in packs\)$/m);
  assert.match(ran.stdout, /^packs: +1 \(0\.2 MiB\) -> 1 \(0\.1 MiB\)$/m);

  const bytes = storeBytes();
  for (const gone of ['GONE-RAW:', 'GONE-TEXT:', 'GONE-BIG:']) assert.ok(!bytes.includes(gone), `${gone} is nowhere in the store's files`);

  const reopened = await openSqliteStore({ dataDir });
  store = reopened;
  for (const name of ['GONE-RAW', 'GONE-TEXT', 'GONE-BIG']) assert.equal(await reopened.blobs.has(blobs[name]!.ref.sha256), false, name);
  for (const name of ['SHARED-ATTACHMENT', 'KEPT-RAW', 'KEPT-TEXT', 'KEPT-BIG', 'NAMED-TWICE', 'QUEUED-RAW', 'UPLOAD']) {
    assert.deepEqual(await reopened.blobs.get(blobs[name]!.ref.sha256), blobs[name]!.bytes, `${name} is intact`);
  }
  // New puts after a rewrite go to a pack of their own, and the log is as it was.
  const later = content('LATER', 50_000);
  assert.deepEqual(await reopened.blobs.get((await reopened.blobs.put(later)).sha256), later);
  assert.ok((await reopened.events.readAll({ after: 0, limit: 100 })).some((e) => e.type === 'MailDeleted'), 'the history stays');
  await reopened.close();
  store = null;

  const again = await runScript('scripts/blobs-gc.ts', [], env);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /^blobs: +freed 0 /m, 'a second run finds nothing more');
});
