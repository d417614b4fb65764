/**
 * npm run export: a mailbox's raw MIME as mbox (mboxrd) and as .eml files, parsed back with
 * mailparser and compared with what was stored.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { simpleParser, type ParsedMail } from 'mailparser';
import nodemailer from 'nodemailer';
import { v7 as uuidv7 } from 'uuid';
import { allProjections } from '../projections/index.js';
import { rebuild } from '../src/projection/rebuild.js';
import { mboxFromLine, mboxrdMessage } from '../src/ops/export.js';
import type { Store } from '../src/store/port.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { mailReceived, meta, registerAccount, summary, type Account } from './support/events.js';
import { runScript } from './support/process.js';

const crlf = (s: string): Buffer => Buffer.from(s.replace(/\n/g, '\r\n'), 'latin1');

/** Bodies that an mbox must not take for message separators, whatever their quoting. */
const fromLines = crlf(
  [
    'From: Alice <alice@example.org>',
    'To: bob@mail.test',
    'Subject: From lines',
    'Message-ID: <from-lines@example.org>',
    'Date: Mon, 03 Nov 2025 09:05:01 +0000',
    '',
    'From the start of a line.',
    '>From a quoted line.',
    '>>From a line quoted twice.',
    '',
    'From ',
    'not From at the start.',
    '',
  ].join('\n'),
);

/** Latin-1 bytes in an 8bit body, and no line end after the last line. */
const eightBit = Buffer.concat([
  crlf('From: =?utf-8?q?Ren=C3=A9?= <rene@example.fr>\nTo: bob@mail.test\nSubject: 8bit\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n'),
  Buffer.from('Caf\xe9 cr\xe8me, na\xefve.', 'latin1'),
]);

async function compose(subject: string, attachment: Buffer): Promise<Buffer> {
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
  const info = await transport.sendMail({
    from: 'Carol <carol@example.net>',
    to: 'bob@mail.test',
    subject,
    text: 'See the attachment.\nFrom here on it is binary.',
    html: '<p>See the attachment.</p>',
    attachments: [{ filename: 'data.bin', content: attachment, contentType: 'application/octet-stream' }],
  });
  return info.message as Buffer;
}

describe('npm run export', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-export-'));
  const dataDir = path.join(dir, 'data');
  let store: Store;
  let bob: Account;
  /** Raw messages in the order they entered the mailbox. */
  const raws: Buffer[] = [];

  async function receiveRaw(raw: Buffer, subject: string): Promise<void> {
    const ref = await store.blobs.put(raw);
    const mailId = uuidv7();
    const event = mailReceived(bob, subject, mailId);
    if (event.type !== 'MailReceived') throw new Error('unreachable');
    await store.events.append(`mail-${mailId}`, [{ ...event, data: { ...event.data, raw: ref } }], { expectedVersion: 'no_stream', meta: meta() });
    raws.push(raw);
  }

  before(async () => {
    store = await openSqliteStore({ dataDir });
    bob = await registerAccount(store, 'bob@mail.test');
    await receiveRaw(fromLines, 'From lines');
    await receiveRaw(await compose('with attachment', randomBytes(50_000)), 'with attachment');
    await receiveRaw(eightBit, '8bit');
    // Sent mail is exported too; a draft has no MIME and is skipped.
    const sentRaw = await compose('sent by bob', randomBytes(1000));
    const sentId = uuidv7();
    await store.events.append(
      `mail-${sentId}`,
      [
        {
          type: 'MailSent',
          data: {
            mailId: sentId,
            mailboxId: bob.mailboxId,
            userId: bob.userId,
            messageId: `<${sentId}@mail.test>`,
            raw: await store.blobs.put(sentRaw),
            envelope: { mailFrom: bob.address, rcptTo: ['carol@example.net'] },
            message: summary('sent by bob'),
            bcc: [],
            wasDraft: false,
          },
        },
      ],
      { expectedVersion: 'no_stream', meta: meta() },
    );
    raws.push(sentRaw);
    const draftId = uuidv7();
    const draft = { to: [], cc: [], bcc: [], subject: 'unfinished', text: null, html: null, attachments: [], inReplyTo: null, references: [] };
    await store.events.append(`mail-${draftId}`, [{ type: 'DraftCreated', data: { mailId: draftId, mailboxId: bob.mailboxId, userId: bob.userId, draft } }], {
      expectedVersion: 'no_stream',
      meta: meta(),
    });
    await rebuild(store, allProjections);
    await store.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const sameMail = (got: ParsedMail, want: ParsedMail, label: string): void => {
    assert.equal(got.subject, want.subject, label);
    // mbox ends every message with a line end, so a body that had none gains one.
    assert.equal(got.text?.trimEnd(), want.text?.trimEnd(), label);
    assert.equal(got.html, want.html, label);
    assert.equal(got.messageId, want.messageId, label);
    assert.deepEqual(
      got.attachments.map((a) => [a.filename, a.content]),
      want.attachments.map((a) => [a.filename, a.content]),
      label,
    );
  };

  test('mbox: one From_ line per mail, >From quoting undone exactly, every mail parses as stored', async () => {
    const out = path.join(dir, 'bob.mbox');
    const r = await runScript('scripts/export.ts', ['--mailbox', 'BOB@mail.test', '--format', 'mbox', '--out', out], { DATA_DIR: dataDir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /exported: 4 mails/);
    assert.match(r.stdout, /skipped: +1 drafts/);
    assert.match(r.stderr, /export: 100%/);

    // Split at unquoted From_ lines (mboxrd: no line of a message can start with "From ").
    const parts = readFileSync(out).toString('latin1').split(/^(?=From )/m);
    assert.equal(parts.length, raws.length);
    for (const [i, part] of parts.entries()) {
      const newline = part.indexOf('\n');
      const fromLine = part.slice(0, newline);
      assert.match(fromLine, /^From \S+@\S+ (Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d \d{4}$/);
      assert.ok(part.endsWith('\n\n'), 'a blank line ends each message');
      const body = part.slice(newline + 1, -1).replace(/^>(>*From )/gm, '$1');
      let want = raws[i]!.toString('latin1').replace(/\r\n/g, '\n');
      if (!want.endsWith('\n')) want += '\n';
      assert.equal(body, want, `mail ${i} comes back byte for byte (LF line ends)`);
      sameMail(await simpleParser(Buffer.from(body, 'latin1')), await simpleParser(raws[i]!), `mail ${i}`);
    }
    assert.match(parts[0]!, /^From alice@example\.org /);
    assert.match(parts[3]!, /^From bob@mail\.test /, 'sent mail: the mailbox is the sender');
    assert.match(parts[0]!, /^>From the start of a line\.$/m);
    assert.match(parts[0]!, /^>>From a quoted line\.$/m);
    assert.match(parts[0]!, /^>>>From a line quoted twice\.$/m);
    assert.equal((await simpleParser(Buffer.from(parts[2]!.slice(parts[2]!.indexOf('\n') + 1), 'latin1'))).text?.trim(), 'Café crème, naïve.');
  });

  test('eml: one file per mail, in mailbox order, byte for byte what was stored', async () => {
    const out = path.join(dir, 'bob-eml');
    const r = await runScript('scripts/export.ts', ['--mailbox', 'bob@mail.test', '--format', 'eml', '--out', out], { DATA_DIR: dataDir });
    assert.equal(r.code, 0, r.stderr);
    const files = readdirSync(out).sort();
    assert.equal(files.length, raws.length);
    assert.deepEqual(files.map((f) => f.split('-').slice(0, 2).join('-')), ['000001-inbox', '000002-inbox', '000003-inbox', '000004-sent']);
    for (const [i, f] of files.entries()) {
      assert.match(f, /\.eml$/);
      const bytes = readFileSync(path.join(out, f));
      assert.ok(bytes.equals(raws[i]!), f);
      sameMail(await simpleParser(bytes), await simpleParser(raws[i]!), f);
    }
  });

  test('refuses to overwrite, and names an unknown mailbox', async () => {
    const existing = path.join(dir, 'bob.mbox');
    const again = await runScript('scripts/export.ts', ['--mailbox', 'bob@mail.test', '--out', existing], { DATA_DIR: dataDir });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /bob\.mbox exists; give --out a new file name/);
    const full = path.join(dir, 'full');
    mkdirSync(path.join(full, 'x'), { recursive: true });
    const notEmpty = await runScript('scripts/export.ts', ['--mailbox', 'bob@mail.test', '--format', 'eml', '--out', full], { DATA_DIR: dataDir });
    assert.equal(notEmpty.code, 1);
    assert.match(notEmpty.stderr, /full exists; give --out a new folder name/);
    const unknown = await runScript('scripts/export.ts', ['--mailbox', 'nobody@mail.test', '--out', path.join(dir, 'x.mbox')], { DATA_DIR: dataDir });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no mailbox nobody@mail\.test/);
    for (const format of ['mbox', 'eml']) {
      const noFolder = await runScript('scripts/export.ts', ['--mailbox', 'bob@mail.test', '--format', format, '--out', path.join(dir, 'missing', 'bob')], { DATA_DIR: dataDir });
      assert.equal(noFolder.code, 1, `${format}: ${noFolder.stderr}`);
      assert.match(noFolder.stderr, /missing is not a folder; create it first/);
      assert.doesNotMatch(noFolder.stderr, /\n\s+at /, 'no stack trace');
    }
    const format = await runScript('scripts/export.ts', ['--mailbox', 'bob@mail.test', '--format', 'maildir', '--out', path.join(dir, 'y')], { DATA_DIR: dataDir });
    assert.equal(format.code, 1);
    assert.match(format.stderr, /--format is mbox or eml/);
  });

  test('mboxrd helpers: From_ line in asctime form, quoting of every From level', () => {
    assert.equal(mboxFromLine('a@b.org', new Date('2025-11-03T09:05:01Z')), 'From a@b.org Mon Nov  3 09:05:01 2025\n');
    assert.equal(mboxFromLine('', new Date('2025-11-23T19:00:00Z')), 'From MAILER-DAEMON Sun Nov 23 19:00:00 2025\n');
    assert.equal(mboxrdMessage(Buffer.from('S: x\r\n\r\nFrom a\r\n>From b\r\nX From c')).toString(), 'S: x\n\n>From a\n>>From b\nX From c\n\n');
  });
});
