/**
 * The whole server on MongoDB (mongo-java-server from the harness, or MONGODB_URI): mail received
 * over SMTP reaches the views that the projector thread builds on its own connection, the API
 * lists it (reading its own writes), and a message sent through SMTP submission is queued for the
 * relay. The store contract covers the adapter; this covers the server wired to it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { OutboxDoc } from '../projections/outbox.js';
import { createClient } from '../src/api/client.js';
import { startMongo, uniqueDbName, type MongoHandle } from './support/mongo-java-server.js';
import { addUser, DOMAIN, PASSWORD, startTestServer, transport, waitForViews, type TestServer } from './support/smtp.js';

let mongo: MongoHandle;
let server: TestServer;

before(async () => {
  mongo = await startMongo();
  server = await startTestServer({ MONGODB_URI: mongo.uri, MONGODB_DB: uniqueDbName('server'), JWT_SECRET: 'a-test-secret-of-some-length-0123', SMTP_ALLOW_INSECURE_AUTH: 'true' });
});
after(async () => {
  await server?.stop();
  await mongo?.stop();
});

test('on MongoDB: received mail is projected by the projector thread and listed by the API', async () => {
  assert.equal(server.store.kind, 'mongo');
  await addUser(server, `bob@${DOMAIN}`);
  await transport(server.port, { ignoreTLS: true }).sendMail({ from: 'alice@example.org', to: `bob@${DOMAIN}`, subject: 'over mongo', text: 'hello' });
  const base = `http://127.0.0.1:${server.app.http.port}`;
  const { token } = await createClient(base).auth.login.mutate({ email: `bob@${DOMAIN}`, password: PASSWORD });
  const bob = createClient(base, { token });
  const page = await bob.mails.list.query({ folder: 'inbox' });
  assert.deepEqual(page.items.map((m) => m.subject), ['over mongo']);
  const mailbox = (await bob.mailboxes.list.query())[0]!;
  assert.equal(mailbox.counts.inbox, 1);
  for (const p of server.app.projectors.values()) assert.equal(p.status, 'running', `${p.name} runs in the thread`);
});

test('on MongoDB: an authenticated submission to an outside address is queued for the relay', async () => {
  await addUser(server, `carol@${DOMAIN}`);
  await transport(server.port, { ignoreTLS: true, user: `carol@${DOMAIN}` }).sendMail({ from: `carol@${DOMAIN}`, to: 'dave@elsewhere.example', subject: 'out via mongo', text: 'hi' });
  await waitForViews(server);
  const outbox = (await server.store.views.all('outbox')) as unknown as OutboxDoc[];
  assert.ok(outbox.some((o) => o.recipients.some((r) => r.address === 'dave@elsewhere.example' && r.state === 'pending')));
});

test('on MongoDB: a send cut short after MailSent still gives the local recipient its copy, once', async () => {
  await addUser(server, `erin@${DOMAIN}`);
  await addUser(server, `fay@${DOMAIN}`);
  const base = `http://127.0.0.1:${server.app.http.port}`;
  const login = async (email: string) => createClient(base, { token: (await createClient(base).auth.login.mutate({ email, password: PASSWORD })).token });
  const erin = await login(`erin@${DOMAIN}`);
  const fay = await login(`fay@${DOMAIN}`);
  const { id } = await erin.mails.createDraft.mutate({ to: [`fay@${DOMAIN}`], subject: 'cut short on mongo', text: 'hi' });
  // The copies the send would append after MailSent never reach the store (an error, or as if it had died there).
  const append = server.store.events.append.bind(server.store.events);
  server.store.events.append = async (streamId, events, opts) => {
    if (events.some((e) => e.type === 'MailReceived') && opts.meta.actor.kind === 'user') throw new Error('crashed before the copies');
    return append(streamId, events, opts);
  };
  try {
    assert.equal((await erin.mails.send.mutate({ id })).status, 'sent', 'the mail was sent: the send says so');
  } finally {
    server.store.events.append = append;
  }
  const deadline = Date.now() + 15_000;
  let inbox: string[] = [];
  while (Date.now() < deadline) {
    inbox = (await fay.mails.list.query({ folder: 'inbox' })).items.map((m) => m.subject);
    if (inbox.length > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(inbox, ['cut short on mongo']);
});
