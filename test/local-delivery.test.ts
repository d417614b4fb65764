/**
 * Local copies of a send from the API are never lost: MailSent names the local recipients, and
 * the local delivery follower (in the projectors' thread) stores any copy the send itself did not
 * (a crash between its two appends), exactly once — also after a restart, and after the log lost
 * its tail under the follower's checkpoint.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { findMailboxByAddress } from '../src/accounts/accounts.js';
import { createClient, type MailtrailClient } from '../src/api/client.js';
import { startApp, type App } from '../src/app.js';
import { sendDraft } from '../src/compose/send.js';
import { loadConfig } from '../src/config.js';
import { systemMeta, type StoredEvent } from '../src/events/envelope.js';
import { createLogger } from '../src/log.js';
import { LOCAL_DELIVERY } from '../src/mail/local-delivery.js';
import { noticeMailId } from '../src/relay/dsn.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/port.js';
import { expectCode } from './support/api.js';
import { addUser, allEvents, DOMAIN, fakeResolver, PASSWORD, startTestServer, tempDir, testEnv, type TestServer } from './support/smtp.js';

const SECRET = 'a-test-secret-of-some-length-0123';
let server: TestServer;
let eve: MailtrailClient;
let fred: MailtrailClient;

const base = (app: App): string => `http://127.0.0.1:${app.http.port}`;

async function login(email: string, app: App = server.app): Promise<MailtrailClient> {
  const { token } = await createClient(base(app)).auth.login.mutate({ email, password: PASSWORD });
  return createClient(base(app), { token });
}

/** How many mails with `subject` `client` has in its inbox, once there is one or after 10 s. */
async function inboxCount(client: MailtrailClient, subject: string): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const n = (await client.mails.list.query({ folder: 'inbox', limit: 100 })).items.filter((m) => m.subject === subject).length;
    if (n > 0 || Date.now() > deadline) return n;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The follower's position as /health reports it. */
async function followerPosition(app: App): Promise<number> {
  const body = (await (await fetch(`${base(app)}/health`)).json()) as { projectors: Record<string, { position: number; status: string }> };
  return body.projectors[LOCAL_DELIVERY]!.position;
}

/** Runs `fn` while the store refuses every copy a user's send appends: an error right after MailSent, or a crash there. */
async function copiesLost<T>(store: Store, fn: () => Promise<T>): Promise<T> {
  const append = store.events.append.bind(store.events);
  store.events.append = async (streamId, events, opts) => {
    if (events.some((e) => e.type === 'MailReceived') && opts.meta.actor.kind === 'user') throw new Error('crashed before the copies');
    return append(streamId, events, opts);
  };
  try {
    return await fn();
  } finally {
    store.events.append = append;
  }
}

const copiesOf = (events: StoredEvent[], messageId: string): StoredEvent[] =>
  events.filter((e) => e.type === 'MailReceived' && e.data.message.messageId === `<${messageId}>`);
const mailSentOf = (events: StoredEvent[], mailId: string): StoredEvent =>
  events.find((e) => e.type === 'MailSent' && e.data.mailId === mailId)!;

before(async () => {
  server = await startTestServer({ JWT_SECRET: SECRET });
  await addUser(server, `eve@${DOMAIN}`);
  await addUser(server, `fred@${DOMAIN}`);
  eve = await login(`eve@${DOMAIN}`);
  fred = await login(`fred@${DOMAIN}`);
});
after(async () => server?.stop());

test('a send whose local copies were not appended: the send still answers that it was sent, and the follower stores them, once', async () => {
  const { id } = await eve.mails.createDraft.mutate({ to: [`fred@${DOMAIN}`, 'someone@remote.example'], subject: 'cut short', text: 'still arrives' });
  const answer = await copiesLost(server.store, () => eve.mails.send.mutate({ id }));
  assert.equal(answer.status, 'queued', 'MailSent is durable: the sender is told the mail went out, not an internal error');
  await expectCode(eve.mails.send.mutate({ id }), 'CONFLICT', /already sent/);
  assert.equal(await inboxCount(fred, 'cut short'), 1, 'fred gets the copy');
  const sent = (await eve.mails.list.query({ folder: 'sent' })).items.find((m) => m.subject === 'cut short');
  assert.ok(sent, 'the mail is in the sender’s sent folder');
  const events = await allEvents(server.store);
  const copies = copiesOf(events, sent.messageId!);
  assert.equal(copies.length, 1);
  assert.equal(copies[0]!.meta.causationId, mailSentOf(events, id).eventId, 'stored by the follower, naming the MailSent it comes from');
  assert.deepEqual(copies[0]!.type === 'MailReceived' && copies[0]!.data.envelope.rcptTo, [`fred@${DOMAIN}`]);
});

test('a send with a delivery receipt whose copies were not appended: the follower stores the copies and then the receipt, once', async () => {
  const { id } = await eve.mails.createDraft.mutate({ to: [`fred@${DOMAIN}`], subject: 'receipt cut short', text: 'still reported' });
  await copiesLost(server.store, () => eve.mails.send.mutate({ id, deliveryReceipt: true }));
  assert.equal(await inboxCount(fred, 'receipt cut short'), 1, 'fred gets the copy');
  assert.equal(await inboxCount(eve, 'Successful Mail Delivery Report'), 1, 'eve gets the receipt the send could not store');
  const notice = (await allEvents(server.store)).find((e) => e.type === 'MailReceived' && e.data.mailId === noticeMailId(id, 'delivered', 0));
  assert.ok(notice, 'under the sent mail’s notice id: a retry or the send itself lands on the same one');
});

test('a send that finished: the follower goes over it and adds nothing', async () => {
  const { id } = await eve.mails.createDraft.mutate({ to: [`fred@${DOMAIN}`], bcc: [`eve@${DOMAIN}`], subject: 'whole', text: 'once' });
  const { messageId } = await eve.mails.send.mutate({ id });
  const head = await server.store.events.head();
  const deadline = Date.now() + 10_000;
  while ((await followerPosition(server.app)) < head && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok((await followerPosition(server.app)) >= head, 'the follower went over the send');
  const events = await allEvents(server.store);
  const copies = copiesOf(events, messageId);
  assert.deepEqual(copies.map((e) => e.type === 'MailReceived' && e.data.envelope.rcptTo).sort(), [[`eve@${DOMAIN}`], [`fred@${DOMAIN}`]]);
  assert.ok(copies.every((c) => c.meta.causationId !== mailSentOf(events, id).eventId), 'both stored by the send itself');
  assert.equal((await fred.mails.list.query({ folder: 'inbox' })).items.filter((m) => m.subject === 'whole').length, 1);
});

test('a send cut short while the server was down gets its copies after the restart; a checkpoint past the log\'s head (a lost tail) is gone over again', async () => {
  const dataDir = tempDir('local-delivery');
  const config = loadConfig(testEnv(dataDir, { JWT_SECRET: SECRET }));
  const start = (): Promise<App> => startApp(config, createLogger(config), { resolver: fakeResolver() });
  /** With the server down: gus sends a draft to hal, and the process "dies" after MailSent. */
  const sendCutShortOffline = async (draftId: string, after?: (store: Store) => Promise<void>): Promise<void> => {
    const store = await openStore(config);
    try {
      const mailbox = (await findMailboxByAddress(store, `gus@${DOMAIN}`))!;
      const user = { id: mailbox.userId, email: `gus@${DOMAIN}`, name: 'gus' };
      let leftOut: unknown = null;
      await copiesLost(store, () => sendDraft(store, { defaultDomain: DOMAIN, recipientDelimiter: '+' }, { mailId: draftId, user, mailbox, meta: { ...systemMeta(), actor: { kind: 'user', id: user.id } } }, (e) => (leftOut = e)));
      assert.match(String(leftOut), /crashed before the copies/, 'the send tells its caller the copies were left out');
      await after?.(store);
    } finally {
      await store.close();
    }
  };
  let app = await start();
  try {
    for (const email of [`gus@${DOMAIN}`, `hal@${DOMAIN}`]) await createClient(base(app)).auth.register.mutate({ email, password: PASSWORD, name: email });
    const gus = await login(`gus@${DOMAIN}`, app);
    const first = await gus.mails.createDraft.mutate({ to: [`hal@${DOMAIN}`], subject: 'before the restart', text: '1' });
    const second = await gus.mails.createDraft.mutate({ to: [`hal@${DOMAIN}`], subject: 'under a lost tail', text: '2' });
    await app.stop();

    await sendCutShortOffline(first.id);
    app = await start();
    assert.equal(await inboxCount(await login(`hal@${DOMAIN}`, app), 'before the restart'), 1, 'stored after the restart');
    await app.stop();

    // The log loses its tail under the follower: its checkpoint stands past the head.
    await sendCutShortOffline(second.id, async (store) => {
      const lease = (await store.views.acquireLease(LOCAL_DELIVERY, 'the-dead-process', 60_000))!;
      await store.views.commit({ view: 'local_delivery', docs: [], checkpoint: { name: LOCAL_DELIVERY, position: (await store.events.head()) + 1000 }, lease });
      await store.views.releaseLease(lease);
    });
    app = await start();
    const hal = await login(`hal@${DOMAIN}`, app);
    assert.equal(await inboxCount(hal, 'under a lost tail'), 1, 'stored: the follower went over the log again');
    assert.equal(await inboxCount(hal, 'before the restart'), 1, 'and nothing twice');
    assert.ok((await app.store.views.checkpoint(LOCAL_DELIVERY)) <= (await app.store.events.head()));
  } finally {
    await app.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
