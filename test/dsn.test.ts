/**
 * Delivery status notifications asked for at submission (DSN, RFC 3461), end to end: a real SMTP
 * session (STARTTLS, AUTH) gives NOTIFY, ORCPT, RET and ENVID; the relay delivers to a relay sink
 * (a real smtp-server) that accepts some recipients and refuses others; the notices arrive in the
 * sender's inbox as RFC 3464 reports. And the other request a submission makes of later hops,
 * REQUIRETLS (RFC 8689).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mailState } from '../src/compose/decide.js';
import { isAutomatic } from '../src/smtp/server.js';
import { describeEvent } from '../src/events/describe.js';
import type { EventOf } from '../src/events/envelope.js';
import { bounceMailId, noticeMailId } from '../src/relay/dsn.js';
import { relayThrough, startSink, type RelaySink } from './support/relay-sink.js';
import { addUser, DOMAIN, fakeResolver, PASSWORD, rawMessage, sent, SmtpTalk, startTestServer, type TestServer } from './support/smtp.js';

let server: TestServer;
let sink: RelaySink;
const SENDER = `sub@${DOMAIN}`;

before(async () => {
  sink = await startSink();
  // gone*, quiet*: refused for good; slow*: deferred twice, then accepted.
  sink.rcptPolicy = (rcpt, attempt) => (rcpt.startsWith('gone') || rcpt.startsWith('quiet') ? 550 : rcpt.startsWith('slow') && attempt <= 2 ? 451 : 250);
  server = await startTestServer(relayThrough(sink));
  await addUser(server, SENDER);
  await addUser(server, `bob@${DOMAIN}`);
});
after(async () => {
  await server?.stop();
  await sink?.close();
});

/** Submits `subject` over STARTTLS with AUTH to `at`, with the MAIL and RCPT commands as given; returns its MailSent. */
async function submit(subject: string, mail: string, rcpts: string[], refusedFirst?: string, at = server): Promise<EventOf<'MailSent'>> {
  const { talk } = await SmtpTalk.open(at.port);
  assert.equal((await talk.cmd('EHLO client.example.org')).code, 250);
  assert.equal((await talk.starttls()).code, 220);
  const ehlo = await talk.cmd('EHLO client.example.org');
  assert.ok(ehlo.lines.some((l) => l.slice(4) === 'DSN'), 'DSN is offered');
  assert.equal((await talk.cmd(`AUTH PLAIN ${Buffer.from(`\0${SENDER}\0${PASSWORD}`).toString('base64')}`)).code, 235);
  if (refusedFirst) assert.notEqual((await talk.cmd(refusedFirst)).code, 250, refusedFirst);
  assert.equal((await talk.cmd(mail)).code, 250, mail);
  for (const r of rcpts) assert.equal((await talk.cmd(r)).code, 250, r);
  const to = rcpts.map((r) => /<([^>]+)>/.exec(r)![1]).join(', ');
  assert.equal((await talk.data(rawMessage({ from: SENDER, to, subject, body: 'the body of the original' }))).code, 250);
  await talk.quit();
  const [mailSent] = (await sent(at.store)).filter((e) => e.data.message.subject === subject);
  assert.ok(mailSent, 'MailSent appended');
  return mailSent;
}

/** The raw text of the notice stored under `mailId` in the sender's inbox, once it is there; null after `ms`. */
async function notice(mailId: string, ms = 15_000, at = server): Promise<string | null> {
  const deadline = Date.now() + ms;
  for (;;) {
    const [e] = await at.store.events.readStream(`mail-${mailId}`);
    if (e?.type === 'MailReceived') return (await at.store.blobs.get(e.data.raw.sha256)).toString('utf8');
    if (Date.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const finalRecipients = (report: string): string[] => [...report.matchAll(/^Final-Recipient: rfc822; (\S+)\r$/gm)].map((m) => m[1]!);

/** Waits until the relay recorded an outcome for every external recipient of `mailId`. */
async function settled(mailId: string, recipients: number, at = server): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const events = await at.store.events.readStream(`mail-${mailId}`);
    const done = events.flatMap((e) => (e.type === 'MailDelivered' || (e.type === 'MailDeliveryFailed' && e.data.permanent) ? e.data.recipients : []));
    if (done.length >= recipients) return;
    assert.ok(Date.now() < deadline, `relay outcomes for ${mailId}: ${done.join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('NOTIFY, ORCPT, RET and ENVID: a relayed notice for SUCCESS, a bounce with the whole original for FAILURE, nothing for NEVER, a delivered notice for a local SUCCESS', async () => {
  const mailSent = await submit('with dsn', 'MAIL FROM:<sub@mail.test> RET=FULL ENVID=QQ+2B123', [
    'RCPT TO:<ok@external.example> NOTIFY=SUCCESS ORCPT=rfc822;ok+40original.example',
    'RCPT TO:<gone@external.example> NOTIFY=FAILURE,DELAY',
    'RCPT TO:<quiet@external.example> NOTIFY=NEVER',
    `RCPT TO:<bob@${DOMAIN}> NOTIFY=SUCCESS`,
  ]);
  assert.deepEqual(mailSent.data.dsn, {
    ret: 'FULL',
    envid: 'QQ+123',
    recipients: [
      { address: 'ok@external.example', notify: ['SUCCESS'], orcpt: 'rfc822;ok@original.example' },
      { address: 'gone@external.example', notify: ['FAILURE', 'DELAY'], orcpt: null },
      { address: 'quiet@external.example', notify: [], orcpt: null },
    ],
  });
  assert.equal(
    describeEvent(mailSent).details.dsn,
    'RET=FULL ENVID=QQ+123; ok@external.example NOTIFY=SUCCESS ORCPT=rfc822;ok@original.example; gone@external.example NOTIFY=FAILURE,DELAY; quiet@external.example NOTIFY=NEVER',
    'the audit shows what was asked',
  );
  const id = mailSent.data.mailId;

  const delivered = await notice(noticeMailId(id, 'delivered', 0));
  assert.ok(delivered, 'the local recipient’s delivered notice');
  assert.match(delivered, /^Subject: Successful Mail Delivery Report\r$/m);
  assert.match(delivered, /Original-Envelope-Id: QQ\+123\r\n/);
  assert.match(delivered, /Final-Recipient: rfc822; bob@mail\.test\r\nAction: delivered\r\nStatus: 2\.0\.0\r\n/);

  await settled(id, 3);
  const relayed = await notice(noticeMailId(id, 'relayed', 1));
  assert.ok(relayed, 'the relayed notice');
  assert.match(relayed, /Original-Recipient: rfc822;ok@original\.example\r\nFinal-Recipient: rfc822; ok@external\.example\r\nAction: relayed\r\nStatus: 2\.0\.0\r\nDiagnostic-Code: smtp; 250 /);
  assert.deepEqual(finalRecipients(relayed), ['ok@external.example'], 'only the recipient that asked for it');

  const bounce = await notice(bounceMailId(id, 1));
  assert.ok(bounce, 'the bounce');
  assert.match(bounce, /Final-Recipient: rfc822; gone@external\.example\r\nAction: failed\r\nStatus: 5\.1\.1\r\n/);
  assert.deepEqual(finalRecipients(bounce), ['gone@external.example'], 'NOTIFY=NEVER: no report for that recipient');
  assert.match(bounce, /Content-Type: message\/rfc822[^]*the body of the original/, 'RET=FULL: the whole original');
  assert.match(bounce, /Original-Envelope-Id: QQ\+123\r\n/);
});

test('without DSN parameters: a failure bounces with the header section only, a success and a local delivery send nothing', async () => {
  // A refused MAIL's parameters do not carry over to the next one.
  const refused = 'MAIL FROM:<someone-else@mail.test> RET=FULL ENVID=stale';
  const mailSent = await submit('without dsn', 'MAIL FROM:<sub@mail.test>', ['RCPT TO:<fine@external.example>', 'RCPT TO:<gone2@external.example>', `RCPT TO:<bob@${DOMAIN}>`], refused);
  assert.equal(mailSent.data.dsn, undefined, 'no DSN request recorded');
  await settled(mailSent.data.mailId, 2);
  const bounce = await notice(bounceMailId(mailSent.data.mailId, 1));
  assert.ok(bounce);
  assert.match(bounce, /Content-Type: text\/rfc822-headers/);
  assert.doesNotMatch(bounce, /the body of the original/);
  assert.equal(await notice(noticeMailId(mailSent.data.mailId, 'relayed', 1), 1000), null, 'no success notice unasked');
  assert.equal(await notice(noticeMailId(mailSent.data.mailId, 'delivered', 0), 0), null, 'no delivered notice unasked');
});

test('NOTIFY=NEVER for every recipient: no notice at all, not even a bounce', async () => {
  const mailSent = await submit('never', 'MAIL FROM:<sub@mail.test> RET=HDRS', ['RCPT TO:<gone3@external.example> NOTIFY=NEVER', `RCPT TO:<bob@${DOMAIN}> NOTIFY=NEVER`]);
  await settled(mailSent.data.mailId, 1);
  assert.equal(await notice(bounceMailId(mailSent.data.mailId, 1), 1000), null, 'no bounce');
  assert.equal(await notice(noticeMailId(mailSent.data.mailId, 'delivered', 0), 0), null);
});

test('NOTIFY=DELAY: a delayed notice at the first deferral (with Will-Retry-Until), then the relayed one; no delay notice unasked', async () => {
  const mailSent = await submit('delayed', 'MAIL FROM:<sub@mail.test>', ['RCPT TO:<slow1@external.example> NOTIFY=DELAY,SUCCESS', 'RCPT TO:<slow2@external.example>']);
  const id = mailSent.data.mailId;
  await settled(id, 2);
  const delayed = await notice(noticeMailId(id, 'delayed', 1));
  assert.ok(delayed, 'the delay notice');
  assert.match(delayed, /^Subject: Delayed Mail \(still being retried\)\r$/m);
  assert.deepEqual(finalRecipients(delayed), ['slow1@external.example'], 'only the recipient that asked for it');
  assert.match(delayed, /Action: delayed\r\nStatus: 4\.3\.0\r\nDiagnostic-Code: smtp; 451 4\.3\.0 [^\r]*\r\nLast-Attempt-Date: [^\r]+\r\nWill-Retry-Until: [^\r]+\r\n/);
  const relayed = await notice(noticeMailId(id, 'relayed', 3));
  assert.ok(relayed, 'then the relayed notice, at the attempt that delivered it');
  assert.deepEqual(finalRecipients(relayed), ['slow1@external.example']);
  assert.equal(await notice(noticeMailId(id, 'delayed', 2), 0), null, 'one delay notice, at the first deferral only (not the second)');
});

test('a next hop that offers DSN gets the parameters, one transaction per NOTIFY and ORCPT, and reports success itself: no relayed notice from us; a refusal at RCPT still bounces', async () => {
  const dsnSink = await startSink(undefined, { dsn: true });
  dsnSink.rcptPolicy = (rcpt) => (rcpt.startsWith('gone') ? 550 : 250);
  const hop = await startTestServer(relayThrough(dsnSink));
  try {
    await addUser(hop, SENDER);
    const mailSent = await submit(
      'to a dsn hop',
      'MAIL FROM:<sub@mail.test> RET=HDRS ENVID=E+2B1',
      [
        'RCPT TO:<ok@external.example> NOTIFY=SUCCESS ORCPT=rfc822;ok+40original.example',
        'RCPT TO:<also@external.example> NOTIFY=SUCCESS,FAILURE',
        'RCPT TO:<plain@external.example>',
        'RCPT TO:<gone@external.example> NOTIFY=FAILURE',
        // Same NOTIFY, and an ORCPT that only repeats the address: one transaction for both.
        'RCPT TO:<same1@external.example> NOTIFY=SUCCESS ORCPT=rfc822;same1@external.example',
        'RCPT TO:<same2@external.example> NOTIFY=SUCCESS',
      ],
      undefined,
      hop,
    );
    const id = mailSent.data.mailId;
    await settled(id, 6, hop);
    const messageId = mailSent.data.message.messageId!.replace(/^<|>$/g, '');
    const received = dsnSink.deliveries
      .filter((d) => d.messageId === messageId)
      .flatMap((d) => d.dsn!.recipients.map((r) => ({ ...r, ret: d.dsn!.ret, envid: d.dsn!.envid, with: d.rcptTo.length })))
      .sort((a, b) => a.address.localeCompare(b.address));
    assert.deepEqual(received, [
      { address: 'also@external.example', notify: ['SUCCESS', 'FAILURE'], orcpt: null, ret: 'HDRS', envid: 'E+1', with: 1 },
      { address: 'ok@external.example', notify: ['SUCCESS'], orcpt: 'rfc822;ok@original.example', ret: 'HDRS', envid: 'E+1', with: 1 },
      { address: 'plain@external.example', notify: null, orcpt: null, ret: 'HDRS', envid: 'E+1', with: 1 },
      { address: 'same1@external.example', notify: ['SUCCESS'], orcpt: null, ret: 'HDRS', envid: 'E+1', with: 2 },
      { address: 'same2@external.example', notify: ['SUCCESS'], orcpt: null, ret: 'HDRS', envid: 'E+1', with: 2 },
    ]);
    const bounce = await notice(bounceMailId(id, 1), 15_000, hop);
    assert.ok(bounce, 'the refusal at RCPT is ours to report');
    assert.deepEqual(finalRecipients(bounce), ['gone@external.example']);
    assert.equal(await notice(noticeMailId(id, 'relayed', 1), 1000, hop), null, 'the next hop reports the deliveries');
  } finally {
    await hop.stop();
    await dsnSink.close();
  }
});

test('REQUIRETLS: offered over TLS only; a submission with it is kept so, and the relay never sends it to a next hop without TLS', async () => {
  const plain = (await SmtpTalk.open(server.port)).talk;
  const ehlo = await plain.cmd('EHLO client.example.org');
  assert.ok(!ehlo.lines.some((l) => l.slice(4) === 'REQUIRETLS'), 'not offered without TLS');
  assert.equal((await plain.cmd('MAIL FROM:<someone@elsewhere.example> REQUIRETLS')).code, 530);
  await plain.quit();

  const mailSent = await submit('requires tls', 'MAIL FROM:<sub@mail.test> REQUIRETLS', ['RCPT TO:<tls@external.example>']);
  assert.equal(mailSent.data.requireTls, true);
  assert.match(String(describeEvent(mailSent).details.requireTls), /REQUIRETLS/, 'the audit shows it');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const failed = (await server.store.events.readStream(`mail-${mailSent.data.mailId}`)).find((e) => e.type === 'MailDeliveryFailed');
    if (failed?.type === 'MailDeliveryFailed') {
      assert.equal(failed.data.permanent, false, `deferred until a next hop can take it so: ${failed.data.response}`);
      assert.match(failed.data.response, /STARTTLS/);
      break;
    }
    assert.ok(Date.now() < deadline, 'an attempt was recorded');
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(sink.copies(mailSent.data.messageId), 0, 'nothing sent in cleartext');

  // A refused MAIL's REQUIRETLS does not carry over to the next one.
  const next = await submit('no longer requires tls', 'MAIL FROM:<sub@mail.test>', ['RCPT TO:<fine@external.example>'], 'MAIL FROM:<someone-else@mail.test> REQUIRETLS');
  assert.equal(next.data.requireTls, undefined);
});

test('mail from elsewhere with NOTIFY=SUCCESS: a delivered notice goes back through the relay from the null sender, once, only to a sender SPF vouches for, and in no folder', async () => {
  const dsnSink = await startSink(undefined, { dsn: true });
  const spf = fakeResolver({ 'good.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] } });
  const mx = await startTestServer(relayThrough(dsnSink), spf);
  try {
    const bob = await addUser(mx, `bob@${DOMAIN}`);
    const deliverFrom = async (from: string, subject: string, messageId: string, rcpt: string, headers: string[] = []): Promise<void> => {
      const { talk } = await SmtpTalk.open(mx.port);
      await talk.cmd('EHLO mta.good.example');
      assert.equal((await talk.cmd(`MAIL FROM:<${from}> ENVID=in-1`)).code, 250);
      assert.equal((await talk.cmd(rcpt)).code, 250);
      assert.equal((await talk.data(rawMessage({ from, subject, messageId, headers }))).code, 250);
      await talk.quit();
    };
    const asked = `RCPT TO:<bob@${DOMAIN}> NOTIFY=SUCCESS ORCPT=rfc822;bob+40${DOMAIN}`;
    await deliverFrom('news@good.example', 'please confirm', '<confirm-1@good.example>', asked);
    await deliverFrom('news@good.example', 'please confirm', '<confirm-1@good.example>', asked); // a retry: stored once, answered once
    await deliverFrom('someone@forged.example', 'forged', '<forged-1@forged.example>', asked);
    await deliverFrom('news@good.example', 'not asked', '<plain-1@good.example>', `RCPT TO:<bob@${DOMAIN}>`);
    await deliverFrom('news@good.example', 'out of office', '<auto-1@good.example>', asked, ['Auto-Submitted: auto-replied']);

    const deadline = Date.now() + 15_000;
    while (dsnSink.deliveries.length === 0) {
      assert.ok(Date.now() < deadline, 'the notice reached the sender’s server');
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 1000)); // room for any notice that should not come
    assert.equal(dsnSink.deliveries.length, 1, 'one notice: not for the retry, the forged sender, the mail that did not ask or an automatic one');
    const [notice] = dsnSink.deliveries;
    assert.equal(notice!.mailFrom, '', 'from the null sender');
    assert.deepEqual(notice!.dsn, { ret: null, envid: null, recipients: [{ address: 'news@good.example', notify: null, orcpt: null }] }, 'asking for no notice in turn');
    assert.deepEqual(notice!.rcptTo, ['news@good.example']);
    const text = notice!.raw.toString('utf8');
    assert.match(text, new RegExp(`^From: Mail Delivery System <MAILER-DAEMON@${DOMAIN.replace('.', '\\.')}>\\r$`, 'm'));
    assert.match(text, /^Subject: Successful Mail Delivery Report\r$/m);
    assert.match(text, /Original-Envelope-Id: in-1\r\nReporting-MTA: dns; /);
    assert.match(text, new RegExp(`Original-Recipient: rfc822;bob@${DOMAIN.replace('.', '\\.')}\\r\\n`));
    assert.match(text, new RegExp(`Final-Recipient: rfc822; bob@${DOMAIN.replace('.', '\\.')}\\r\\nAction: delivered\\r\\nStatus: 2\\.0\\.0\\r\\n`));
    assert.match(text, /^In-Reply-To: <confirm-1@good\.example>\r$/m);

    const sentNotices = (await sent(mx.store)).filter((e) => e.data.notice === true);
    assert.equal(sentNotices.length, 1, 'one MailSent, marked a notice');
    assert.equal(mailState(await mx.store.events.readStream(`mail-${sentNotices[0]!.data.mailId}`)).status, 'none', 'no command of the mailbox owner touches it');
    const mailbox = await mx.store.views.get('mailboxes', bob.mailboxId);
    assert.deepEqual((mailbox as { counts?: unknown } | null)?.counts, { inbox: 4, unread: 4, sent: 0, drafts: 0, trash: 0 }, 'four mails in the inbox (the retry stored once), the notice in no folder');
    assert.equal((await mx.store.views.list('mails', { where: { mailboxId: bob.mailboxId, folder: 'sent' }, orderBy: { field: 'sortAt', direction: 'desc' }, limit: 10 })).length, 0);
  } finally {
    await mx.stop();
    await dsnSink.close();
  }
});

test('automatic mail, by its header section (RFC 3834): never answered with a success notice', () => {
  const head = (...fields: string[]): Buffer => Buffer.from(`${['From: a@b.example', 'Subject: s', ...fields].join('\r\n')}\r\n`);
  for (const field of ['Auto-Submitted: auto-replied', 'auto-submitted: Auto-Generated', 'Auto-Submitted:\r\n auto-notified', 'Auto-Submitted : no-reply', 'Content-Type: multipart/report; report-type=delivery-status; boundary=x']) {
    assert.equal(isAutomatic(head(field)), true, field);
  }
  for (const field of ['Auto-Submitted: no', 'Auto-Submitted: NO (a person wrote this)', 'Content-Type: multipart/mixed; boundary=x', 'X-Auto-Submitted: auto-replied']) {
    assert.equal(isAutomatic(head(field)), false, field);
  }
});

test('success notices to one sender domain: at most 60 an hour', async () => {
  const spf = fakeResolver({ 'busy.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] } });
  const mx = await startTestServer({ RELAY_ENABLED: 'false' }, spf);
  try {
    await addUser(mx, `bob@${DOMAIN}`);
    const { talk } = await SmtpTalk.open(mx.port);
    await talk.cmd('EHLO mta.busy.example');
    for (let i = 0; i < 62; i++) {
      assert.equal((await talk.cmd('MAIL FROM:<news@busy.example>')).code, 250);
      assert.equal((await talk.cmd(`RCPT TO:<bob@${DOMAIN}> NOTIFY=SUCCESS`)).code, 250);
      assert.equal((await talk.data(rawMessage({ from: 'news@busy.example', subject: `n${i}`, messageId: `<n${i}@busy.example>` }))).code, 250, `message ${i} is stored whatever happens to its notice`);
    }
    await talk.quit();
    assert.equal((await sent(mx.store)).filter((e) => e.data.notice === true).length, 60);
  } finally {
    await mx.stop();
  }
});
