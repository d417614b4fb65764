/**
 * Local copies of a send from the API are never lost: MailSent names the local recipients, and
 * the local delivery follower stores any copy the send itself did not (a crash between its two
 * appends), exactly once.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { createClient, type MailtrailClient } from '../src/api/client.js';
import { startApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { StoredEvent } from '../src/events/envelope.js';
import { createLogger } from '../src/log.js';
import type { Store } from '../src/store/port.js';
import { addUser, allEvents, DOMAIN, fakeResolver, PASSWORD, startTestServer, tempDir, testEnv, type TestServer } from './support/smtp.js';

let server: TestServer;
let eve: MailtrailClient;
let fred: MailtrailClient;

const SECRET = 'a-test-secret-of-some-length-0123';

async function login(email: string, app: App = server.app): Promise<MailtrailClient> {
  const base = `http://127.0.0.1:${app.http.port}`;
  const { token } = await createClient(base).auth.login.mutate({ email, password: PASSWORD });
  return createClient(base, { token });
}

async function inboxSubjects(client: MailtrailClient, timeoutMs: number, want: string): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const subjects = (await client.mails.list.query({ folder: 'inbox', limit: 100 })).items.map((m) => m.subject);
    if (subjects.includes(want) || Date.now() > deadline) return subjects;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const copiesOf = (events: StoredEvent[], messageId: string): StoredEvent[] =>
  events.filter((e) => e.type === 'MailReceived' && e.data.message.messageId === `<${messageId}>`);

before(async () => {
  server = await startTestServer({ JWT_SECRET: SECRET });
  await addUser(server, `eve@${DOMAIN}`);
  await addUser(server, `fred@${DOMAIN}`);
  eve = await login(`eve@${DOMAIN}`);
  fred = await login(`fred@${DOMAIN}`);
});
after(async () => server?.stop());

/** Sends a draft from `sender` whose own appends of the local copies never reach the store, as if the process died after MailSent. */
async function sendCutShort(store: Store, sender: MailtrailClient, to: string[], subject: string): Promise<void> {
  const append = store.events.append.bind(store.events);
  store.events.append = async (streamId, events, opts) => {
    if (events.some((e) => e.type === 'MailReceived') && opts.meta.actor.kind === 'user') throw new Error('crashed before the copies');
    return append(streamId, events, opts);
  };
  try {
    const { id } = await sender.mails.createDraft.mutate({ to, subject, text: 'still arrives' });
    await assert.rejects(sender.mails.send.mutate({ id }), 'the send itself does not finish');
  } finally {
    store.events.append = append;
  }
}

test('a send whose local copies were not appended: the follower stores them, once', async () => {
  await sendCutShort(server.store, eve, [`fred@${DOMAIN}`, 'someone@remote.example'], 'cut short');
  assert.ok((await inboxSubjects(fred, 10_000, 'cut short')).includes('cut short'), 'fred gets the copy');
  const sent = (await eve.mails.list.query({ folder: 'sent' })).items.find((m) => m.subject === 'cut short')!;
  assert.ok(sent, 'the mail is in the sender’s sent folder');
  const events = await allEvents(server.store);
  const copies = copiesOf(events, sent.messageId!);
  assert.equal(copies.length, 1);
  const mailSent = events.find((e) => e.type === 'MailSent' && e.data.mailId === sent.id)!;
  assert.equal(copies[0]!.meta.causationId, mailSent.eventId, 'the copy names the MailSent it comes from');
  assert.deepEqual(copies[0]!.type === 'MailReceived' && copies[0]!.data.envelope.rcptTo, [`fred@${DOMAIN}`]);
  assert.equal(server.app.localDelivery.recovered, 1);
});

test('a send that finished: the follower goes over it and adds nothing', async () => {
  const before = server.app.localDelivery.recovered;
  const { id } = await eve.mails.createDraft.mutate({ to: [`fred@${DOMAIN}`], bcc: [`eve@${DOMAIN}`], subject: 'whole', text: 'once' });
  const { messageId, position } = await eve.mails.send.mutate({ id });
  // Wait until the follower has gone past the send and whatever it might have appended.
  const deadline = Date.now() + 10_000;
  while (server.app.localDelivery.position < position && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(server.app.localDelivery.position >= position, 'the follower went over the send');
  const copies = copiesOf(await allEvents(server.store), messageId);
  assert.deepEqual(copies.map((e) => e.type === 'MailReceived' && e.data.envelope.rcptTo).sort(), [[`eve@${DOMAIN}`], [`fred@${DOMAIN}`]]);
  assert.equal(server.app.localDelivery.recovered, before);
  assert.deepEqual((await fred.mails.list.query({ folder: 'inbox' })).items.filter((m) => m.subject === 'whole').length, 1);
});

test('after a restart the follower resumes from its checkpoint; past the log\'s head (a lost tail) it goes over the log again', async () => {
  const dataDir = tempDir('local-delivery');
  const start = async (): Promise<App> => {
    const config = loadConfig(testEnv(dataDir, { JWT_SECRET: SECRET }));
    return startApp(config, createLogger(config), { resolver: fakeResolver() });
  };
  const inbox = async (client: MailtrailClient, subject: string): Promise<number> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const n = (await client.mails.list.query({ folder: 'inbox' })).items.filter((m) => m.subject === subject).length;
      if (n > 0 || Date.now() > deadline) return n;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  let app = await start();
  try {
    for (const email of [`gus@${DOMAIN}`, `hal@${DOMAIN}`]) await createClient(`http://127.0.0.1:${app.http.port}`).auth.register.mutate({ email, password: PASSWORD, name: email });
    // The process dies after a send's MailSent, before the follower got to it.
    await app.localDelivery.stop();
    await sendCutShort(app.store, await login(`gus@${DOMAIN}`, app), [`hal@${DOMAIN}`], 'before the restart');
    await app.stop();
    app = await start();
    assert.equal(await inbox(await login(`hal@${DOMAIN}`, app), 'before the restart'), 1, 'stored after the restart');

    // Again, and then the log loses its tail under the follower's checkpoint: it stands past the head.
    await app.localDelivery.stop();
    await sendCutShort(app.store, await login(`gus@${DOMAIN}`, app), [`hal@${DOMAIN}`], 'under a lost tail');
    const head = await app.store.events.head();
    const lease = (await app.store.views.acquireLease('local-delivery', 'the-dead-process', 60_000))!;
    await app.store.views.commit({ view: 'local_delivery', docs: [], checkpoint: { name: 'local-delivery', position: head + 1000 }, lease });
    await app.store.views.releaseLease(lease);
    await app.stop();
    app = await start();
    assert.equal(await inbox(await login(`hal@${DOMAIN}`, app), 'under a lost tail'), 1, 'stored: the follower went over the log again');
    assert.equal(await inbox(await login(`hal@${DOMAIN}`, app), 'before the restart'), 1, 'and nothing twice');
    assert.ok((await app.store.views.checkpoint('local-delivery')) <= (await app.store.events.head()));
  } finally {
    await app.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
