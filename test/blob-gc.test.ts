/**
 * npm run blobs:gc on a real embedded store: the blobs only deleted mail names go (from the
 * database, zeroed, and from rewritten packs), every other blob stays readable byte for byte, and
 * it refuses to run beside anything else that has the store open.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { v7 as uuidv7 } from 'uuid';
import type { NewEvent } from '../src/events/envelope.js';
import type { Attachment, BlobRef } from '../src/events/types.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import type { Store } from '../src/store/port.js';
import { mailReceived, meta, registerAccount, summary, type Account } from './support/events.js';
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

/** A sent mail naming `raw` to carol@remote.example, with `localCopies` to local recipients if given; `delivered`: the relay is done with it. */
async function send(raw: BlobRef, delivered: boolean, localCopies?: { address: string; mailboxId: string; userId: string }[]): Promise<string> {
  const mailId = uuidv7();
  const messageId = `<${mailId}@mail.test>`;
  const data = {
    mailId,
    mailboxId: alice.mailboxId,
    userId: alice.userId,
    messageId,
    raw,
    envelope: { mailFrom: alice.address, rcptTo: ['carol@remote.example'] },
    message: summary('sent', { messageId }),
    bcc: [],
    wasDraft: false,
    ...(localCopies ? { localCopies: { authUser: alice.address, recipients: localCopies } } : {}),
  };
  const events: NewEvent[] = [{ type: 'MailSent', data }];
  if (delivered) events.push({ type: 'MailDelivered', data: { mailId, messageId, recipients: ['carol@remote.example'], attempt: 1, response: '250 2.0.0 OK' } });
  await store!.events.append(`mail-${mailId}`, events, { expectedVersion: 'no_stream', meta: meta() });
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
  // Deleted: its raw message, text (inline, on overflow pages) and big attachment are its own; the small attachment is shared with a kept mail.
  const gone = await receive(await put('GONE-RAW'), await put('GONE-TEXT', 20_000), [attachment(await put('SHARED-ATTACHMENT'), 'a.bin'), attachment(await put('GONE-BIG', 100_000), 'big.bin')]);
  await deleteForGood(gone, 'inbox', 1);
  // Kept: its blobs, one in the same pack as the deleted big one.
  await receive(await put('KEPT-RAW'), await put('KEPT-TEXT'), [attachment(blobs['SHARED-ATTACHMENT']!.ref, 'a.bin'), attachment(await put('KEPT-BIG', 120_000), 'big.bin')]);
  // Deleted too, but also named by a kept mail: stays.
  const twice = await put('NAMED-TWICE');
  await deleteForGood(await receive(twice, twice, []), 'inbox', 1);
  await receive(twice, twice, []);
  // A deleted sent mail the relay has still to deliver: stays until it has.
  await deleteForGood(await send(await put('QUEUED-RAW'), false), 'sent', 1);
  // A deleted sent mail whose local copy a crash left out (the follower stores it later): stays.
  const bob = await registerAccount(store, 'bob@mail.test');
  await deleteForGood(await send(await put('COPIES-RAW'), true, [{ address: bob.address, mailboxId: bob.mailboxId, userId: bob.userId }]), 'sent', 2);
  // A deleted sent mail that was delivered: goes.
  await deleteForGood(await send(await put('SENT-RAW'), true), 'sent', 2);
  // A deleted draft: its text and attachment go.
  const draftId = uuidv7();
  const draft = { to: [], cc: [], bcc: [], subject: 'draft', text: await put('DRAFT-TEXT'), html: null, attachments: [attachment(await put('DRAFT-ATT', 40_000), 'd.bin')], inReplyTo: null, references: [] };
  await store.events.append(
    `mail-${draftId}`,
    [
      { type: 'DraftCreated', data: { mailId: draftId, mailboxId: alice.mailboxId, userId: alice.userId, draft } },
      { type: 'DraftDeleted', data: { mailId: draftId, mailboxId: alice.mailboxId } },
    ],
    { expectedVersion: 'no_stream', meta: meta() },
  );
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
  assert.match(dry.stdout, /^deleted: +4 mails and drafts \(2 more kept: still to be delivered, by the relay or as local copies\)$/m);
  assert.match(dry.stdout, /^blobs: +would free 6 /m);
  assert.match(dry.stdout, /nothing was changed/);
  assert.equal(storeBytes().length, before);
  assert.equal((await runScript('scripts/blobs-gc.ts', ['--dry-run', 'maybe'], env)).code, 1, 'a bad flag value is a usage error');
});

test('frees what only deleted mail names, zeroed and out of the packs; everything else stays readable', async () => {
  // A pack no row names (left by a crash): it goes too.
  writeFileSync(path.join(dataDir, 'blobs', 'pack-000900'), content('ORPHAN', 5000));
  const ran = await runScript('scripts/blobs-gc.ts', [], env);
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /^blobs: +freed 6 \(0\.0 MiB in the database, 0\.1 MiB in packs\)$/m);
  assert.match(ran.stdout, /^packs: +2 \(0\.3 MiB\) -> 1 \(0\.1 MiB\)$/m);
  assert.deepEqual(readdirSync(path.join(dataDir, 'blobs')), ['pack-000901'], 'the kept blobs moved above every number in use');

  const bytes = storeBytes();
  for (const gone of ['GONE-RAW:', 'GONE-TEXT:', 'GONE-BIG:', 'SENT-RAW:', 'DRAFT-TEXT:', 'DRAFT-ATT:', 'ORPHAN:']) assert.ok(!bytes.includes(gone), `${gone} is nowhere in the store's files`);

  const reopened = await openSqliteStore({ dataDir });
  store = reopened;
  for (const name of ['GONE-RAW', 'GONE-TEXT', 'GONE-BIG', 'SENT-RAW', 'DRAFT-TEXT', 'DRAFT-ATT']) assert.equal(await reopened.blobs.has(blobs[name]!.ref.sha256), false, name);
  for (const name of ['SHARED-ATTACHMENT', 'KEPT-RAW', 'KEPT-TEXT', 'KEPT-BIG', 'NAMED-TWICE', 'QUEUED-RAW', 'COPIES-RAW', 'UPLOAD']) {
    assert.deepEqual(await reopened.blobs.get(blobs[name]!.ref.sha256), blobs[name]!.bytes, `${name} is intact`);
  }
  // New puts after a rewrite go to a pack of their own, and the log is as it was.
  const later = content('LATER', 50_000);
  assert.deepEqual(await reopened.blobs.get((await reopened.blobs.put(later)).sha256), later);
  assert.ok((await reopened.events.readAll({ after: 0, limit: 100 })).some((e) => e.type === 'MailDeleted'), 'the history stays');
  await reopened.close();
  store = null;

  // The highest pack, when no row names it, is emptied, not deleted: its number is never used again.
  const highest = path.join(dataDir, 'blobs', 'pack-000999');
  writeFileSync(highest, content('ORPHAN-HIGH', 5000));
  const again = await runScript('scripts/blobs-gc.ts', ['--vacuum', 'true'], env);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /^blobs: +freed 0 /m, 'a second run finds nothing more');
  assert.ok(existsSync(highest) && statSync(highest).size === 0);
  assert.ok(!storeBytes().includes('ORPHAN-HIGH:'));
  const last = await openSqliteStore({ dataDir });
  store = last;
  await last.blobs.put(content('AFTER', 60_000));
  await last.close();
  store = null;
  assert.ok(existsSync(path.join(dataDir, 'blobs', 'pack-001000')), 'the next pack takes the next number');
});
