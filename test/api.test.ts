/**
 * The tRPC API end to end: the typed client and raw HTTP against a real server on a real store.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT, UnsecuredJWT } from 'jose';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { createClient, type MailtrailClient } from '../src/api/client.js';
import { mailStream } from '../src/mail/ids.js';
import { changePassword } from '../src/accounts/accounts.js';
import { awaitViews } from '../src/api/consistency.js';
import { clientAddress } from '../src/api/http.js';
import type { Context } from '../src/api/trpc.js';
import { systemMeta } from '../src/events/envelope.js';
import { expectCode } from './support/api.js';
import { rawMessage, startTestServer, waitForViews, type TestServer } from './support/smtp.js';

const SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';
const PASSWORD = 'correct horse battery staple';

let server: TestServer;
let base = '';

async function signUp(email: string, name = 'Someone'): Promise<{ client: MailtrailClient; token: string; userId: string }> {
  const anon = createClient(base);
  const { user } = await anon.auth.register.mutate({ email, password: PASSWORD, name });
  const { token } = await anon.auth.login.mutate({ email, password: PASSWORD });
  return { client: createClient(base, { token }), token, userId: user.id };
}

async function raw(path: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

before(async () => {
  server = await startTestServer({ JWT_SECRET: SECRET, ADMIN_EMAILS: 'boss@mail.test', MAX_ATTACHMENT_SIZE: '100000', SMTP_ALLOW_INSECURE_AUTH: 'true' });
  base = `http://127.0.0.1:${server.app.http.port}`;
});
after(async () => server.stop());

describe('accounts', () => {
  test('change password: the current one is checked (BAD_REQUEST, not a lost session), the new one too; every old session ends, the answer signs this one in again', async () => {
    const { client, token: old } = await signUp('pat@mail.test');
    const other = createClient(base, { token: (await createClient(base).auth.login.mutate({ email: 'pat@mail.test', password: PASSWORD })).token });
    // A live stream (server-sent events) opened with the old password's token.
    const hangUp = new AbortController();
    const stream = await fetch(`${base}/trpc/mails.changes?connectionParams=${encodeURIComponent(JSON.stringify({ token: old }))}`, { signal: hangUp.signal });
    assert.equal(stream.status, 200);
    const streamEnded = (async () => {
      const reader = stream.body!.getReader();
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += new TextDecoder().decode(value);
        if (/event: return/.test(text)) {
          hangUp.abort();
          return text;
        }
      }
    })();
    await expectCode(client.auth.changePassword.mutate({ currentPassword: 'not it at all', newPassword: 'a new password' }), 'BAD_REQUEST', /^currentPassword: that is not your current password/);
    await expectCode(client.auth.changePassword.mutate({ currentPassword: PASSWORD, newPassword: 'short' }), 'BAD_REQUEST', /^newPassword: must be at least 8/);
    const { token } = await client.auth.changePassword.mutate({ currentPassword: PASSWORD, newPassword: 'a new password' });
    assert.equal((await createClient(base, { token }).auth.me.query()).email, 'pat@mail.test', 'the new token works at once');
    await expectCode(createClient(base, { token: old }).auth.me.query(), 'UNAUTHORIZED');
    await expectCode(other.auth.me.query(), 'UNAUTHORIZED', undefined);
    await expectCode(createClient(base).auth.login.mutate({ email: 'pat@mail.test', password: PASSWORD }), 'UNAUTHORIZED');
    assert.ok((await createClient(base).auth.login.mutate({ email: 'pat@mail.test', password: 'a new password' })).token);
    const ended = await Promise.race([streamEnded, new Promise<null>((r) => setTimeout(() => r(null), 20_000).unref())]);
    assert.notEqual(ended, null, 'the old session’s live stream ends');
  });

  test('register, login, and see the new mailbox', async () => {
    const anon = createClient(base);
    const { user } = await anon.auth.register.mutate({ email: 'Ann@mail.test', password: PASSWORD, name: 'Ann' });
    assert.deepEqual(Object.keys(user).sort(), ['email', 'id', 'name']);
    const { token, user: me } = await anon.auth.login.mutate({ email: 'ann@MAIL.test', password: PASSWORD });
    assert.equal(me.id, user.id);
    const ann = createClient(base, { token });
    const [mailbox] = await ann.mailboxes.list.query();
    assert.equal(mailbox!.address, 'Ann@mail.test');
    assert.deepEqual(mailbox!.counts, { inbox: 0, unread: 0, sent: 0, drafts: 0, trash: 0 });
    assert.deepEqual((await ann.auth.me.query()).limits, { maxAttachmentBytes: 100000 });
  });

  test('registration refuses what it must, with the field named', async () => {
    const anon = createClient(base);
    await expectCode(anon.auth.register.mutate({ email: 'not-an-address', password: PASSWORD, name: 'x' }), 'BAD_REQUEST', /^email: /);
    await expectCode(anon.auth.register.mutate({ email: 'short@mail.test', password: 'short', name: 'x' }), 'BAD_REQUEST', /password: must be at least 8/);
    await expectCode(anon.auth.register.mutate({ email: 'x@elsewhere.example', password: PASSWORD, name: 'x' }), 'BAD_REQUEST', /not a domain this server receives mail for/);
    await expectCode(anon.auth.register.mutate({ email: 'postmaster@mail.test', password: PASSWORD, name: 'x' }), 'FORBIDDEN', /reserved/);
    await anon.auth.register.mutate({ email: 'twice@mail.test', password: PASSWORD, name: 'x' });
    await expectCode(anon.auth.register.mutate({ email: 'TWICE@mail.test', password: PASSWORD, name: 'x' }), 'CONFLICT');
  });

  test('login: wrong password or unknown user is UNAUTHORIZED', async () => {
    const anon = createClient(base);
    await signUp('carl@mail.test');
    await expectCode(anon.auth.login.mutate({ email: 'carl@mail.test', password: 'wrong password' }), 'UNAUTHORIZED', /wrong email or password/);
    await expectCode(anon.auth.login.mutate({ email: 'nobody@mail.test', password: PASSWORD }), 'UNAUTHORIZED', /wrong email or password/);
  });

  test('a password change ends the sessions signed in with the old password', async () => {
    const { client: before, token } = await signUp('pia@mail.test');
    const other = await signUp('quin@mail.test');
    await changePassword(server.app.store, 'pia@mail.test', 'a brand new password', { bcryptCost: 4, meta: systemMeta() });
    await waitForViews(server);
    await expectCode(before.auth.me.query(), 'UNAUTHORIZED');
    assert.equal((await fetch(`${base}/trpc/auth.me`, { headers: { authorization: `Bearer ${token}` } })).status, 401);
    await expectCode(createClient(base).auth.login.mutate({ email: 'pia@mail.test', password: PASSWORD }), 'UNAUTHORIZED');
    const { token: fresh } = await createClient(base).auth.login.mutate({ email: 'pia@mail.test', password: 'a brand new password' });
    assert.equal((await createClient(base, { token: fresh }).auth.me.query()).email, 'pia@mail.test');
    assert.equal((await other.client.auth.me.query()).email, 'quin@mail.test', 'other accounts keep their sessions');
  });

  test('forged, foreign, unsigned and tampered tokens are UNAUTHORIZED', async () => {
    const { token, userId } = await signUp('dora@mail.test');
    const call = (t: string) => createClient(base, { token: t }).mailboxes.list.query();
    await expectCode(createClient(base).mailboxes.list.query(), 'UNAUTHORIZED');
    const foreign = await new SignJWT({ email: 'dora@mail.test' }).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuer('mailtrail').setExpirationTime('1h').sign(new TextEncoder().encode('another-key-another-key-another-key!!'));
    await expectCode(call(foreign), 'UNAUTHORIZED');
    await expectCode(call(new UnsecuredJWT({ email: 'dora@mail.test' }).setSubject(userId).setIssuer('mailtrail').encode()), 'UNAUTHORIZED');
    const [h, p, s] = token.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    await expectCode(call([h, Buffer.from(JSON.stringify({ ...payload, sub: 'someone-else' })).toString('base64url'), s].join('.')), 'UNAUTHORIZED');
    const expired = await new SignJWT({ email: 'dora@mail.test' }).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuer('mailtrail').setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(new TextEncoder().encode(SECRET));
    await expectCode(call(expired), 'UNAUTHORIZED');
    assert.equal((await call(token)).length, 1);
  });
});

describe('mail', () => {
  let eve: Awaited<ReturnType<typeof signUp>>;
  let fred: Awaited<ReturnType<typeof signUp>>;
  before(async () => {
    eve = await signUp('eve@mail.test', 'Eve');
    fred = await signUp('fred@mail.test', 'Fred');
  });

  test('mail delivered over SMTP is listed at once (read-your-writes), newest first, paged', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.port, secure: false, ignoreTLS: true });
    for (let i = 0; i < 5; i++) await transport.sendMail({ from: 'x@example.org', to: 'eve@mail.test', subject: `hello ${i}`, text: `body ${i}` });
    transport.close();
    const first = await eve.client.mails.list.query({ folder: 'inbox', limit: 3 });
    assert.deepEqual(first.items.map((m) => m.subject), ['hello 4', 'hello 3', 'hello 2']);
    assert.ok(first.nextCursor);
    const second = await eve.client.mails.list.query({ folder: 'inbox', limit: 3, cursor: first.nextCursor });
    assert.deepEqual(second.items.map((m) => m.subject), ['hello 1', 'hello 0']);
    assert.equal(second.nextCursor, null);
    const mail = await eve.client.mails.get.query({ id: first.items[0]!.id });
    assert.equal(mail.text?.trim(), 'body 4');
    assert.equal(mail.folder, 'inbox');
    assert.doesNotMatch(first.items[0]!.messageId ?? '', /[<>]/);
    await expectCode(eve.client.mails.list.query({ cursor: 'garbage' }), 'BAD_REQUEST', /cursor/);
  });

  test('an HTML-only mail: the snippet comes from its HTML, and it has no text; a broken attachment name still downloads', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.port, secure: false, ignoreTLS: true });
    const htmlOnly = rawMessage({ to: 'eve@mail.test', subject: 'html only', body: '<p>Hello <b>world</b> from html</p>' }).replace('text/plain', 'text/html');
    // UTF-16 with a lone high surrogate: mailparser decodes the name to '\ud800a.txt'.
    const brokenName = [
      ...rawMessage({ to: 'eve@mail.test', subject: 'broken name', headers: ['X-Pad: 1'] }).split('\r\n').slice(0, 6),
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b"',
      '',
      '--b',
      'Content-Type: text/plain',
      '',
      'see attached',
      '--b',
      'Content-Type: text/plain',
      'Content-Disposition: attachment; filename="=?UTF-16BE?B?2ABhAC4AdAB4AHQ=?="',
      '',
      'attached text',
      '--b--',
      '',
    ].join('\r\n');
    for (const raw of [htmlOnly, brokenName]) await transport.sendMail({ envelope: { from: 'x@example.org', to: ['eve@mail.test'] }, raw });
    transport.close();
    const inbox = (await eve.client.mails.list.query({ folder: 'inbox' })).items;
    const html = inbox.find((m) => m.subject === 'html only')!;
    assert.equal(html.snippet, 'Hello world from html');
    const full = await eve.client.mails.get.query({ id: html.id });
    assert.equal(full.text, null);
    assert.match(full.html ?? '', /<b>world<\/b>/);
    const broken = inbox.find((m) => m.subject === 'broken name')!;
    const res = await fetch(`${base}/attachments/${broken.id}/att1`, { headers: { authorization: `Bearer ${eve.token}` } });
    assert.equal(res.status, 200);
    assert.equal((await res.text()).trim(), 'attached text');
    assert.match(res.headers.get('content-disposition') ?? '', /filename\*=UTF-8''%EF%BF%BD/, 'the lone surrogate as U+FFFD');
    assert.equal(res.headers.get('content-security-policy'), "default-src 'none'; sandbox");
  });

  test('a send that loses a race with an edit or another send gives no local recipient a copy', async () => {
    for (let round = 0; round < 3; round++) {
      const subject = `race ${round}`;
      const { id } = await eve.client.mails.createDraft.mutate({ to: ['fred@mail.test'], subject, text: 'v0' });
      const outcomes = await Promise.allSettled([
        ...[1, 2, 3].map((v) => eve.client.mails.updateDraft.mutate({ id, to: ['fred@mail.test'], subject: `${subject} v${v}`, text: `v${v}` })),
        ...[1, 2, 3].map(() => eve.client.mails.send.mutate({ id })),
      ]);
      const sends = outcomes.slice(3).filter((o) => o.status === 'fulfilled');
      assert.ok(sends.length <= 1, 'sent once at most');
      const copies = (await fred.client.mails.list.query({ folder: 'inbox', limit: 100 })).items.filter((m) => m.subject.startsWith(subject));
      if (sends.length === 0) {
        assert.deepEqual(copies.map((m) => m.subject), [], 'nothing was sent: nobody gets a copy');
        await eve.client.mails.deleteDraft.mutate({ id });
        continue;
      }
      const sentMail = await eve.client.mails.get.query({ id });
      assert.deepEqual(copies.map((m) => m.subject), [sentMail.subject], 'exactly the version that was sent');
    }
  });

  test('drafts: create, update, delete; a deleted draft is gone', async () => {
    const { id } = await eve.client.mails.createDraft.mutate({ to: ['someone@remote.example'], subject: 'v1', text: 'first' });
    await eve.client.mails.updateDraft.mutate({ id, to: ['someone@remote.example'], subject: 'v2', text: 'second' });
    const drafts = await eve.client.mails.list.query({ folder: 'drafts' });
    assert.deepEqual(drafts.items.map((m) => m.subject), ['v2']);
    assert.equal((await eve.client.mails.get.query({ id })).text, 'second');
    await eve.client.mails.deleteDraft.mutate({ id });
    assert.equal((await eve.client.mails.list.query({ folder: 'drafts' })).items.length, 0);
    await expectCode(eve.client.mails.get.query({ id }), 'NOT_FOUND');
    await expectCode(eve.client.mails.updateDraft.mutate({ id, subject: 'v3' }), 'NOT_FOUND');
  });

  test('send: once, to sent with status queued, local recipients get their copy, Bcc stays out of the headers', async () => {
    const { id } = await eve.client.mails.createDraft.mutate({
      to: [{ name: 'Remote', address: 'remote@remote.example' }],
      cc: ['fred@mail.test'],
      bcc: ['hidden@remote.example'],
      subject: 'quarterly',
      text: 'numbers attached',
      attachments: [{ filename: 'q3.csv', contentType: 'text/csv', content: Buffer.from('a,b\n1,2\n').toString('base64') }],
    });
    const sent = await eve.client.mails.send.mutate({ id });
    assert.equal(sent.status, 'queued');
    assert.match(sent.messageId, /^[^<>]+@mail\.test$/);
    await expectCode(eve.client.mails.send.mutate({ id }), 'CONFLICT', /already sent/);
    const inSent = await eve.client.mails.list.query({ folder: 'sent' });
    assert.equal(inSent.items[0]!.id, id);
    assert.equal(inSent.items[0]!.status, 'queued');
    assert.equal((await eve.client.mails.list.query({ folder: 'drafts' })).items.length, 0);
    const copy = (await fred.client.mails.list.query({ folder: 'inbox' })).items.find((m) => m.subject === 'quarterly');
    assert.ok(copy, 'the local Cc recipient has a copy');
    assert.equal(copy.messageId, sent.messageId);
    const events = await server.store.events.readStream(mailStream(id));
    const mailSent = events.find((e) => e.type === 'MailSent');
    assert.ok(mailSent && mailSent.type === 'MailSent');
    assert.deepEqual(mailSent.data.envelope.rcptTo.sort(), ['hidden@remote.example', 'remote@remote.example'], 'the relay gets only external recipients');
    const mime = (await server.store.blobs.get(mailSent.data.raw.sha256)).toString();
    assert.doesNotMatch(mime, /^bcc:/im);
    assert.doesNotMatch(mime, /hidden@remote\.example/);
    assert.match(mime, new RegExp(`^Message-ID: <${sent.messageId}>`, 'im'));
  });

  test('history is the audit trail of the mail, delivery attempts included', async () => {
    const { id } = await eve.client.mails.createDraft.mutate({ to: ['x@remote.example'], subject: 'tracked', text: 'hi' });
    const { messageId } = await eve.client.mails.send.mutate({ id });
    const [, sentEvent] = await server.store.events.readStream(mailStream(id));
    await server.store.events.append(
      mailStream(id),
      [{ type: 'MailDeliveryFailed', data: { mailId: id, messageId: `<${messageId}>`, recipients: ['x@remote.example'], response: '451 4.7.1 try later', attempt: 1, permanent: false, nextAttemptAt: new Date().toISOString() } }],
      { expectedVersion: sentEvent!.version, meta: systemMeta() },
    );
    const history = await eve.client.mails.history.query({ id });
    assert.deepEqual(history.map((h) => h.type), ['DraftCreated', 'MailSent', 'MailDeliveryFailed']);
    assert.ok(history.every((h) => !Number.isNaN(Date.parse(h.at))));
    assert.equal((history[2] as { response?: string }).response, '451 4.7.1 try later');
  });

  test('a delivery receipt: a local recipient’s delivered notice in the sender’s inbox at once; external ones asked of the relay (NOTIFY=SUCCESS,FAILURE)', async () => {
    const { id } = await eve.client.mails.createDraft.mutate({ to: ['fred@mail.test', 'x@remote.example'], subject: 'with a receipt', text: 'hi' });
    await eve.client.mails.send.mutate({ id, deliveryReceipt: true });
    const sentEvent = (await server.store.events.readStream(mailStream(id))).find((e) => e.type === 'MailSent');
    assert.deepEqual(sentEvent?.type === 'MailSent' && sentEvent.data.dsn, {
      ret: null,
      envid: null,
      recipients: ['fred@mail.test', 'x@remote.example'].map((address) => ({ address, notify: ['SUCCESS', 'FAILURE'], orcpt: null })),
    });
    const inbox = await eve.client.mails.list.query({ folder: 'inbox', limit: 5 });
    const receipt = inbox.items.find((m) => m.subject === 'Successful Mail Delivery Report');
    assert.ok(receipt, 'the receipt is in the inbox when send returns');
    const raw = await (await fetch(`${base}/original/${receipt.id}`, { headers: { authorization: `Bearer ${eve.token}` } })).text();
    assert.match(raw, /Final-Recipient: rfc822; fred@mail\.test\r\nAction: delivered\r\n/);

    const { id: plain } = await eve.client.mails.createDraft.mutate({ to: ['fred@mail.test'], subject: 'without a receipt', text: 'hi' });
    await eve.client.mails.send.mutate({ id: plain });
    const after = await eve.client.mails.list.query({ folder: 'inbox', limit: 5 });
    assert.equal(after.items.filter((m) => m.subject === 'Successful Mail Delivery Report').length, 1, 'none unasked');
  });

  test('sending to a local address with no mailbox is refused and sends nothing', async () => {
    const { id } = await eve.client.mails.createDraft.mutate({ to: ['ghost@mail.test'], subject: 'boo' });
    await expectCode(eve.client.mails.send.mutate({ id }), 'BAD_REQUEST', /no mailbox ghost@mail\.test/);
    assert.deepEqual((await server.store.events.readStream(mailStream(id))).map((e) => e.type), ['DraftCreated']);
  });

  test('one user cannot read, change, send, trace or download another user’s mail', async () => {
    const { id } = await eve.client.mails.createDraft.mutate({
      to: ['x@remote.example'],
      subject: 'private',
      attachments: [{ filename: 'secret.txt', content: Buffer.from('secret').toString('base64') }],
    });
    await expectCode(fred.client.mails.get.query({ id }), 'NOT_FOUND');
    await expectCode(fred.client.mails.history.query({ id }), 'NOT_FOUND');
    await expectCode(fred.client.mails.updateDraft.mutate({ id, subject: 'mine now' }), 'NOT_FOUND');
    await expectCode(fred.client.mails.deleteDraft.mutate({ id }), 'NOT_FOUND');
    await expectCode(fred.client.mails.send.mutate({ id }), 'NOT_FOUND');
    assert.ok(!(await fred.client.mails.list.query({ folder: 'drafts' })).items.some((m) => m.id === id));
    const url = `${base}/attachments/${id}/att1`;
    assert.equal((await fetch(url)).status, 401);
    assert.equal((await fetch(url, { headers: { authorization: `Bearer ${fred.token}` } })).status, 404);
    const own = await fetch(url, { headers: { authorization: `Bearer ${eve.token}` } });
    assert.equal(own.status, 200);
    assert.equal(await own.text(), 'secret');
    assert.match(own.headers.get('content-disposition') ?? '', /^attachment; filename="secret\.txt"/);
    assert.equal(own.headers.get('x-content-type-options'), 'nosniff');
    assert.equal((await fetch(`${base}/original/${id}`, { headers: { authorization: `Bearer ${eve.token}` } })).status, 404, 'a draft has no original message yet');
  });

  test('the original message: as stored, with the Authentication-Results field on top of the Received field; owner only', async () => {
    const gil = await signUp('gil@mail.test', 'Gil');
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.port, secure: false, ignoreTLS: true });
    await transport.sendMail({ from: 'x@example.org', to: 'gil@mail.test', subject: 'keep the source', text: 'line one\nline two' });
    transport.close();
    const mail = (await gil.client.mails.list.query({ folder: 'inbox' })).items.find((m) => m.subject === 'keep the source')!;
    const url = `${base}/original/${mail.id}`;
    assert.equal((await fetch(url)).status, 401);
    assert.equal((await fetch(url, { headers: { authorization: `Bearer ${fred.token}` } })).status, 404);
    const res = await fetch(url, { headers: { authorization: `Bearer ${gil.token}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'message/rfc822');
    assert.equal(res.headers.get('content-disposition'), `attachment; filename="${mail.id}.eml"`);
    const original = await res.text();
    const { authResults } = await gil.client.mails.get.query({ id: mail.id });
    assert.ok(authResults);
    assert.ok(original.startsWith(`${authResults.header}\r\nReceived: from `), original.slice(0, 300));
    assert.match(original, /\r\nSubject: keep the source\r\n/);
    assert.match(original, /\r\n\r\nline one\r\nline two/);
    const parsed = await simpleParser(original);
    assert.equal(parsed.subject, 'keep the source');
    assert.match(String(parsed.headers.get('authentication-results')), /spf=/);
  });

  test('trash: received and sent mail go to Trash and back to their folder, counted, in the history, owner only', async () => {
    const hana = await signUp('hana@mail.test', 'Hana');
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.port, secure: false, ignoreTLS: true });
    for (const subject of ['junk', 'keep']) await transport.sendMail({ from: 'x@example.org', to: 'hana@mail.test', subject, text: subject });
    transport.close();
    const junk = (await hana.client.mails.list.query({ folder: 'inbox' })).items.find((m) => m.subject === 'junk')!;
    const { id: sentId } = await hana.client.mails.createDraft.mutate({ to: ['x@remote.example'], subject: 'outgoing', text: 'hi' });
    await hana.client.mails.send.mutate({ id: sentId });
    const counts = async () => (await hana.client.mailboxes.list.query())[0]!.counts;
    const subjects = async (folder: 'inbox' | 'sent' | 'trash') => (await hana.client.mails.list.query({ folder })).items.map((m) => m.subject);
    assert.deepEqual(await counts(), { inbox: 2, unread: 2, sent: 1, drafts: 0, trash: 0 });

    const trashed = await hana.client.mails.trash.mutate({ id: junk.id });
    await hana.client.mails.trash.mutate({ id: sentId });
    assert.deepEqual(await hana.client.mails.trash.mutate({ id: junk.id }), trashed, 'trashing again is a no-op');
    assert.deepEqual((await subjects('trash')).sort(), ['junk', 'outgoing']);
    assert.deepEqual(await subjects('inbox'), ['keep']);
    assert.deepEqual(await subjects('sent'), []);
    assert.deepEqual(await counts(), { inbox: 1, unread: 1, sent: 0, drafts: 0, trash: 2 });
    const inTrash = await hana.client.mails.get.query({ id: junk.id });
    assert.deepEqual([inTrash.folder, inTrash.trashedFrom, inTrash.unread], ['trash', 'inbox', true]);
    await expectCode(hana.client.mails.setRead.mutate({ id: junk.id, read: true }), 'BAD_REQUEST', /in the trash; restore it first/);

    await expectCode(fred.client.mails.trash.mutate({ id: junk.id }), 'NOT_FOUND');
    await expectCode(fred.client.mails.restore.mutate({ id: junk.id }), 'NOT_FOUND');
    const { id: draftId } = await hana.client.mails.createDraft.mutate({ subject: 'unfinished' });
    await expectCode(hana.client.mails.trash.mutate({ id: draftId }), 'BAD_REQUEST', /is a draft; delete it instead/);
    await hana.client.mails.deleteDraft.mutate({ id: draftId });

    const restored = await hana.client.mails.restore.mutate({ id: junk.id });
    assert.deepEqual(await hana.client.mails.restore.mutate({ id: junk.id }), restored, 'restoring a mail not in Trash is a no-op');
    await hana.client.mails.restore.mutate({ id: sentId });
    assert.deepEqual(await subjects('inbox'), ['keep', 'junk'], 'back in its place');
    assert.deepEqual(await subjects('sent'), ['outgoing']);
    assert.deepEqual(await subjects('trash'), []);
    assert.deepEqual(await counts(), { inbox: 2, unread: 2, sent: 1, drafts: 0, trash: 0 });
    const back = await hana.client.mails.get.query({ id: junk.id });
    assert.deepEqual([back.folder, back.trashedFrom, back.unread], ['inbox', null, true]);

    const history = await hana.client.mails.history.query({ id: junk.id });
    assert.deepEqual(
      history.map((h) => [h.type, h.actor, (h as { folder?: string }).folder]),
      [
        ['MailReceived', 'smtp', undefined],
        ['MailTrashed', `user:${hana.userId}`, 'inbox'],
        ['MailRestored', `user:${hana.userId}`, 'inbox'],
      ],
    );
    assert.deepEqual([history[1]!.position, history[2]!.position], [trashed.position, restored.position]);
  });

  test('delete for good: only from the trash, owner only, gone from every view, history kept; empty trash deletes the rest', async () => {
    const ines = await signUp('ines@mail.test', 'Ines');
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.port, secure: false, ignoreTLS: true });
    for (const subject of ['spam 1', 'spam 2', 'spam 3', 'keep']) await transport.sendMail({ from: 'x@example.org', to: 'ines@mail.test', subject, text: subject });
    transport.close();
    const inbox = (await ines.client.mails.list.query({ folder: 'inbox' })).items;
    const idOf = (subject: string) => inbox.find((m) => m.subject === subject)!.id;
    const counts = async () => (await ines.client.mailboxes.list.query())[0]!.counts;
    const subjects = async (folder: 'inbox' | 'trash') => (await ines.client.mails.list.query({ folder })).items.map((m) => m.subject).sort();

    await expectCode(ines.client.mails.delete.mutate({ id: idOf('keep') }), 'BAD_REQUEST', /not in the trash; move it there first/);
    for (const subject of ['spam 1', 'spam 2', 'spam 3']) await ines.client.mails.trash.mutate({ id: idOf(subject) });
    await expectCode(fred.client.mails.delete.mutate({ id: idOf('spam 1') }), 'NOT_FOUND');
    const { id: draftId } = await ines.client.mails.createDraft.mutate({ subject: 'unfinished' });
    await expectCode(ines.client.mails.delete.mutate({ id: draftId }), 'BAD_REQUEST', /is a draft/);

    const deleted = await ines.client.mails.delete.mutate({ id: idOf('spam 1') });
    await expectCode(ines.client.mails.delete.mutate({ id: idOf('spam 1') }), 'NOT_FOUND', /no mail/);
    await expectCode(ines.client.mails.get.query({ id: idOf('spam 1') }), 'NOT_FOUND');
    await expectCode(ines.client.mails.restore.mutate({ id: idOf('spam 1') }), 'NOT_FOUND');
    await expectCode(ines.client.mails.setRead.mutate({ id: idOf('spam 1'), read: true }), 'NOT_FOUND', /no mail/);
    assert.deepEqual(await subjects('trash'), ['spam 2', 'spam 3']);
    assert.deepEqual(await counts(), { inbox: 1, unread: 1, sent: 0, drafts: 1, trash: 2 });
    const history = await ines.client.mails.history.query({ id: idOf('spam 1') });
    assert.deepEqual(
      history.map((h) => [h.type, h.actor]),
      [
        ['MailReceived', 'smtp'],
        ['MailTrashed', `user:${ines.userId}`],
        ['MailDeleted', `user:${ines.userId}`],
      ],
      'the audit trail outlives the mail',
    );
    assert.equal(history[2]!.position, deleted.position);

    assert.equal((await fred.client.mails.emptyTrash.mutate()).deleted, 0);
    assert.deepEqual(await subjects('trash'), ['spam 2', 'spam 3'], "another user's empty trash leaves this one alone");
    const emptied = await ines.client.mails.emptyTrash.mutate();
    assert.equal(emptied.deleted, 2);
    assert.deepEqual(await subjects('trash'), []);
    assert.deepEqual(await subjects('inbox'), ['keep']);
    assert.deepEqual(await counts(), { inbox: 1, unread: 1, sent: 0, drafts: 1, trash: 0 });
    assert.equal((await ines.client.mails.emptyTrash.mutate()).deleted, 0, 'an empty trash stays empty');
  });

  test('attachments over the limit are refused, naming the attachment', async () => {
    await expectCode(
      eve.client.mails.createDraft.mutate({ to: ['x@remote.example'], subject: 'big', attachments: [{ filename: 'big.bin', content: Buffer.alloc(150_000).toString('base64') }] }),
      'BAD_REQUEST',
      /attachments\.0: big\.bin is 150000 bytes, the limit is 100000/,
    );
  });
});

describe('raw HTTP', () => {
  let token = '';
  before(async () => {
    token = (await signUp('gus@mail.test')).token;
  });
  const auth = () => ({ authorization: `Bearer ${token}` });

  test('queries as GET with ?input=, mutations as POST with a JSON body; answers are never cached', async () => {
    const list = await raw(`/trpc/mails.list?input=${encodeURIComponent(JSON.stringify({ folder: 'inbox' }))}`, { headers: auth() });
    assert.equal(list.status, 200);
    const res = await fetch(`${base}/trpc/auth.me`, { headers: auth() });
    assert.equal(res.headers.get('cache-control'), 'private, no-store');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.deepEqual(list.body.result.data, { items: [], nextCursor: null });
    const created = await raw('/trpc/mails.createDraft', { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ to: ['a@remote.example'], subject: 's' }) });
    assert.equal(created.status, 200);
    assert.match(created.body.result.data.id, /^[0-9a-f-]{36}$/);
  });

  test('every user mistake has its proper code, never a 500', async () => {
    const post = (path: string, body: string, headers: Record<string, string> = {}) => raw(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const malformed = await post('/trpc/auth.login', '{"email": "a@mail.test", ');
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body.error.data.code, 'PARSE_ERROR');
    const operator = await post('/trpc/auth.login', JSON.stringify({ email: { $gt: '' }, password: { $ne: null } }));
    assert.equal(operator.status, 400);
    assert.equal(operator.body.error.data.code, 'BAD_REQUEST');
    assert.match(operator.body.error.message, /email: /);
    const big = await post('/trpc/mails.createDraft', JSON.stringify({ to: [], subject: 'x', text: 'x'.repeat(2_000_000) }), auth());
    assert.equal(big.status, 413);
    assert.equal(big.body.error.data.code, 'PAYLOAD_TOO_LARGE');
    const missing = await raw('/trpc/mails.nope', { headers: auth() });
    assert.equal(missing.status, 404);
    const badId = await raw(`/trpc/mails.get?input=${encodeURIComponent(JSON.stringify({ id: 'x' }))}`, { headers: auth() });
    assert.equal(badId.status, 400);
    assert.match(badId.body.error.message, /^id: /);
    const wrongType = await raw(`/trpc/mails.list?input=${encodeURIComponent(JSON.stringify({ limit: 1000 }))}`, { headers: auth() });
    assert.equal(wrongType.status, 400);
    assert.match(wrongType.body.error.message, /^limit: /);
    const notJsonInput = await raw('/trpc/mails.list?input=%7Bnope', { headers: auth() });
    assert.equal(notJsonInput.status, 400);
    for (const [field, value] of [['inReplyTo', 'abc@x>\r\nX-Injected: 1\r\nFoo: <y'], ['references', ['r1@x>\r\nX-Injected: 1']], ['references', ['<two words@x>']]] as const) {
      const res = await post('/trpc/mails.createDraft', JSON.stringify({ to: [], subject: 'x', [field]: value }), auth());
      assert.equal(res.status, 400, `${field}: ${JSON.stringify(value)}`);
      assert.match(res.body.error.message, new RegExp(`^${field}(\\.0)?: must be a Message-ID`));
    }
    const threaded = await post('/trpc/mails.createDraft', JSON.stringify({ to: [], subject: 'x', inReplyTo: 'a.b@x', references: ['<r@x>', 'no-at-sign'] }), auth());
    assert.equal(threaded.status, 200, 'Message-IDs with or without brackets, and odd but single tokens, are taken');
    for (const path of ['/original/nope', `/original/${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}`, '/attachments/nope']) {
      const res = await fetch(`${base}${path}`, { headers: auth() });
      assert.equal(res.status, 404, `${path}: not the web client's page`);
      assert.doesNotMatch(await res.text(), /<html/i);
    }
    const noStack = JSON.stringify([malformed, operator, big, badId].map((r) => r.body));
    assert.doesNotMatch(noStack, /\bat .+\.ts:\d+/, 'no stack traces in responses');
  });
});

describe('domains (admin)', () => {
  test('an admin adds a domain; users may then register in it; others are refused', async () => {
    const boss = createClient(base);
    await boss.auth.register.mutate({ email: 'boss@mail.test', password: PASSWORD, name: 'Boss' });
    const { token } = await boss.auth.login.mutate({ email: 'boss@mail.test', password: PASSWORD });
    const admin = createClient(base, { token });
    await admin.domains.add.mutate({ domain: 'Second.Example' });
    await expectCode(admin.domains.add.mutate({ domain: 'second.example' }), 'CONFLICT');
    await expectCode(admin.domains.add.mutate({ domain: 'MAIL.test' }), 'CONFLICT', /already a local domain/);
    await expectCode(admin.domains.add.mutate({ domain: 'not a domain' }), 'BAD_REQUEST', /^domain: /);
    assert.deepEqual((await admin.domains.list.query()).map((d) => d.domain), ['mail.test', 'second.example']);
    await createClient(base).auth.register.mutate({ email: 'new@second.example', password: PASSWORD, name: 'New' });
    const user = (await signUp('plain@mail.test')).client;
    await expectCode(user.domains.add.mutate({ domain: 'third.example' }), 'FORBIDDEN');
    await expectCode(user.domains.list.query(), 'FORBIDDEN');
  });
});

describe('login limits', () => {
  const batchLogin = async (url: string, attempts: { email: string; password: string }[]): Promise<string[]> => {
    const names = attempts.map(() => 'auth.login').join(',');
    const body = Object.fromEntries(attempts.map((a, i) => [String(i), a]));
    const res = await fetch(`${url}/trpc/${names}?batch=1`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const answers = (await res.json()) as { result?: unknown; error?: { data: { code: string } } }[];
    return answers.map((a) => (a.error ? a.error.data.code : 'OK'));
  };

  test('attempts made at once are counted before their passwords are checked: a batch cannot try more than the limit', async () => {
    const limited = await startTestServer({ RATE_LIMIT_LOOPBACK: 'true', LOGIN_MAX_FAILURES: '3' });
    try {
      const url = `http://127.0.0.1:${limited.app.http.port}`;
      await createClient(url).auth.register.mutate({ email: 'hank@mail.test', password: PASSWORD, name: 'Hank' });
      const guesses = Array.from({ length: 30 }, (_, i) => ({ email: 'hank@mail.test', password: `guess number ${i}` }));
      const codes = await batchLogin(url, [...guesses, { email: 'hank@mail.test', password: PASSWORD }]);
      assert.equal(codes.filter((c) => c === 'UNAUTHORIZED').length, 3, codes.join(' '));
      assert.equal(codes.filter((c) => c === 'TOO_MANY_REQUESTS').length, 28, codes.join(' '));
      assert.equal(codes.at(-1), 'TOO_MANY_REQUESTS', 'the right password, tried past the limit, does not get in');
      await expectCode(createClient(url).auth.login.mutate({ email: 'hank@mail.test', password: PASSWORD }), 'TOO_MANY_REQUESTS');
    } finally {
      await limited.stop();
    }
  });

  test('guessing the current password in changePassword counts like failed logins: past the limit even the right one is refused', async () => {
    const limited = await startTestServer({ RATE_LIMIT_LOOPBACK: 'true', LOGIN_MAX_FAILURES: '3' });
    try {
      const url = `http://127.0.0.1:${limited.app.http.port}`;
      await createClient(url).auth.register.mutate({ email: 'quin@mail.test', password: PASSWORD, name: 'Quin' });
      const quin = createClient(url, { token: (await createClient(url).auth.login.mutate({ email: 'quin@mail.test', password: PASSWORD })).token });
      for (let i = 0; i < 3; i++) await expectCode(quin.auth.changePassword.mutate({ currentPassword: `guess ${i}`, newPassword: 'a stolen session' }), 'BAD_REQUEST');
      await expectCode(quin.auth.changePassword.mutate({ currentPassword: PASSWORD, newPassword: 'a stolen session' }), 'TOO_MANY_REQUESTS');
      assert.equal((await quin.auth.me.query()).email, 'quin@mail.test', 'the session itself goes on');
    } finally {
      await limited.stop();
    }
  });

  test("a client's own successful login does not wipe the failures it made on other accounts", async () => {
    const limited = await startTestServer({ RATE_LIMIT_LOOPBACK: 'true', LOGIN_MAX_FAILURES: '3' });
    try {
      const url = `http://127.0.0.1:${limited.app.http.port}`;
      const anon = createClient(url);
      for (const name of ['ida', 'jon', 'kim', 'lou']) await anon.auth.register.mutate({ email: `${name}@mail.test`, password: PASSWORD, name });
      await expectCode(anon.auth.login.mutate({ email: 'ida@mail.test', password: 'wrong password' }), 'UNAUTHORIZED');
      await expectCode(anon.auth.login.mutate({ email: 'jon@mail.test', password: 'wrong password' }), 'UNAUTHORIZED');
      await anon.auth.login.mutate({ email: 'lou@mail.test', password: PASSWORD });
      await expectCode(anon.auth.login.mutate({ email: 'kim@mail.test', password: 'wrong password' }), 'UNAUTHORIZED');
      await expectCode(anon.auth.login.mutate({ email: 'lou@mail.test', password: PASSWORD }), 'TOO_MANY_REQUESTS');
    } finally {
      await limited.stop();
    }
  });

  test('X-Mailtrail-Position: queries wait for it on MongoDB; on the embedded store a position past the head is no reason to wait', async () => {
    const waitedFor = async (kind: 'sqlite' | 'mongo', seenPosition: number): Promise<number[]> => {
      const targets: number[] = [];
      const ctx = {
        seenPosition,
        deps: {
          store: { kind, events: { head: async () => 40 } },
          projectors: new Map([['mails', { waitFor: async (target: number) => void targets.push(target) }]]),
          settings: { readYourWritesMs: 2000 },
        },
      } as unknown as Context;
      await awaitViews(ctx, ['mails']);
      return targets;
    };
    assert.deepEqual(await waitedFor('sqlite', 1_000_000), [40], 'the head, not a made-up position');
    assert.deepEqual(await waitedFor('sqlite', 12), [40]);
    assert.deepEqual(await waitedFor('mongo', 45), [45], 'a position written elsewhere may be just past the visible head');
  });

  test('X-Real-IP names the client only when it comes from the proxy on this host', () => {
    assert.equal(clientAddress('127.0.0.1', '203.0.113.7', true), '203.0.113.7');
    assert.equal(clientAddress('::1', '203.0.113.7', true), '203.0.113.7');
    assert.equal(clientAddress('198.51.100.4', '127.0.0.1', true), '198.51.100.4', 'a direct client cannot claim to be loopback');
    assert.equal(clientAddress('127.0.0.1', '203.0.113.7', false), '127.0.0.1');
    assert.equal(clientAddress('127.0.0.1', ['a', 'b'], true), '127.0.0.1');
  });
});
