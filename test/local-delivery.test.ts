/**
 * Local copies of a send from the API are never lost: MailSent names the local recipients, and
 * the local delivery follower stores any copy the send itself did not (a crash between its two
 * appends), exactly once.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createClient, type MailtrailClient } from '../src/api/client.js';
import type { StoredEvent } from '../src/events/envelope.js';
import { addUser, allEvents, DOMAIN, PASSWORD, startTestServer, type TestServer } from './support/smtp.js';

let server: TestServer;
let eve: MailtrailClient;
let fred: MailtrailClient;

async function login(email: string): Promise<MailtrailClient> {
  const base = `http://127.0.0.1:${server.app.http.port}`;
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
  server = await startTestServer({ JWT_SECRET: 'a-test-secret-of-some-length-0123' });
  await addUser(server, `eve@${DOMAIN}`);
  await addUser(server, `fred@${DOMAIN}`);
  eve = await login(`eve@${DOMAIN}`);
  fred = await login(`fred@${DOMAIN}`);
});
after(async () => server?.stop());

test('a send whose local copies were not appended: the follower stores them, once', async () => {
  // The process "dies" after MailSent: the send's own appends of the copies never reach the store.
  const append = server.store.events.append.bind(server.store.events);
  server.store.events.append = async (streamId, events, opts) => {
    if (events.some((e) => e.type === 'MailReceived') && opts.meta.actor.kind === 'user') throw new Error('crashed before the copies');
    return append(streamId, events, opts);
  };
  let sendFailed = false;
  try {
    const { id } = await eve.mails.createDraft.mutate({ to: [`fred@${DOMAIN}`, 'someone@remote.example'], subject: 'cut short', text: 'still arrives' });
    await eve.mails.send.mutate({ id }).catch(() => {
      sendFailed = true;
    });
  } finally {
    server.store.events.append = append;
  }
  assert.ok(sendFailed, 'the send itself did not finish');
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
