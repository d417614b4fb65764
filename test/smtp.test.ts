/**
 * SMTP through real sockets (nodemailer and raw sockets): delivery, policy, AUTH, limits,
 * smuggling, malformed input, concurrency. Assertions are on the store (events, blobs, views).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { systemMeta } from '../src/events/envelope.js';
import { createLogger } from '../src/log.js';
import { startSmtpServer } from '../src/smtp/server.js';
import { HOSTILE_MESSAGES } from './support/smtp-corpus.js';
import {
  addUser,
  allEvents,
  DOMAIN,
  dotStuff,
  mailEventCount,
  PASSWORD,
  rawMessage,
  received,
  receivedWithSubject,
  sent,
  SmtpTalk,
  startTestServer,
  transport,
  waitForViews,
  type Reply,
  type TestServer,
} from './support/smtp.js';

let server: TestServer;
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

before(async () => {
  server = await startTestServer({ MAX_MESSAGE_SIZE: String(256 * 1024), SMTP_AUTH_MAX_FAILURES: '3', SMTP_AUTH_MAX_FAILURES_PER_IP: '8' });
  for (const name of ['bob', 'carol', 'dave', 'erin', 'mallory', 'sub', 'locked', 'load']) await addUser(server, `${name}@${DOMAIN}`);
});
after(async () => {
  await server.stop();
});

/** An SMTP session that has said EHLO. */
async function session(): Promise<SmtpTalk> {
  const { talk, greeting } = await SmtpTalk.open(server.port);
  assert.equal(greeting.code, 220);
  assert.equal((await talk.cmd('EHLO client.example.org')).code, 250);
  return talk;
}

describe('delivery to local mailboxes', () => {
  test('EHLO advertises the extensions the issue lists', async () => {
    const { talk } = await SmtpTalk.open(server.port);
    const ehlo = await talk.cmd('EHLO client.example.org');
    const caps = ehlo.lines.map((l) => l.slice(4));
    for (const c of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN', 'STARTTLS', `SIZE ${256 * 1024}`]) assert.ok(caps.includes(c), `EHLO has ${c}: ${caps.join(', ')}`);
    assert.match(ehlo.lines[0]!, /^250-mx\.mail\.test /);
    await talk.quit();
  });

  test('every stored copy starts with a Received trace field: HELO name, IP literal, protocol, queue id, the recipient only when it is the only one', async () => {
    const body = rawMessage({ subject: 'trace one', to: `bob@${DOMAIN}` });
    const one = await session();
    await one.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    const r1 = await one.data(body);
    assert.equal(r1.code, 250, r1.text);
    await one.quit();
    const [e] = await receivedWithSubject(server.store, 'trace one');
    const raw = (await server.store.blobs.get(e!.data.raw.sha256)).toString('latin1');
    const trace = /^Received: from client\.example\.org \(\[127\.0\.0\.1\]\)\r\n\tby mx\.mail\.test \(mailtrail\) with ESMTP id (\S+)\r\n\tfor <bob@mail\.test>;\r\n\t([^\r\n]+)\r\n/.exec(raw);
    assert.ok(trace, raw.slice(0, 300));
    assert.equal(trace[1], /queued as (\S+)/.exec(r1.text)?.[1]);
    assert.ok(Math.abs(Date.parse(trace[2]!) - Date.now()) < 60_000, `date ${trace[2]}`);
    assert.equal(raw.slice(trace[0].length), body, 'the message follows unchanged');

    // HELO (not EHLO), two recipients: protocol SMTP, and no "for" that would show one recipient to the other.
    const { talk: two } = await SmtpTalk.open(server.port);
    assert.equal((await two.cmd('HELO old.example.net')).code, 250);
    await two.envelope('alice@example.org', [`bob@${DOMAIN}`, `carol@${DOMAIN}`]);
    assert.equal((await two.data(rawMessage({ subject: 'trace two', to: `bob@${DOMAIN}` }))).code, 250);
    await two.quit();
    const copies = await receivedWithSubject(server.store, 'trace two');
    assert.equal(copies.length, 2);
    const raw2 = (await server.store.blobs.get(copies[0]!.data.raw.sha256)).toString('latin1');
    assert.match(raw2, /^Received: from old\.example\.net \(\[127\.0\.0\.1\]\)\r\n\tby mx\.mail\.test \(mailtrail\) with SMTP id \S+;\r\n\t[^\r\n]+\r\nFrom: /);
    assert.doesNotMatch(raw2.slice(0, raw2.indexOf('From: ')), /bob|carol/);
  });

  test('SMTPUTF8: a sender with a UTF-8 local part is accepted and recorded as given; a UTF-8 recipient is refused with 553 and the session goes on', async () => {
    const talk = await session();
    const utf8 = (line: string): Promise<Reply> => (talk.write(Buffer.from(`${line}\r\n`, 'utf8')), talk.reply());
    assert.equal((await utf8('MAIL FROM:<jörg@bücher.example> SMTPUTF8')).code, 250);
    const rcpt = await utf8(`RCPT TO:<jörg@${DOMAIN}>`);
    assert.equal(rcpt.code, 553, rcpt.text);
    assert.equal((await talk.cmd(`RCPT TO:<bob@${DOMAIN}>`)).code, 250);
    const r = await talk.data(Buffer.from(rawMessage({ subject: 'utf8 sender', from: 'Jörg <jörg@bücher.example>' }), 'utf8'));
    assert.equal(r.code, 250, r.text);
    await talk.quit();
    const [e] = await receivedWithSubject(server.store, 'utf8 sender');
    assert.equal(e?.data.envelope.mailFrom, 'jörg@bücher.example');
    assert.deepEqual(e?.data.message.from, [{ name: 'Jörg', address: 'jörg@bücher.example' }]);
  });

  test('one mailbox: stored as MailReceived with raw and text blobs, queue id = correlation id, in the mails view', async () => {
    const info = await transport(server.port).sendMail({
      from: 'Alice <alice@example.org>',
      to: `bob@${DOMAIN}`,
      subject: 'one mailbox',
      text: 'Hello Bob,\nthis is the body.',
      html: '<p>Hello <b>Bob</b></p>',
      attachments: [{ filename: 'note.txt', content: 'attached bytes' }],
    });
    const queueId = /queued as (\S+)/.exec(info.response)?.[1];
    assert.ok(queueId, info.response);
    const [e] = await receivedWithSubject(server.store, 'one mailbox');
    assert.ok(e);
    assert.equal(e.meta.correlationId, queueId);
    assert.deepEqual(e.meta.actor, { kind: 'smtp', id: null });
    assert.equal(e.streamId, `mail-${e.data.mailId}`);
    assert.deepEqual(e.data.envelope.rcptTo, [`bob@${DOMAIN}`]);
    assert.equal(e.data.envelope.mailFrom, 'alice@example.org');
    assert.equal(e.data.message.messageId, info.messageId);
    assert.deepEqual(e.data.message.from, [{ name: 'Alice', address: 'alice@example.org' }]);
    assert.match(e.data.message.snippet, /^Hello Bob, this is the body\.$/);
    const raw = await server.store.blobs.get(e.data.raw.sha256);
    assert.match(raw.toString(), /Subject: one mailbox/);
    assert.equal((await server.store.blobs.get(e.data.message.text!.sha256)).toString(), 'Hello Bob,\nthis is the body.');
    assert.match((await server.store.blobs.get(e.data.message.html!.sha256)).toString(), /<b>Bob<\/b>/);
    assert.equal(e.data.message.attachments.length, 1);
    assert.equal(e.data.message.attachments[0]!.filename, 'note.txt');
    assert.equal((await server.store.blobs.get(e.data.message.attachments[0]!.sha256)).toString(), 'attached bytes');
    assert.ok(e.data.authResults, 'unauthenticated mail is checked');
    assert.match(e.data.authResults.header, /^Authentication-Results: mx\.mail\.test;/);
    await waitForViews(server);
    const doc = await server.store.views.get('mails', e.data.mailId);
    assert.equal(doc?.folder, 'inbox');
    assert.equal(doc?.subject, 'one mailbox');
  });

  test('several mailboxes, Bcc included: one copy per envelope recipient, each envelope naming only its own recipient', async () => {
    await transport(server.port).sendMail({
      from: 'alice@example.org',
      to: `bob@${DOMAIN}`,
      cc: `carol@${DOMAIN}`,
      bcc: `dave@${DOMAIN}`,
      subject: 'several mailboxes',
      text: 'hi all',
    });
    const events = await receivedWithSubject(server.store, 'several mailboxes');
    assert.deepEqual(events.map((e) => e.data.envelope.rcptTo[0]).sort(), [`bob@${DOMAIN}`, `carol@${DOMAIN}`, `dave@${DOMAIN}`]);
    assert.equal(new Set(events.map((e) => e.data.mailboxId)).size, 3);
    for (const e of events) assert.equal(e.data.envelope.rcptTo.length, 1);
    // The raw message is one blob shared by all copies; no header names dave.
    assert.equal(new Set(events.map((e) => e.data.raw.sha256)).size, 1);
    assert.doesNotMatch((await server.store.blobs.get(events[0]!.data.raw.sha256)).toString(), /dave/);
  });

  test('envelope recipients are the truth: To header naming others does not deliver to them', async () => {
    const talk = await session();
    await talk.envelope('alice@example.org', [`erin@${DOMAIN}`]);
    const r = await talk.data(rawMessage({ subject: 'envelope truth', to: `bob@${DOMAIN}, carol@${DOMAIN}` }));
    assert.equal(r.code, 250, r.text);
    const events = await receivedWithSubject(server.store, 'envelope truth');
    assert.deepEqual(events.map((e) => e.data.envelope.rcptTo), [[`erin@${DOMAIN}`]]);
    await talk.quit();
  });

  test('a message that starts with its body (no header section) keeps its body as the body', async () => {
    const talk = await session();
    await talk.envelope('alice@example.org', [`dave@${DOMAIN}`]);
    const r = await talk.data('Hello Dave,\r\nthe server is down: call me.\r\n');
    assert.equal(r.code, 250, r.text);
    await talk.quit();
    const [e] = (await received(server.store)).filter((x) => x.data.message.snippet.startsWith('Hello Dave'));
    assert.ok(e, 'the snippet comes from the body');
    assert.equal(e.data.message.snippet, 'Hello Dave, the server is down: call me.');
    const raw = (await server.store.blobs.get(e.data.raw.sha256)).toString();
    assert.match(raw, /^Received: [^]*?\r\n\r\nHello Dave,\r\nthe server is down: call me\.\r\n$/);
    assert.equal((await server.store.blobs.get(e.data.message.text!.sha256)).toString().trim(), 'Hello Dave,\nthe server is down: call me.');
  });

  test('recipient matching is case-insensitive', async () => {
    const talk = await session();
    await talk.envelope('alice@example.org', [`BOB@MAIL.TEST`]);
    assert.equal((await talk.data(rawMessage({ subject: 'case insensitive' }))).code, 250);
    const [e] = await receivedWithSubject(server.store, 'case insensitive');
    assert.ok(e);
    await talk.quit();
  });

  test('unknown recipient: 550 5.1.1 at RCPT, the session stays usable for the others', async () => {
    const talk = await session();
    const [mail, unknown, bob] = await talk.envelope('alice@example.org', [`nobody@${DOMAIN}`, `bob@${DOMAIN}`]);
    assert.equal(mail!.code, 250);
    assert.equal(unknown!.code, 550);
    assert.match(unknown!.text, /^5\.1\.1 /);
    assert.equal(bob!.code, 250);
    assert.equal((await talk.data(rawMessage({ subject: 'after unknown' }))).code, 250);
    const events = await receivedWithSubject(server.store, 'after unknown');
    assert.deepEqual(events.map((e) => e.data.envelope.rcptTo[0]), [`bob@${DOMAIN}`]);
    // and a second transaction on the same connection
    await talk.envelope('alice@example.org', [`carol@${DOMAIN}`]);
    assert.equal((await talk.data(rawMessage({ subject: 'second transaction' }))).code, 250);
    await talk.quit();
  });

  test('a retry of the same message to the same mailbox is stored once and acknowledged with the same queue id', async () => {
    const body = rawMessage({ subject: 'retried', messageId: '<retry-1@example.org>' });
    const acks: string[] = [];
    for (let i = 0; i < 2; i++) {
      const talk = await session();
      await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
      const r = await talk.data(body);
      assert.equal(r.code, 250, r.text);
      acks.push(/queued as (\S+)/.exec(r.text)![1]!);
      await talk.quit();
    }
    const events = await receivedWithSubject(server.store, 'retried');
    assert.equal(events.length, 1);
    assert.equal(acks[0], acks[1]);
    assert.equal(events[0]!.meta.correlationId, acks[0]);
    // Same Message-ID, different content: a different mail.
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    assert.equal((await talk.data(rawMessage({ subject: 'retried', messageId: '<retry-1@example.org>', body: 'other body' }))).code, 250);
    assert.equal((await receivedWithSubject(server.store, 'retried')).length, 2);
    await talk.quit();
  });

  test('a domain added at run time is local: its mailboxes receive, its unknown names get 550 5.1.1 (not "relaying denied")', async () => {
    const talk = await session();
    // Asked once before the domain exists: refused as relaying (and remembered for a few seconds).
    await talk.cmd('MAIL FROM:<alice@example.org>');
    assert.equal((await talk.cmd('RCPT TO:<frank@other.test>')).code, 554);
    await talk.cmd('RSET');
    await server.store.events.append('domain-other.test', [{ type: 'DomainAdded', data: { domain: 'other.test' } }], { expectedVersion: 'no_stream', meta: systemMeta() });
    await addUser(server, 'frank@other.test');
    await talk.envelope('alice@example.org', []);
    assert.equal((await talk.cmd('RCPT TO:<frank@other.test>')).code, 250, 'the cached "not local" answer is re-checked before refusing');
    assert.equal((await talk.cmd('RCPT TO:<nobody@other.test>')).code, 550);
    assert.equal((await talk.data(rawMessage({ subject: 'other domain', to: 'frank@other.test' }))).code, 250);
    const [e] = await receivedWithSubject(server.store, 'other domain');
    assert.deepEqual(e?.data.envelope.rcptTo, ['frank@other.test']);
    await talk.quit();
  });

  test('postmaster (without a domain) is the postmaster mailbox of the default domain; with neither it nor an admin, 550', async () => {
    const talk = await session();
    const [, r] = await talk.envelope('alice@example.org', ['postmaster']);
    assert.equal(r!.code, 550, 'no postmaster mailbox registered, no admin');
    await talk.quit();
  });

  test('postmaster without a mailbox of its own goes to the first admin (RFC 5321 4.5.1: postmaster must be accepted)', async () => {
    const other = await startTestServer({ ADMIN_EMAILS: 'boss@mail.test' });
    try {
      const boss = await addUser(other, `boss@${DOMAIN}`);
      const { talk } = await SmtpTalk.open(other.port);
      await talk.cmd('EHLO client.example.org');
      const replies = await talk.envelope('alice@example.org', ['postmaster', `PostMaster@${DOMAIN}`]);
      assert.deepEqual(replies.map((r) => r.code), [250, 250, 250]);
      assert.equal((await talk.data(rawMessage({ subject: 'abuse report', to: `postmaster@${DOMAIN}` }))).code, 250);
      await talk.quit();
      const copies = await receivedWithSubject(other.store, 'abuse report');
      assert.equal(copies.length, 1, 'one copy: both names are the same mailbox');
      assert.equal(copies[0]!.data.mailboxId, boss.mailboxId);
      assert.match(copies[0]!.data.envelope.rcptTo[0]!, /^postmaster@mail\.test$/i);
    } finally {
      await other.stop();
    }
  });
});

describe('while the mailbox views are behind the log', () => {
  test('a recipient or domain not found yet gets 451 4.3.0 (try later), never a permanent 550 or 554; known ones still pass', async () => {
    // A second SMTP server on the same store whose views never catch up (as during a rebuild).
    const behind = await startSmtpServer({ config: { ...server.config, SMTP_PORT: 0 }, logger: createLogger({ LOG_LEVEL: 'silent' }), store: server.store, viewsCurrent: async () => false });
    try {
      const { talk } = await SmtpTalk.open(behind.port);
      await talk.cmd('EHLO client.example.org');
      assert.equal((await talk.cmd('MAIL FROM:<alice@example.org>')).code, 250);
      const unknown = await talk.cmd(`RCPT TO:<nobody-yet@${DOMAIN}>`);
      assert.equal(unknown.code, 451, unknown.text);
      assert.match(unknown.text, /^4\.3\.0 the mailbox directory is catching up/);
      const otherDomain = await talk.cmd('RCPT TO:<someone@maybe-added.example>');
      assert.equal(otherDomain.code, 451, otherDomain.text);
      assert.equal((await talk.cmd(`RCPT TO:<bob@${DOMAIN}>`)).code, 250, 'a mailbox the view has is found at once');
      await talk.quit();
    } finally {
      await behind.close();
    }
  });
});

describe('no open relay', () => {
  const refusedAtRcpt = async (from: string, to: string, expect: { code: number; enhanced: RegExp }) => {
    const talk = await session();
    const before = await mailEventCount(server.store);
    const mail = await talk.cmd(`MAIL FROM:<${from}>`);
    let rejected = mail;
    if (mail.code === 250) rejected = await talk.cmd(`RCPT TO:${to.startsWith('<') ? to : `<${to}>`}`);
    assert.equal(rejected.code, expect.code, `${from} -> ${to}: ${rejected.code} ${rejected.text}`);
    assert.match(rejected.text, expect.enhanced);
    const data = await talk.cmd('DATA');
    assert.equal(data.code, 503, 'no recipient, no DATA');
    assert.equal(await mailEventCount(server.store), before);
    await talk.quit();
  };

  test('plain external recipient without AUTH: 554 5.7.1', () => refusedAtRcpt('alice@example.org', 'victim@external.example', { code: 554, enhanced: /^5\.7\.1 / }));
  test('external recipient over STARTTLS without AUTH: 554 5.7.1 (TLS is not authentication)', async () => {
    const talk = await session();
    assert.equal((await talk.starttls()).code, 220);
    assert.equal((await talk.cmd('EHLO client.example.org')).code, 250);
    assert.equal((await talk.cmd('MAIL FROM:<alice@example.org>')).code, 250);
    const r = await talk.cmd('RCPT TO:<victim@external.example>');
    assert.equal(r.code, 554, `${r.code} ${r.text}`);
    assert.match(r.text, /^5\.7\.1 /);
    await talk.quit();
  });
  test('% hack: 553 5.1.3', () => refusedAtRcpt('alice@example.org', `victim%external.example@${DOMAIN}`, { code: 553, enhanced: /^5\.1\.3 / }));
  test('bang path: 553 5.1.3', () => refusedAtRcpt('alice@example.org', `external.example!victim@${DOMAIN}`, { code: 553, enhanced: /^5\.1\.3 / }));
  test('source route to an external mailbox: route ignored, relaying denied', () =>
    refusedAtRcpt('alice@example.org', `<@${DOMAIN}:victim@external.example>`, { code: 554, enhanced: /^5\.7\.1 / }));
  test('source route through an external host to a local name: route ignored, still no such mailbox', () =>
    refusedAtRcpt('alice@example.org', `<@external.example:nobody@${DOMAIN}>`, { code: 550, enhanced: /^5\.1\.1 / }));
  test('quoted local part with an @: refused', () => refusedAtRcpt('alice@example.org', `"victim@external.example"@${DOMAIN}`, { code: 501, enhanced: /^5\.1\.3 / }));
  test('quoted local part with a %: refused', () => refusedAtRcpt('alice@example.org', `"victim%external.example"@${DOMAIN}`, { code: 553, enhanced: /^5\.1\.3 / }));
  test('address literal: refused', () => refusedAtRcpt('alice@example.org', 'victim@[192.0.2.1]', { code: 553, enhanced: /^5\.1\.3 / }));
  test('spoofed local sender without AUTH: 553 5.7.1 at MAIL', () => refusedAtRcpt(`bob@${DOMAIN}`, 'victim@external.example', { code: 553, enhanced: /^5\.7\.1 / }));
  test('spoofed local sender in upper case without AUTH: 553 5.7.1', () => refusedAtRcpt(`BOB@MAIL.TEST`, `carol@${DOMAIN}`, { code: 553, enhanced: /^5\.7\.1 / }));
  for (const from of [`"bob"@${DOMAIN}`, `bob%x@${DOMAIN}`, `bob!x@${DOMAIN}`, `böb@${DOMAIN}`]) {
    test(`spoofed local sender the policy cannot take apart (${from}) without AUTH: 553 5.7.1`, () => refusedAtRcpt(from, `carol@${DOMAIN}`, { code: 553, enhanced: /^5\.7\.1 / }));
  }
  test('MAIL or RCPT parameters of extensions not offered: 555 5.5.4; malformed DSN parameters: 501 5.5.4', async () => {
    const talk = await session();
    const r = await talk.cmd('MAIL FROM:<a@example.org> FOO=BAR');
    assert.equal(r.code, 555, `${r.code} ${r.text}`);
    assert.match(r.text, /^5\.5\.4 /);
    for (const cmd of ['MAIL FROM:<a@example.org> RET=ALL', 'MAIL FROM:<a@example.org> ENVID=a+C3+A9', `MAIL FROM:<a@example.org> ENVID=${'x'.repeat(101)}`]) {
      assert.equal((await talk.cmd(cmd)).code, 501, cmd);
    }
    { const ok = await talk.cmd('MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1'); assert.equal(ok.code, 250, ok.text); }
    for (const cmd of [`RCPT TO:<bob@${DOMAIN}> NOTIFY=NEVER,SUCCESS`, `RCPT TO:<bob@${DOMAIN}> NOTIFY=SOMETIMES`, `RCPT TO:<bob@${DOMAIN}> ORCPT=bob`, `RCPT TO:<bob@${DOMAIN}> FOO=1`]) {
      const reply = await talk.cmd(cmd);
      assert.ok(reply.code === 501 || reply.code === 555, `${cmd}: ${reply.code} ${reply.text}`);
    }
    assert.equal((await talk.cmd(`RCPT TO:<bob@${DOMAIN}> NOTIFY=NEVER ORCPT=rfc822;bob+40${DOMAIN}`)).code, 250);
    await talk.quit();
  });
  test('null sender to an external recipient: 554 5.7.1', () => refusedAtRcpt('', 'victim@external.example', { code: 554, enhanced: /^5\.7\.1 / }));

  test('null sender to a local mailbox (a bounce) is delivered', async () => {
    const talk = await session();
    const [mail, rcpt] = await talk.envelope('', [`bob@${DOMAIN}`]);
    assert.equal(mail!.code, 250);
    assert.equal(rcpt!.code, 250);
    assert.equal((await talk.data(rawMessage({ subject: 'a bounce', from: 'MAILER-DAEMON@example.org' }))).code, 250);
    const [e] = await receivedWithSubject(server.store, 'a bounce');
    assert.equal(e?.data.envelope.mailFrom, '');
    await talk.quit();
  });
});

describe('AUTH and submission', () => {
  /** A session that has said EHLO over STARTTLS and authenticated as sub. */
  async function submission(): Promise<SmtpTalk> {
    const talk = await session();
    assert.equal((await talk.starttls()).code, 220);
    assert.equal((await talk.cmd('EHLO client.example.org')).code, 250);
    assert.equal((await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`)).code, 235);
    return talk;
  }

  test('AUTH is offered only after STARTTLS', async () => {
    const { talk } = await SmtpTalk.open(server.port);
    const plain = await talk.cmd('EHLO client.example.org');
    assert.ok(!plain.lines.some((l) => /^250[- ]AUTH /.test(l)), plain.lines.join(' | '));
    assert.equal((await talk.starttls()).code, 220);
    const secure = await talk.cmd('EHLO client.example.org');
    assert.ok(secure.lines.some((l) => /^250[- ]AUTH PLAIN LOGIN$/.test(l)), secure.lines.join(' | '));
    await talk.quit();
  });

  test('AUTH in the middle of a mail transaction: 503 5.5.1, the session stays unauthenticated', async () => {
    const talk = await session();
    await talk.starttls();
    await talk.cmd('EHLO client.example.org');
    assert.equal((await talk.cmd('MAIL FROM:<spoof@external.example>')).code, 250);
    const r = await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`);
    assert.equal(r.code, 503, `${r.code} ${r.text}`);
    assert.match(r.text, /^5\.5\.1 /);
    assert.equal((await talk.cmd('RCPT TO:<victim@external.example>')).code, 554, 'still no relaying');
    assert.equal((await talk.cmd('RSET')).code, 250);
    assert.equal((await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`)).code, 235, 'outside a transaction AUTH works');
    await talk.quit();
  });

  test('a submission with two From fields, an obsolete "From :" field, or a From without an address is refused with 550 5.7.1', async () => {
    const before = await mailEventCount(server.store);
    const heads = [
      `From: sub@${DOMAIN}\r\nFrom: ceo@bank.example\r\n`,
      `From : ceo@bank.example\r\n`,
      `From: Bank Security Team\r\n`,
      `From: ceo(at)bank.example\r\n`,
    ];
    for (const head of heads) {
      const talk = await submission();
      await talk.envelope(`sub@${DOMAIN}`, ['x@external.example']);
      const r = await talk.data(`${head}Subject: from check\r\n\r\nbody\r\n`);
      assert.equal(r.code, 550, `${JSON.stringify(head)}: ${r.code} ${r.text}`);
      assert.match(r.text, /^5\.7\.1 /);
      await talk.quit();
    }
    assert.equal(await mailEventCount(server.store), before);
  });

  test('the same message submitted again to other recipients (split after 452) is relayed to them too; a retry to the same ones is stored once', async () => {
    const message = `From: sub@${DOMAIN}\r\nMessage-ID: <split-1@client.example>\r\nSubject: split\r\n\r\nbody\r\n`;
    for (const to of ['one@external.example', 'two@external.example', 'two@external.example']) {
      const talk = await submission();
      await talk.envelope(`sub@${DOMAIN}`, [to]);
      assert.equal((await talk.data(message)).code, 250);
      await talk.quit();
    }
    const sendings = (await sent(server.store)).filter((e) => e.data.message.subject === 'split');
    assert.deepEqual(sendings.map((e) => e.data.envelope.rcptTo).sort(), [['one@external.example'], ['two@external.example']]);
  });

  test('identical submissions without Message-ID (a cron job, twice) are two messages', async () => {
    const message = `From: sub@${DOMAIN}\r\nSubject: cron alert\r\n\r\ndisk full\r\n`;
    for (let i = 0; i < 2; i++) {
      const talk = await submission();
      await talk.envelope(`sub@${DOMAIN}`, ['ops@external.example', `bob@${DOMAIN}`]);
      assert.equal((await talk.data(message)).code, 250);
      await talk.quit();
    }
    const sendings = (await sent(server.store)).filter((e) => e.data.message.subject === 'cron alert');
    assert.equal(sendings.length, 2);
    assert.notEqual(sendings[0]!.data.messageId, sendings[1]!.data.messageId);
    assert.equal((await receivedWithSubject(server.store, 'cron alert')).length, 2, 'bob gets both');
  });

  test('AUTH without TLS is refused with 538 5.7.0 (STARTTLS first)', async () => {
    const talk = await session();
    const r = await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`);
    assert.equal(r.code, 538);
    assert.match(r.text, /^5\.7\.0 /);
    await talk.quit();
  });

  test('AUTH PLAIN over STARTTLS: 235; then a submission to local and external recipients', async () => {
    const info = await transport(server.port, { user: `sub@${DOMAIN}`, requireTLS: true }).sendMail({
      from: `Sub <sub@${DOMAIN}>`,
      to: ['friend@external.example', `bob@${DOMAIN}`],
      bcc: ['hidden@external.example', `carol@${DOMAIN}`],
      subject: 'submitted',
      text: 'sent through mailtrail',
    });
    assert.match(info.response, /^250 /);
    const queueId = /queued as (\S+)/.exec(info.response)![1];
    const [s] = (await sent(server.store)).filter((e) => e.data.message.subject === 'submitted');
    assert.ok(s, 'MailSent appended');
    assert.equal(s.meta.correlationId, queueId);
    assert.deepEqual(s.meta.actor, { kind: 'smtp', id: `sub@${DOMAIN}` });
    assert.deepEqual(s.data.envelope.rcptTo.sort(), ['friend@external.example', 'hidden@external.example']);
    assert.equal(s.data.envelope.mailFrom, `sub@${DOMAIN}`);
    assert.equal(s.data.wasDraft, false);
    assert.equal(s.data.messageId, info.messageId);
    assert.deepEqual(s.data.bcc.map((a) => a.address).sort(), [`carol@${DOMAIN}`, 'hidden@external.example']);
    const local = (await receivedWithSubject(server.store, 'submitted')).map((e) => e.data);
    assert.deepEqual(local.map((d) => d.envelope.rcptTo[0]).sort(), [`bob@${DOMAIN}`, `carol@${DOMAIN}`]);
    for (const d of local) {
      assert.equal(d.envelope.authUser, `sub@${DOMAIN}`);
      assert.equal(d.envelope.tls, true);
      assert.equal(d.authResults, null, 'authenticated submissions are not SPF/DKIM checked');
    }
    await waitForViews(server);
    const doc = await server.store.views.get('mails', s.data.mailId);
    assert.equal(doc?.folder, 'sent');
    assert.equal(doc?.status, 'queued');
  });

  test('AUTH LOGIN over STARTTLS with raw commands: 235, and a submission without Message-ID/Date/From gets them; Bcc header dropped', async () => {
    const talk = await session();
    assert.equal((await talk.starttls()).code, 220);
    assert.equal((await talk.cmd('EHLO client.example.org')).code, 250);
    assert.equal((await talk.cmd('AUTH LOGIN')).code, 334);
    assert.equal((await talk.cmd(b64(`sub@${DOMAIN}`))).code, 334);
    const ok = await talk.cmd(b64(PASSWORD));
    assert.equal(ok.code, 235, ok.text);
    await talk.envelope(`sub@${DOMAIN}`, ['x@external.example', `bob@${DOMAIN}`]);
    const r = await talk.data(`Subject: bare submission\r\nTo: x@external.example\r\nBcc: bob@${DOMAIN}\r\n\r\nbody\r\n`);
    assert.equal(r.code, 250, r.text);
    const [s] = (await sent(server.store)).filter((e) => e.data.message.subject === 'bare submission');
    assert.ok(s);
    assert.match(s.data.messageId, /^<[0-9a-f-]+@mx\.mail\.test>$/);
    const queueId = /queued as (\S+)/.exec(r.text)?.[1];
    const raw = (await server.store.blobs.get(s.data.raw.sha256)).toString();
    assert.match(raw, new RegExp(`^Received: from client\\.example\\.org \\(\\[127\\.0\\.0\\.1\\]\\)\r\n\tby mx\\.mail\\.test \\(mailtrail\\) with ESMTPSA id ${queueId};\r\n\t.+\r\nMessage-ID: ${s.data.messageId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\r\nDate: .+\r\nFrom: <sub@mail\\.test>\r\nSubject: bare submission\r\n`));
    assert.doesNotMatch(raw, /^Bcc:/im);
    assert.deepEqual(s.data.bcc.map((a) => a.address), [`bob@${DOMAIN}`]);
    assert.deepEqual(s.data.message.from, [{ name: '', address: `sub@${DOMAIN}` }]);
    assert.ok(s.data.message.date, 'the added Date is in the summary');
    await talk.quit();
  });

  test('wrong password: 535 5.7.8; after SMTP_AUTH_MAX_FAILURES failures the account is locked (454 4.7.0) even with the right password', async () => {
    const talk = await session();
    await talk.starttls();
    await talk.cmd('EHLO client.example.org');
    for (let i = 0; i < 3; i++) {
      const r = await talk.cmd(`AUTH PLAIN ${b64(`\0locked@${DOMAIN}\0wrong-${i}`)}`);
      assert.equal(r.code, 535);
      assert.match(r.text, /^5\.7\.8 /);
    }
    const locked = await talk.cmd(`AUTH PLAIN ${b64(`\0locked@${DOMAIN}\0${PASSWORD}`)}`);
    assert.equal(locked.code, 454);
    assert.match(locked.text, /^4\.7\.0 /);
    await talk.quit();
  });

  test('PLAIN with another authorization identity is refused', async () => {
    const talk = await session();
    await talk.starttls();
    await talk.cmd('EHLO client.example.org');
    const r = await talk.cmd(`AUTH PLAIN ${b64(`bob@${DOMAIN}\0sub@${DOMAIN}\0${PASSWORD}`)}`);
    assert.equal(r.code, 535);
    await talk.quit();
  });

  test('MAIL FROM that is not the user’s own address: 553 5.7.1; so is <>', async () => {
    const talk = await session();
    await talk.starttls();
    await talk.cmd('EHLO client.example.org');
    assert.equal((await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`)).code, 235);
    for (const from of [`bob@${DOMAIN}`, 'someone@external.example', '']) {
      const r = await talk.cmd(`MAIL FROM:<${from}>`);
      assert.equal(r.code, 553, `MAIL FROM:<${from}>`);
      assert.match(r.text, /^5\.7\.1 /);
    }
    assert.equal((await talk.cmd(`MAIL FROM:<SUB@${DOMAIN}>`)).code, 250, 'own address in another case is fine');
    await talk.quit();
  });

  test('a submission whose From header is someone else’s is refused with 550 5.7.1 and not stored', async () => {
    const before = await mailEventCount(server.store);
    await assert.rejects(
      transport(server.port, { user: `sub@${DOMAIN}` }).sendMail({ from: `bob@${DOMAIN}`, sender: `sub@${DOMAIN}`, envelope: { from: `sub@${DOMAIN}`, to: ['x@external.example'] }, subject: 'spoof', text: 'x' }),
      (e: Error & { responseCode?: number }) => e.responseCode === 550,
    );
    assert.equal(await mailEventCount(server.store), before);
  });
});

describe('size limits', () => {
  test('SIZE= over the limit: 552 5.3.4 at MAIL FROM', async () => {
    const talk = await session();
    const r = await talk.cmd(`MAIL FROM:<alice@example.org> SIZE=${256 * 1024 + 1}`);
    assert.equal(r.code, 552);
    assert.match(r.text, /^5\.3\.4 /);
    await talk.quit();
  });

  test('a body over the limit: 552 5.3.4 after DATA, nothing stored (no event, no blob), connection still usable', async () => {
    const blobsBefore = server.blobPuts.length;
    const before = await mailEventCount(server.store);
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    const big = rawMessage({ subject: 'too big', body: `${'x'.repeat(998)}\r\n`.repeat(300) });
    const r = await talk.data(big);
    assert.equal(r.code, 552);
    assert.match(r.text, /^5\.3\.4 /);
    assert.equal(await mailEventCount(server.store), before);
    assert.equal(server.blobPuts.length, blobsBefore, 'no blob stored');
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    assert.equal((await talk.data(rawMessage({ subject: 'after too big' }))).code, 250);
    await talk.quit();
  });

  test('a body just under the limit is accepted', async () => {
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    const head = rawMessage({ subject: 'just under', body: '' });
    const body = head + 'y'.repeat(256 * 1024 - Buffer.byteLength(head) - 2);
    assert.equal((await talk.data(body)).code, 250);
    await talk.quit();
  });
});

describe('SMTP smuggling', () => {
  const variants: [string, string][] = [
    ['\\n.\\n', '\n.\n'],
    ['\\r\\n.\\n', '\r\n.\n'],
    ['\\n.\\r\\n', '\n.\r\n'],
    ['\\r.\\r', '\r.\r'],
    ['\\r\\n.\\r', '\r\n.\r'],
    ['\\r.\\r\\n', '\r.\r\n'],
    ['\\r.\\n', '\r.\n'],
    ['\\n.\\r', '\n.\r'],
    ['\\r\\n.\\r\\r\\n', '\r\n.\r\r\n'],
    ['\\n..\\n (dot-stuffed)', '\n..\n'],
  ];
  for (const [name, seq] of variants) {
    test(`${name} followed by a second transaction: never a second message, nothing stored`, async () => {
      const before = await mailEventCount(server.store);
      const talk = await session();
      await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
      const smuggled = `MAIL FROM:<admin@${DOMAIN}>\r\nRCPT TO:<carol@${DOMAIN}>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n`;
      const body = `${rawMessage({ subject: `carrier ${name}`, body: 'first part' })}${seq}${smuggled}`;
      const r = await talk.data(body);
      assert.equal(r.code, 554, `${r.code} ${r.text}`);
      assert.match(r.text, /^5\.6\.0 /);
      // No reply is left over: the next command gets exactly its own answer.
      assert.equal((await talk.cmd('NOOP')).code, 250);
      assert.equal(await mailEventCount(server.store), before);
      assert.equal((await receivedWithSubject(server.store, 'smuggled')).length, 0);
      await talk.quit();
    });
  }

  test('the same sequences split over TCP segments are still caught', async () => {
    const before = await mailEventCount(server.store);
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    assert.equal((await talk.cmd('DATA')).code, 354);
    for (const part of [rawMessage({ subject: 'split', body: 'a' }), '\r', '\n', '.', '\n', 'MAIL FROM:<x@y.z>\r\n']) {
      talk.write(part);
      await new Promise((r) => setTimeout(r, 5));
    }
    talk.write('\r\n.\r\n');
    assert.equal((await talk.reply()).code, 554);
    assert.equal(await mailEventCount(server.store), before);
    await talk.quit();
  });

  test('a lone dot line sent dot-stuffed (\\r\\n..\\r\\n) is ordinary content', async () => {
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    const r = await talk.data(dotStuff(rawMessage({ subject: 'lone dot', body: 'before\r\n.\r\nafter\r\n.leading dot' })));
    assert.equal(r.code, 250, r.text);
    const [e] = await receivedWithSubject(server.store, 'lone dot');
    assert.equal((await server.store.blobs.get(e!.data.message.text!.sha256)).toString(), 'before\n.\nafter\n.leading dot\n');
    await talk.quit();
  });

  test('pipelined commands after a proper end of data are separate transactions (control)', async () => {
    const talk = await session();
    talk.write(`MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@${DOMAIN}>\r\nDATA\r\n`);
    assert.equal((await talk.reply()).code, 250);
    assert.equal((await talk.reply()).code, 250);
    assert.equal((await talk.reply()).code, 354);
    talk.write(`${rawMessage({ subject: 'pipelined 1' })}\r\n.\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@${DOMAIN}>\r\nDATA\r\n`);
    assert.equal((await talk.reply()).code, 250);
    assert.equal((await talk.reply()).code, 250);
    assert.equal((await talk.reply()).code, 250);
    assert.equal((await talk.reply()).code, 354);
    talk.write(`${rawMessage({ subject: 'pipelined 2' })}\r\n.\r\n`);
    assert.equal((await talk.reply()).code, 250);
    assert.equal((await receivedWithSubject(server.store, 'pipelined 1')).length, 1);
    assert.equal((await receivedWithSubject(server.store, 'pipelined 2')).length, 1);
    await talk.quit();
  });
});

describe('hostile input', () => {
  test('NUL bytes in commands: 5xx, the server keeps going', async () => {
    const talk = await session();
    for (const line of ['MAIL FROM:<a\0b@example.org>', 'EHLO bad\0name', 'NO\0OP', `RCPT TO:<bob@${DOMAIN}\0>`]) {
      const r = await talk.cmd(line);
      assert.ok(r.code >= 500 && r.code < 600, `${JSON.stringify(line)} -> ${r.code} ${r.text}`);
    }
    assert.equal((await talk.cmd('NOOP')).code, 250);
    await talk.quit();
  });

  test('NUL bytes in the message: 554 5.6.0, nothing stored, session usable', async () => {
    const before = await mailEventCount(server.store);
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    const r = await talk.data(rawMessage({ subject: 'nul', body: 'a\0b' }));
    assert.equal(r.code, 554);
    assert.match(r.text, /^5\.6\.0 /);
    assert.equal(await mailEventCount(server.store), before);
    assert.equal((await talk.cmd('NOOP')).code, 250);
    await talk.quit();
  });

  test('an over-long command line: 500 5.5.2 and the connection is closed; the server still serves others', async () => {
    const talk = await session();
    const r = await talk.cmd(`MAIL FROM:<${'a'.repeat(server.config.SMTP_MAX_COMMAND_LENGTH + 10)}@example.org>`);
    assert.equal(r.code, 500);
    assert.match(r.text, /^5\.5\.2 /);
    await talk.closedPromise;
    const other = await session();
    assert.equal((await other.cmd('NOOP')).code, 250);
    await other.quit();
  });

  test('an over-long line without a line ending at all: same', async () => {
    const talk = await session();
    talk.write('X'.repeat(server.config.SMTP_MAX_COMMAND_LENGTH * 3));
    const r = await talk.reply();
    assert.equal(r.code, 500);
    await talk.closedPromise;
  });

  test('an over-long line in the message body is stored as it is', async () => {
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    const long = 'z'.repeat(100_000);
    assert.equal((await talk.data(rawMessage({ subject: 'long body line', body: long }))).code, 250);
    const [e] = await receivedWithSubject(server.store, 'long body line');
    assert.equal((await server.store.blobs.get(e!.data.message.text!.sha256)).toString(), `${long}\n`);
    await talk.quit();
  });

  test('DATA aborted by the client going away: nothing stored (no event, no blob)', async () => {
    const before = await mailEventCount(server.store);
    const blobsBefore = server.blobPuts.length;
    const talk = await session();
    await talk.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    assert.equal((await talk.cmd('DATA')).code, 354);
    talk.write(rawMessage({ subject: 'aborted', body: 'half a message'.repeat(1000) }));
    await new Promise((r) => setTimeout(r, 50));
    talk.destroy();
    // The server sees the close; then a fresh session proves it is fine and lets the abort settle.
    const next = await session();
    await next.envelope('alice@example.org', [`bob@${DOMAIN}`]);
    assert.equal((await next.data(rawMessage({ subject: 'after abort' }))).code, 250);
    await next.quit();
    assert.equal((await receivedWithSubject(server.store, 'aborted')).length, 0);
    assert.equal(await mailEventCount(server.store), before + 1);
    assert.equal(server.blobPuts.length, blobsBefore + 2, 'only the raw and text blobs of "after abort"');
  });

  test('malformed MIME corpus (CPython test_email data + hostile samples): each accepted and stored, or cleanly refused', async () => {
    const corpus = [...cpythonCorpus(), ...HOSTILE_MESSAGES.map((m) => ({ name: m.name, bytes: Buffer.from(m.raw, 'latin1') }))];
    assert.ok(corpus.length >= HOSTILE_MESSAGES.length);
    const talk = await session();
    let accepted = 0;
    for (const { name, bytes } of corpus) {
      const before = (await received(server.store)).length;
      await talk.envelope('alice@example.org', [`mallory@${DOMAIN}`]);
      const go = await talk.cmd('DATA');
      assert.equal(go.code, 354, name);
      talk.write(Buffer.from(dotStuff(bytes.toString('latin1')), 'latin1'));
      talk.write(bytes.at(-1) === 0x0a ? '.\r\n' : '\r\n.\r\n');
      const r = await talk.reply();
      assert.ok(r.code === 250 || (r.code >= 550 && r.code < 560), `${name}: ${r.code} ${r.text}`);
      const after = await received(server.store);
      assert.equal(after.length, before + (r.code === 250 ? 1 : 0), name);
      if (r.code === 250) {
        accepted += 1;
        const e = after.at(-1)!;
        assert.ok(await server.store.blobs.has(e.data.raw.sha256), name);
      }
    }
    assert.ok(accepted > 0);
    await talk.quit();
  });
});

describe('concurrency', () => {
  test('200 concurrent sessions, every message stored exactly once', async () => {
    const n = 200;
    const results = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const talk = await session();
        await talk.envelope('alice@example.org', [`load@${DOMAIN}`]);
        const r = await talk.data(rawMessage({ subject: `load ${i}`, messageId: `<load-${i}@example.org>` }));
        await talk.quit();
        return { i, r };
      }),
    );
    for (const { i, r } of results) assert.equal(r.code, 250, `message ${i}: ${r.code} ${r.text}`);
    const events = (await received(server.store)).filter((e) => e.data.message.subject.startsWith('load '));
    assert.equal(events.length, n);
    assert.equal(new Set(events.map((e) => e.data.message.messageId)).size, n);
    const acked = new Set(results.map(({ r }) => /queued as (\S+)/.exec(r.text)![1]));
    assert.deepEqual(new Set(events.map((e) => e.meta.correlationId)), acked);
  });
});

describe('AUTH failure limit per IP', () => {
  // Last in the file: it locks 127.0.0.1 out of AUTH for the rest of the window.
  test('failures across accounts from one IP: after SMTP_AUTH_MAX_FAILURES_PER_IP, 454 4.7.0 for every account', async () => {
    const talk = await session();
    await talk.starttls();
    await talk.cmd('EHLO client.example.org');
    const codes: number[] = [];
    for (let i = 0; i < 12; i++) codes.push((await talk.cmd(`AUTH PLAIN ${b64(`\0nobody${i}@${DOMAIN}\0wrong`)}`)).code);
    assert.ok(codes.includes(535));
    assert.equal(codes.at(-1), 454);
    const r = await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`);
    assert.equal(r.code, 454, 'a valid account from a locked-out IP');
    await talk.quit();
  });
});

describe('transaction log', () => {
  test('every mail event carries the SMTP transaction id as correlation id', async () => {
    const events = (await allEvents(server.store)).filter((e) => e.type === 'MailReceived' || e.type === 'MailSent');
    assert.ok(events.length > 0);
    for (const e of events) {
      assert.equal(e.meta.actor.kind, 'smtp');
      assert.match(e.meta.correlationId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/);
    }
  });
});

/** CPython's email test messages, from any Python on this machine. */
function cpythonCorpus(): { name: string; bytes: Buffer }[] {
  const candidates = [
    ...['/root/.pyenv/versions', '/usr/local/lib', '/usr/lib'].flatMap((base) => {
      if (!existsSync(base)) return [];
      return readdirSync(base).flatMap((v) => [path.join(base, v, 'lib', v.replace(/^(\d+\.\d+).*/, 'python$1'), 'test/test_email/data'), path.join(base, v, 'test/test_email/data')]);
    }),
  ];
  const dir = candidates.find((d) => existsSync(d));
  if (!dir) return [];
  return readdirSync(dir)
    .filter((f) => f.startsWith('msg_'))
    .sort()
    .map((f) => ({ name: `cpython ${f}`, bytes: Buffer.from(readFileSync(path.join(dir, f), 'latin1').replace(/\r?\n/g, '\r\n'), 'latin1') }));
}
