/**
 * Aliases and recipient delimiters, through the real interfaces: an admin adds and removes aliases
 * over the API; mail to an alias, or to an address with a +tag, reaches the mailbox over SMTP and
 * from the API; the owner may send as the alias, nobody else may.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { recipientMailbox } from '../src/accounts/aliases.js';
import { createClient, type MailtrailClient } from '../src/api/client.js';
import { expectCode } from './support/api.js';
import { DOMAIN, PASSWORD, rawMessage, receivedWithSubject, sent, SmtpTalk, startTestServer, type TestServer } from './support/smtp.js';

const SECRET = 'aliases-test-secret-that-is-long-enough-0123456789';
let server: TestServer;
let base = '';
let boss: MailtrailClient;
let ann: MailtrailClient;
let bob: MailtrailClient;
let annMailbox = '';

async function signUp(email: string): Promise<MailtrailClient> {
  await createClient(base).auth.register.mutate({ email, password: PASSWORD, name: email.split('@')[0]! });
  return createClient(base, { token: (await createClient(base).auth.login.mutate({ email, password: PASSWORD })).token });
}

/** An SMTP session after EHLO; `as`: authenticated as that user (over a plain connection: SMTP_ALLOW_INSECURE_AUTH). */
async function session(as?: string): Promise<SmtpTalk> {
  const { talk } = await SmtpTalk.open(server.port);
  assert.equal((await talk.cmd('EHLO client.example.org')).code, 250);
  if (as) assert.equal((await talk.cmd(`AUTH PLAIN ${Buffer.from(`\0${as}\0${PASSWORD}`).toString('base64')}`)).code, 235);
  return talk;
}

async function rcptCode(rcpt: string): Promise<number> {
  const talk = await session();
  assert.equal((await talk.cmd('MAIL FROM:<someone@example.org>')).code, 250);
  const r = await talk.cmd(`RCPT TO:<${rcpt}>`);
  await talk.quit();
  return r.code;
}

before(async () => {
  server = await startTestServer({ JWT_SECRET: SECRET, ADMIN_EMAILS: `boss@${DOMAIN}`, SMTP_ALLOW_INSECURE_AUTH: 'true' });
  base = `http://127.0.0.1:${server.app.http.port}`;
  boss = await signUp(`boss@${DOMAIN}`);
  ann = await signUp(`ann@${DOMAIN}`);
  bob = await signUp(`bob@${DOMAIN}`);
  annMailbox = (await ann.mailboxes.list.query())[0]!.id;
});
after(async () => server?.stop());

test('an admin adds an alias; it must be new, in a local domain, for an existing mailbox; others may not', async () => {
  const added = await boss.aliases.add.mutate({ address: `Info@${DOMAIN}`, mailbox: `ANN@${DOMAIN}` });
  assert.deepEqual({ address: added.address, mailbox: added.mailbox }, { address: `Info@${DOMAIN}`, mailbox: `ann@${DOMAIN}` });
  await expectCode(boss.aliases.add.mutate({ address: `info@${DOMAIN}`, mailbox: `bob@${DOMAIN}` }), 'CONFLICT', /already an alias of another mailbox/);
  await expectCode(boss.aliases.add.mutate({ address: `bob@${DOMAIN}`, mailbox: `ann@${DOMAIN}` }), 'CONFLICT', /is a mailbox/);
  await expectCode(boss.aliases.add.mutate({ address: 'info@elsewhere.example', mailbox: `ann@${DOMAIN}` }), 'BAD_REQUEST', /not a local domain/);
  await expectCode(boss.aliases.add.mutate({ address: `sales@${DOMAIN}`, mailbox: `nobody@${DOMAIN}` }), 'NOT_FOUND', /no mailbox nobody@/);
  await expectCode(bob.aliases.add.mutate({ address: `bob2@${DOMAIN}`, mailbox: `bob@${DOMAIN}` }), 'FORBIDDEN');
  await expectCode(createClient(base).auth.register.mutate({ email: `info@${DOMAIN}`, password: PASSWORD, name: 'taken' }), 'CONFLICT');
  assert.deepEqual((await boss.aliases.list.query({ scope: 'all' })).map((a) => [a.address, a.mailbox]), [[`Info@${DOMAIN}`, `ann@${DOMAIN}`]]);
  assert.deepEqual(await boss.aliases.list.query(), [], 'an admin’s own list is his own mailbox’s');
  assert.deepEqual((await ann.aliases.list.query()).map((a) => a.address), [`Info@${DOMAIN}`], 'the owner sees her aliases');
  assert.deepEqual(await bob.aliases.list.query(), [], 'others do not');
  await expectCode(bob.aliases.list.query({ scope: 'all' }), 'FORBIDDEN');
});

test('mail to the alias and to +tags reaches the mailbox over SMTP, once per mailbox, the copy naming the address it was sent to; an unknown +tag base is 550 5.1.1', async () => {
  const talk = await session();
  assert.equal((await talk.cmd('MAIL FROM:<carol@example.org>')).code, 250);
  for (const rcpt of [`info@${DOMAIN}`, `ann+news@${DOMAIN}`, `INFO+x@${DOMAIN}`]) assert.equal((await talk.cmd(`RCPT TO:<${rcpt}>`)).code, 250, rcpt);
  const unknown = await talk.cmd(`RCPT TO:<nobody+x@${DOMAIN}>`);
  assert.equal(unknown.code, 550);
  assert.match(unknown.text, /^5\.1\.1 /);
  assert.equal((await talk.data(rawMessage({ from: 'carol@example.org', to: `info@${DOMAIN}`, subject: 'to the alias' }))).code, 250);
  await talk.quit();
  const copies = await receivedWithSubject(server.store, 'to the alias');
  assert.deepEqual(copies.map((e) => [e.data.mailboxId, e.data.envelope.rcptTo]), [[annMailbox, [`info@${DOMAIN}`]]], 'three addresses of one mailbox: one copy there, naming the first');
  assert.equal((await ann.mails.list.query({ folder: 'inbox' })).items.filter((m) => m.subject === 'to the alias').length, 1);

  const tagged = await session();
  assert.equal((await tagged.cmd('MAIL FROM:<carol@example.org>')).code, 250);
  assert.equal((await tagged.cmd(`RCPT TO:<ann+news@${DOMAIN}>`)).code, 250);
  assert.equal((await tagged.data(rawMessage({ from: 'carol@example.org', to: `ann+news@${DOMAIN}`, subject: 'to a tag' }))).code, 250);
  await tagged.quit();
  const [copy] = await receivedWithSubject(server.store, 'to a tag');
  assert.deepEqual([copy?.data.mailboxId, copy?.data.envelope.rcptTo], [annMailbox, [`ann+news@${DOMAIN}`]]);
});

test('the owner sends as the alias (MAIL FROM and From); another user may not', async () => {
  const talk = await session(`ann@${DOMAIN}`);
  assert.equal((await talk.cmd(`MAIL FROM:<info@${DOMAIN}>`)).code, 250);
  assert.equal((await talk.cmd('RCPT TO:<dave@example.net>')).code, 250);
  assert.equal((await talk.data(rawMessage({ from: `Info <info@${DOMAIN}>`, to: 'dave@example.net', subject: 'from the alias' }))).code, 250);
  await talk.quit();
  const [mailSent] = (await sent(server.store)).filter((e) => e.data.message.subject === 'from the alias');
  assert.equal(mailSent?.data.mailboxId, annMailbox);
  assert.equal(mailSent?.data.envelope.mailFrom, `info@${DOMAIN}`);

  const other = await session(`bob@${DOMAIN}`);
  const refused = await other.cmd(`MAIL FROM:<info@${DOMAIN}>`);
  assert.equal(refused.code, 553);
  assert.match(refused.text, /^5\.7\.1 /);
  assert.equal((await other.cmd(`MAIL FROM:<bob@${DOMAIN}>`)).code, 250);
  assert.equal((await other.cmd('RCPT TO:<dave@example.net>')).code, 250);
  const data = await other.data(rawMessage({ from: `info@${DOMAIN}`, to: 'dave@example.net', subject: 'not mine' }));
  assert.equal(data.code, 550, 'a From of another user’s alias');
  await other.quit();
});

test('a send from the API to the alias lands in the mailbox; without a delimiter a +tag is no address', async () => {
  const { id } = await bob.mails.createDraft.mutate({ to: [`info+api@${DOMAIN}`], subject: 'api to alias', text: 'hi' });
  assert.equal((await bob.mails.send.mutate({ id })).status, 'sent');
  const [copy] = await receivedWithSubject(server.store, 'api to alias');
  assert.equal(copy?.data.mailboxId, annMailbox);
  assert.equal((await recipientMailbox(server.store, `ann+x@${DOMAIN}`, ''))?.id, undefined, 'delimiter off');
  assert.equal((await recipientMailbox(server.store, `ann-x@${DOMAIN}`, '-'))?.id, annMailbox, 'another delimiter');
});

test('a draft may go out from an alias of its mailbox, and only from one; an alias removed since is refused at send', async () => {
  await expectCode(bob.mails.createDraft.mutate({ from: `info@${DOMAIN}`, to: ['x@example.net'], subject: 'not mine', text: 'x' }), 'BAD_REQUEST', /^from: info@mail\.test is not an address of yours/);
  const { id } = await ann.mails.createDraft.mutate({ from: `info@${DOMAIN}`, to: ['x@example.net'], subject: 'from info', text: 'x' });
  assert.deepEqual((await ann.mails.get.query({ id })).from, [{ name: '', address: `info@${DOMAIN}` }], 'the draft shows it');
  await ann.mails.send.mutate({ id });
  const [mailSent] = (await sent(server.store)).filter((e) => e.data.message.subject === 'from info');
  assert.equal(mailSent?.data.envelope.mailFrom, `info@${DOMAIN}`);
  assert.deepEqual(mailSent?.data.message.from.map((a) => a.address), [`info@${DOMAIN}`]);
  assert.match(mailSent!.data.messageId, /@mail\.test>$/);

  // The same rule as SMTP's: a +tag of one's own address or alias is one's own.
  assert.ok(await ann.mails.createDraft.mutate({ from: `info+news@${DOMAIN}`, to: ['x@example.net'], subject: 'tagged', text: 'x' }));
  const talk = await session(`ann@${DOMAIN}`);
  assert.equal((await talk.cmd(`MAIL FROM:<ann+x@${DOMAIN}>`)).code, 250);
  await talk.quit();

  await boss.aliases.add.mutate({ address: `temp@${DOMAIN}`, mailbox: `ann@${DOMAIN}` });
  const later = await ann.mails.createDraft.mutate({ from: `temp@${DOMAIN}`, to: ['x@example.net'], subject: 'too late', text: 'x' });
  await boss.aliases.remove.mutate({ address: `temp@${DOMAIN}` });
  await expectCode(ann.mails.send.mutate({ id: later.id }), 'BAD_REQUEST', /^from: temp@mail\.test is no longer an address of yours/);
});

test('registration: a removed alias\'s address is free again; an address with the delimiter in it is not taken (it is someone\'s +tag)', async () => {
  await signUp(`temp@${DOMAIN}`);
  assert.deepEqual((await server.store.events.readStream(`account-temp@${DOMAIN}`)).map((e) => e.type), ['AliasAdded', 'AliasRemoved', 'UserRegistered', 'MailboxCreated']);
  await expectCode(createClient(base).auth.register.mutate({ email: `ann+invoices@${DOMAIN}`, password: PASSWORD, name: 'mallory' }), 'BAD_REQUEST', /may not contain "\+"/);
  await expectCode(createClient(base).auth.register.mutate({ email: `postmaster+x@${DOMAIN}`, password: PASSWORD, name: 'mallory' }), 'BAD_REQUEST');
});

test('a removed alias is refused again (550 5.1.1) and may be added anew, to another mailbox', async () => {
  await expectCode(boss.aliases.remove.mutate({ address: `nothing@${DOMAIN}` }), 'NOT_FOUND', /not an alias/);
  assert.equal(await rcptCode(`info@${DOMAIN}`), 250, 'looked up just before the removal');
  await boss.aliases.remove.mutate({ address: `INFO@${DOMAIN}` });
  assert.deepEqual(await boss.aliases.list.query({ scope: 'all' }), [], 'the views have the removal');
  assert.equal(await rcptCode(`info@${DOMAIN}`), 550, 'refused at once: no lookup cache keeps an alias');
  await boss.aliases.add.mutate({ address: `info@${DOMAIN}`, mailbox: `bob@${DOMAIN}` });
  assert.deepEqual((await bob.aliases.list.query()).map((a) => a.address), [`info@${DOMAIN}`]);
  const history = (await server.store.events.readStream(`account-info@${DOMAIN}`)).map((e) => e.type);
  assert.deepEqual(history, ['AliasAdded', 'AliasRemoved', 'AliasAdded'], 'the address keeps its history');
});
