/**
 * The relay projector end to end: a real store (SQLite, and MongoDB through mongo-java-server where
 * cheap), the real projectors, nodemailer over real sockets to a relay sink (a real smtp-server on
 * 127.0.0.1 that counts copies per Message-ID), and a crash test with a child process.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, afterEach, before, describe, test } from 'node:test';
import { authenticate } from 'mailauth';
import MailComposer from 'nodemailer/lib/mail-composer';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { mails, type MailDoc } from '../projections/mails.js';
import { mtaSts } from '../projections/mta-sts.js';
import { outbox, outboxFromStream, type OutboxDoc } from '../projections/outbox.js';
import { dkimKeygen } from '../scripts/dkim-keygen.js';
import type { EventOf, StoredEvent } from '../src/events/envelope.js';
import { ProjectionRunner } from '../src/projection/runner.js';
import { bounceMailId, composeNotice, noticeRequested, statusOf } from '../src/relay/dsn.js';
import { httpsPolicyFetcher, MtaStsPolicies, mxMatches, parsePolicy, policyId } from '../src/relay/mta-sts.js';
import { relayOptionsFromEnv, type RelayOptions } from '../src/relay/options.js';
import { backoffDelay, planAttempt, type RecipientOutcome } from '../src/relay/plan.js';
import { Relay, type RelayDeps } from '../src/relay/relay.js';
import { mxHosts, outcomesFromError, outcomesFromInfo, unreachable, type MxResolver } from '../src/relay/transport.js';
import type { Store } from '../src/store/port.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { backends } from './support/backends.js';
import { meta, registerAccount, summary, type Account } from './support/events.js';
import { ROOT } from './support/process.js';
import { startSink, type RelaySink, type SinkOptions } from './support/relay-sink.js';
import { selfSignedCertificate } from '../src/smtp/tls.js';

const logger = pino({ level: 'silent' });

async function waitUntil(what: string, check: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A message as `mails.send` builds it, appended as MailSent with its raw blob. */
async function sendMail(store: Store, from: Account, rcptTo: string[], subject = 'hello', messageId = `<${uuidv7()}@sender.test>`, requireTls = false, headers: Record<string, string> = {}): Promise<{ mailId: string; messageId: string; raw: Buffer }> {
  const raw = await new MailComposer({ from: from.address, to: rcptTo, subject, text: `${subject}\r\n.\r\n..dots\r\nbody`, messageId, date: new Date(), headers }).compile().build();
  const ref = await store.blobs.put(raw);
  const mailId = uuidv7();
  await store.events.append(
    `mail-${mailId}`,
    [
      {
        type: 'MailSent',
        data: {
          mailId,
          mailboxId: from.mailboxId,
          userId: from.userId,
          messageId,
          raw: ref,
          envelope: { mailFrom: from.address, rcptTo },
          message: summary(subject, { messageId, from: [{ name: '', address: from.address }], to: rcptTo.map((address) => ({ name: '', address })) }),
          bcc: [],
          wasDraft: false,
          ...(requireTls ? { requireTls: true as const } : {}),
        },
      },
    ],
    { expectedVersion: 'no_stream', meta: meta() },
  );
  return { mailId, messageId, raw };
}

const mailDoc = async (store: Store, mailId: string): Promise<MailDoc | null> => (await store.views.get('mails', mailId)) as MailDoc | null;
const ofType = <T extends StoredEvent['type']>(events: StoredEvent[], type: T): EventOf<T>[] => events.filter((e): e is EventOf<T> => e.type === type);

function options(sink: RelaySink, over: Record<string, string> = {}): RelayOptions {
  return relayOptionsFromEnv({
    SMTP_RELAY_HOST: '127.0.0.1',
    SMTP_RELAY_PORT: String(sink.port),
    RELAY_HELO_NAME: 'relay.test',
    RELAY_POLL_INTERVAL_MS: '50',
    RELAY_RETRY_BASE_MS: '50',
    RELAY_RETRY_MAX_DELAY_MS: '400',
    RELAY_SMTP_TIMEOUT_MS: '4000',
    RELAY_CLAIM_TTL_MS: '6000',
    RELAY_SHUTDOWN_GRACE_MS: '0',
    ...over,
  });
}

const [sqlite, sqliteWriterThread, mongoBackend] = backends('relay');

for (const backend of [sqlite, sqliteWriterThread, mongoBackend]) {
  describe(`relay: ${backend.name}`, () => {
    let cleanups: (() => Promise<void>)[] = [];
    before(async () => backend.before?.());
    after(async () => backend.after?.());
    afterEach(async () => {
      // Relays and projectors first, then sinks and stores: last registered, first closed.
      for (const c of cleanups.reverse()) await c();
      cleanups = [];
    });

    /** A fresh store with the mails and outbox projectors running; `second()` = another process's handle. */
    async function fresh(): Promise<{ store: Store; second(): Promise<Store>; sink: RelaySink; alice: Account }> {
      const loc = backend.location();
      cleanups.push(loc.dispose);
      const open = async (): Promise<Store> => {
        const s = await loc.open();
        cleanups.push(() => s.close());
        return s;
      };
      const store = await open();
      for (const p of [mails, outbox]) {
        const r = new ProjectionRunner(store, p, { owner: 'test', logger, leaseTtlMs: 5000, batchSize: 200 });
        await r.start();
        cleanups.push(() => r.stop());
      }
      const sink = await startSink();
      cleanups.push(() => sink.close());
      const alice = await registerAccount(store, `alice-${uuidv7()}@sender.test`);
      return { store, second: open, sink, alice };
    }

    async function relay(store: Store, opts: RelayOptions, deps: RelayDeps = {}): Promise<Relay> {
      const r = new Relay(store, opts, logger, deps);
      await r.start();
      cleanups.push(() => r.stop());
      return r;
    }

    test('delivers a sent mail: the stored bytes reach the server once, MailDelivered carries its reply, the mail is sent', async () => {
      const { store, sink, alice } = await fresh();
      await relay(store, options(sink));
      const { mailId, messageId, raw } = await sendMail(store, alice, ['carol@remote.test', 'Dave@Remote.test']);
      await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');

      assert.equal(sink.deliveries.length, 1, 'one SMTP transaction for both recipients');
      const [d] = sink.deliveries;
      assert.equal(`<${d!.messageId}>`, messageId);
      assert.deepEqual(d!.rcptTo, ['carol@remote.test', 'Dave@remote.test'], 'nodemailer lower-cases the domain');
      assert.equal(d!.mailFrom, alice.address);
      assert.ok(d!.raw.equals(raw), 'the bytes on the wire are the stored ones');

      const events = await store.events.readStream(`mail-${mailId}`);
      assert.deepEqual(events.map((e) => e.type), ['MailSent', 'MailDelivered']);
      const [delivered] = ofType(events, 'MailDelivered');
      assert.deepEqual(delivered!.data.recipients, ['carol@remote.test', 'Dave@Remote.test']);
      assert.match(delivered!.data.response, /^250 2\.0\.0 Ok: queued/);
      assert.equal(delivered!.data.attempt, 1);
      assert.equal(delivered!.meta.actor.kind, 'relay');
      assert.equal(delivered!.meta.causationId, events[0]!.eventId);

      const doc = await mailDoc(store, mailId);
      assert.equal(doc!.recipients['carol@remote.test']!.state, 'sent');
      await waitUntil('outbox entry done', async () => ((await store.views.get('outbox', mailId)) as OutboxDoc | null)?.status === 'done');
    });

    test('4xx: retried with exponential backoff until accepted; recipients already accepted are not sent again', async () => {
      const { store, sink, alice } = await fresh();
      sink.rcptPolicy = (rcpt, n) => (rcpt.startsWith('slow') && n <= 2 ? 451 : 250);
      await relay(store, options(sink));
      const { mailId, messageId } = await sendMail(store, alice, ['fast@remote.test', 'slow@remote.test']);
      await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');

      assert.equal(sink.copies(messageId, 'fast@remote.test'), 1);
      assert.equal(sink.copies(messageId, 'slow@remote.test'), 1);
      const events = await store.events.readStream(`mail-${mailId}`);
      assert.deepEqual(
        events.map((e) => `${e.type}${'attempt' in e.data ? ` ${e.data.attempt} ${e.data.recipients.join(',')}` : ''}`),
        [
          'MailSent',
          'MailDelivered 1 fast@remote.test',
          'MailDeliveryFailed 1 slow@remote.test',
          'MailDeliveryFailed 2 slow@remote.test',
          'MailDelivered 3 slow@remote.test',
        ],
      );
      const failures = ofType(events, 'MailDeliveryFailed');
      let previous = events[0]!.recordedAt;
      for (const [i, f] of failures.entries()) {
        assert.equal(f.data.permanent, false);
        assert.match(f.data.response, /^451 /);
        // Due no sooner than base · 2^(attempt-1) after the state it was planned from.
        assert.ok(Date.parse(f.data.nextAttemptAt!) >= Date.parse(previous) + backoffDelay(i + 1, { retryBaseMs: 50, retryMaxDelayMs: 400 }));
        previous = f.recordedAt;
      }
      // Each retry happened once it was due, not before.
      const slowCalls = sink.rcptCalls.filter((c) => c.rcpt === 'slow@remote.test');
      assert.equal(slowCalls.length, 3);
      assert.ok(slowCalls[1]!.at >= Date.parse(failures[0]!.data.nextAttemptAt!));
      assert.ok(slowCalls[2]!.at >= Date.parse(failures[1]!.data.nextAttemptAt!));
      const doc = await mailDoc(store, mailId);
      assert.deepEqual(doc!.recipients['slow@remote.test'], { state: 'sent', attempts: 3, response: ofType(events, 'MailDelivered')[1]!.data.response });
    });

    test('5xx: MailDeliveryFailed permanent, no retry, and a bounce in the sender inbox', async () => {
      const { store, sink, alice } = await fresh();
      sink.rcptPolicy = (rcpt) => (rcpt.startsWith('nobody') ? 550 : 250);
      await relay(store, options(sink));
      const { mailId, messageId } = await sendMail(store, alice, ['nobody@remote.test', 'carol@remote.test'], 'quarterly report');
      await waitUntil('mail failed', async () => (await mailDoc(store, mailId))?.status === 'failed');

      const events = await store.events.readStream(`mail-${mailId}`);
      const [failed] = ofType(events, 'MailDeliveryFailed');
      assert.deepEqual(failed!.data.recipients, ['nobody@remote.test']);
      assert.equal(failed!.data.permanent, true);
      assert.equal(failed!.data.nextAttemptAt, null);
      assert.match(failed!.data.response, /^550 5\.1\.1/);
      assert.deepEqual(ofType(events, 'MailDelivered')[0]!.data.recipients, ['carol@remote.test']);
      assert.equal(sink.rcptCalls.filter((c) => c.rcpt === 'nobody@remote.test').length, 1);
      assert.equal(sink.copies(messageId), 1, 'carol got it once, nobody never');

      const bounceId = bounceMailId(mailId, 1);
      await waitUntil('bounce listed', async () => (await mailDoc(store, bounceId)) !== null);
      const inbox = (await store.views.list('mails', { where: { userId: alice.userId, folder: 'inbox' }, orderBy: { field: 'sortAt', direction: 'desc' }, limit: 10 })) as MailDoc[];
      assert.deepEqual(inbox.map((m) => m.id), [bounceId], 'exactly one bounce');
      const bounce = inbox[0]!;
      assert.equal(bounce.mailboxId, alice.mailboxId);
      assert.equal(bounce.subject, 'Undelivered Mail Returned to Sender');
      assert.equal(bounce.from[0]!.address, 'MAILER-DAEMON@sender.test');
      assert.match(bounce.snippet, /nobody@remote\.test: 550 5\.1\.1/);
      assert.ok(bounce.text, 'the body is a blob');
      const text = (await store.blobs.get(bounce.text.sha256)).toString('utf8');
      assert.match(text, /nobody@remote\.test: 550 5\.1\.1 No such user here/);
      assert.match(text, /quarterly report/);
      assert.equal(bounce.attachments.length, 1, "the original's header section");
      const headers = (await store.blobs.get(bounce.attachments[0]!.sha256)).toString('utf8');
      assert.ok(headers.includes(messageId));
      assert.equal(bounce.inReplyTo, messageId);
      // A delivery status notification (RFC 3464) that programs can read: one block for the failed
      // recipient with its status and the server's reply; carol, delivered, is not in it.
      const report = (await store.blobs.get(bounce.raw!.sha256)).toString('utf8');
      assert.match(report, /^Content-Type: multipart\/report; report-type=delivery-status;/m);
      assert.match(report, /^Content-Type: text\/rfc822-headers/m);
      const status = /Content-Type: message\/delivery-status\r\n\r\n([\s\S]*?)\r\n--/.exec(report)?.[1];
      assert.ok(status, 'a message/delivery-status part');
      const [perMessage, ...perRecipient] = status.trim().split('\r\n\r\n');
      assert.match(perMessage!, /^Reporting-MTA: dns; \S+\r\nArrival-Date: \w{3}, \d{2} \w{3} \d{4} [\d:]{8} \+0000$/);
      assert.equal(perRecipient.length, 1);
      assert.match(perRecipient[0]!, /^Final-Recipient: rfc822; nobody@remote\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nDiagnostic-Code: smtp; 550 5\.1\.1 No such user here\r\nLast-Attempt-Date: /);
      assert.equal(sink.deliveries.filter((d) => d.rcptTo.includes(alice.address)).length, 0, 'the bounce stays local');
    });

    test('two relay instances on one store never send a message twice', async () => {
      const { store, second, sink, alice } = await fresh();
      sink.replyDelayMs = 5;
      const other = await second();
      const relays = [await relay(store, options(sink, { RELAY_CONCURRENCY: '3' })), await relay(other, options(sink, { RELAY_CONCURRENCY: '3' }))];
      const sent = [];
      for (let i = 0; i < 24; i += 1) sent.push(await sendMail(store, alice, [`r${i}@remote.test`]));
      for (const { mailId } of sent) await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
      for (const { messageId } of sent) assert.equal(sink.copies(messageId), 1, `${messageId} once`);
      assert.equal(sink.duplicates(), 0);
      assert.equal(relays[0]!.stats.attempts + relays[1]!.stats.attempts, sent.length, 'one attempt per message in all');
    });
  });
}

describe('relay: sqlite only', () => {
  let cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups = [];
  });

  async function setup(opts: (sink: RelaySink) => RelayOptions, deps: RelayDeps = {}, sinkTls?: { key: string; cert: string }, relayLogger = logger, sinkOptions: SinkOptions = {}) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-relay-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const store = await openSqliteStore({ dataDir: dir, pollIntervalMs: 50 });
    cleanups.push(() => store.close());
    for (const p of [mails, outbox, mtaSts]) {
      const r = new ProjectionRunner(store, p, { owner: 'test', logger, batchSize: 200 });
      await r.start();
      cleanups.push(() => r.stop());
    }
    const sink = await startSink(sinkTls, sinkOptions);
    cleanups.push(() => sink.close());
    const r = new Relay(store, opts(sink), relayLogger, deps);
    await r.start();
    cleanups.push(() => r.stop());
    const alice = await registerAccount(store, `alice-${uuidv7()}@sender.test`);
    return { store, sink, alice, relay: r };
  }

  describe('MTA-STS', () => {
    // secure.test publishes a policy; its MX is "localhost", the sink, with a certificate for that name.
    const localhostCert = selfSignedCertificate('localhost');
    const policy = (mode: string, mx = 'localhost'): string => `version: STSv1\r\nmode: ${mode}\r\nmx: ${mx}\r\nmax_age: 86400\r\n`;
    const deps = (policyText: string): RelayDeps => ({
      resolver: { resolveMx: async () => [{ exchange: 'localhost', priority: 10 }] },
      mtaSts: {
        resolveTxt: async (name) => (name === '_mta-sts.secure.test' ? [['v=STSv1; id=20261207']] : Promise.reject(Object.assign(new Error('no'), { code: 'ENOTFOUND' }))),
        fetchPolicy: async () => policyText,
      },
    });
    /** A RELAY_TLS_CA file trusting `cert` (the sink's). */
    const caFile = (cert = localhostCert.cert): string => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-ca-'));
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      writeFileSync(path.join(dir, 'ca.pem'), cert);
      return path.join(dir, 'ca.pem');
    };
    const direct = (sink: RelaySink, over: Record<string, string> = {}): RelayOptions => options(sink, { SMTP_RELAY_HOST: '', RELAY_MX_PORT: String(sink.port), ...over });
    const failedWith = async (store: Store, mailId: string): Promise<EventOf<'MailDeliveryFailed'>> => {
      await waitUntil('attempt recorded', async () => ofType(await store.events.readStream(`mail-${mailId}`), 'MailDeliveryFailed').length > 0);
      return ofType(await store.events.readStream(`mail-${mailId}`), 'MailDeliveryFailed')[0]!;
    };

    test('enforce: delivered to the MX host the policy names, over TLS with a certificate that verifies', async () => {
      const { store, sink, alice } = await setup((sink) => direct(sink, { RELAY_TLS_CA: caFile() }), deps(policy('enforce')), localhostCert);
      const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'verified');
      await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
      assert.equal(sink.deliveries.length, 1);
      assert.equal(sink.deliveries[0]!.secure, true, 'over TLS');
    });

    test('enforce: an MX host the policy does not name gets nothing; the message is deferred', async () => {
      const { store, sink, alice } = await setup((sink) => direct(sink, { RELAY_TLS_CA: caFile() }), deps(policy('enforce', '*.mx.secure.test')), localhostCert);
      const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'wrong mx');
      const failed = await failedWith(store, mailId);
      assert.equal(failed.data.permanent, false, 'deferred, not bounced');
      assert.match(failed.data.response, /^451 4\.7\.5 MTA-STS: no MX host of secure\.test \(localhost\) matches its policy \(\*\.mx\.secure\.test\)/);
      assert.equal(sink.deliveries.length, 0);
    });

    test('enforce: no STARTTLS, or a certificate that does not verify, and nothing goes in cleartext; the message is deferred', async () => {
      const elsewhere = selfSignedCertificate('elsewhere.test');
      for (const [sinkTls, ca, why, reason] of [
        [undefined, localhostCert.cert, 'no STARTTLS', /STARTTLS/],
        [localhostCert, null, 'an untrusted certificate', /self-signed/],
        [elsewhere, elsewhere.cert, 'a trusted certificate for another name', /altnames/],
      ] as const) {
        const { store, sink, alice } = await setup((sink) => direct(sink, ca ? { RELAY_TLS_CA: caFile(ca) } : {}), deps(policy('enforce')), sinkTls);
        const { mailId } = await sendMail(store, alice, ['carol@secure.test'], why);
        const failed = await failedWith(store, mailId);
        assert.equal(failed.data.permanent, false, `${why}: deferred`);
        assert.match(failed.data.response, /^451 4\.7\.5 MTA-STS \(enforce\): no verified TLS with localhost: /, why);
        assert.match(failed.data.response, reason, why);
        assert.equal(sink.deliveries.length, 0, `${why}: nothing delivered`);
      }
    });

    test('a fetched policy is kept in the log: a restarted relay that cannot fetch it still enforces it', async () => {
      const { store, alice, relay: first } = await setup((sink) => direct(sink, { RELAY_TLS_CA: caFile() }), deps(policy('enforce')), localhostCert);
      const sent = await sendMail(store, alice, ['carol@secure.test'], 'learns the policy');
      await waitUntil('mail sent', async () => (await mailDoc(store, sent.mailId))?.status === 'sent');
      const [kept] = ofType(await store.events.readStream('mta-sts-secure.test'), 'MtaStsPolicyFetched');
      assert.deepEqual(kept?.data, { domain: 'secure.test', policyId: '20261207', mode: 'enforce', mx: ['localhost'], maxAge: 86400 });
      await waitUntil('the mta_sts view has it', async () => (await store.views.get('mta_sts', 'secure.test')) !== null);
      await first.stop();
      // The restarted relay: same TXT id, the policy host unreachable, and DNS now names another MX.
      const unused = await startSink();
      cleanups.push(() => unused.close());
      const second = new Relay(store, direct(unused, { RELAY_TLS_CA: caFile() }), logger, {
        resolver: { resolveMx: async () => [{ exchange: 'mx.attacker.invalid', priority: 1 }] },
        mtaSts: { resolveTxt: async () => [['v=STSv1; id=20261207']], fetchPolicy: async () => Promise.reject(new Error('connection refused')) },
      });
      await second.start();
      cleanups.push(() => second.stop());
      const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'after the restart');
      const failed = await failedWith(store, mailId);
      assert.match(failed.data.response, /^451 4\.7\.5 MTA-STS: no MX host of secure\.test \(mx\.attacker\.invalid\) matches its policy \(localhost\)/);
    });

    test('enforce: MX hosts the policy does not name are skipped, the named one gets it', async () => {
      const { store, sink, alice } = await setup((sink) => direct(sink, { RELAY_TLS_CA: caFile() }), {
        ...deps(policy('enforce')),
        resolver: { resolveMx: async () => [{ exchange: 'unlisted.invalid', priority: 5 }, { exchange: 'localhost', priority: 10 }] },
      }, localhostCert);
      const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'skip unlisted');
      await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
      assert.equal(sink.deliveries[0]!.secure, true);
    });

    test('a domain without a policy, and a smart host, are as before: no policy is asked for', async () => {
      let fetched = 0;
      const noPolicy: RelayDeps = {
        resolver: { resolveMx: async () => [{ exchange: '127.0.0.1', priority: 10 }] },
        mtaSts: {
          resolveTxt: async () => Promise.reject(Object.assign(new Error('no'), { code: 'ENODATA' })),
          fetchPolicy: async () => {
            fetched += 1;
            return policy('enforce', 'nowhere.test');
          },
        },
      };
      const plain = await setup((sink) => direct(sink), noPolicy);
      const first = await sendMail(plain.store, plain.alice, ['carol@plain.test'], 'no policy');
      await waitUntil('mail sent', async () => (await mailDoc(plain.store, first.mailId))?.status === 'sent');
      let txt = 0;
      const viaSmartHost = await setup((sink) => options(sink), { ...deps(policy('enforce', 'nowhere.test')), mtaSts: { resolveTxt: async () => (txt++, [['v=STSv1; id=1']]), fetchPolicy: async () => policy('enforce', 'nowhere.test') } });
      const second = await sendMail(viaSmartHost.store, viaSmartHost.alice, ['carol@secure.test'], 'smart host');
      await waitUntil('mail sent', async () => (await mailDoc(viaSmartHost.store, second.mailId))?.status === 'sent');
      assert.equal(fetched + txt, 0);
    });

    test('testing: the same host without verified TLS still gets the message, and the log says what enforce would have done', async () => {
      for (const [sinkTls, why, expectSecure] of [
        [undefined, /STARTTLS/, false],
        [localhostCert, /self-signed/, true],
      ] as const) {
        const lines: { msg: string; response?: string }[] = [];
        const capture = pino({ level: 'warn' }, new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) }));
        const { store, sink, alice } = await setup((sink) => direct(sink), deps(policy('testing')), sinkTls, capture);
        const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'testing mode');
        await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
        assert.equal(sink.deliveries.length, 1);
        assert.equal(sink.deliveries[0]!.secure, expectSecure, 'opportunistic TLS where the host offers it');
        const warned = lines.find((l) => l.msg.startsWith('MTA-STS testing: no verified TLS'));
        assert.ok(warned, 'reported');
        assert.match(warned.response ?? '', why);
      }
    });

    describe('REQUIRETLS', () => {
      const requiring = async (sinkTls: { key: string; cert: string } | undefined, offer: boolean, relay: (sink: RelaySink) => RelayOptions, policyText = policy('testing')) => {
        const s = await setup(relay, deps(policyText), sinkTls, logger, { requireTls: offer });
        const { mailId } = await sendMail(s.store, s.alice, ['carol@secure.test'], 'requires tls', undefined, true);
        return { ...s, mailId };
      };

      test('direct to MX: a host an MTA-STS policy names (testing mode will do), over verified TLS, offering REQUIRETLS, gets it with REQUIRETLS', async () => {
        const { store, sink, mailId } = await requiring(localhostCert, true, (sink) => direct(sink, { RELAY_TLS_CA: caFile() }));
        await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
        assert.equal(sink.deliveries.length, 1);
        assert.equal(sink.deliveries[0]!.secure, true);
        assert.equal(sink.deliveries[0]!.requireTls, true, 'passed on');
      });

      test('a host that does not offer it gets nothing, and the message bounces with 5.7.30', async () => {
        const { store, sink, mailId } = await requiring(localhostCert, false, (sink) => direct(sink, { RELAY_TLS_CA: caFile() }), policy('enforce'));
        const failed = await failedWith(store, mailId);
        assert.equal(failed.data.permanent, true);
        assert.match(failed.data.response, /^550 5\.7\.30 REQUIRETLS support required: localhost does not offer it$/);
        assert.equal(sink.deliveries.length, 0);
        assert.equal(sink.rcptCalls.length, 0, 'not even an envelope');
      });

      test('a domain without an MTA-STS policy, or with mode none (DNSSEC is not checked): bounces with 5.7.30, nothing sent', async () => {
        const none = await requiring(localhostCert, true, (sink) => direct(sink, { RELAY_TLS_CA: caFile() }), policy('none'));
        const failed = await failedWith(none.store, none.mailId);
        assert.equal(failed.data.permanent, true);
        assert.match(failed.data.response, /^550 5\.7\.30 REQUIRETLS support required: the MX hosts of secure\.test cannot be validated: its MTA-STS policy is mode none/);
        const { mailId } = await sendMail(none.store, none.alice, ['carol@nopolicy.test'], 'no policy', undefined, true);
        const unpublished = await failedWith(none.store, mailId);
        assert.equal(unpublished.data.permanent, true);
        assert.match(unpublished.data.response, /^550 5\.7\.30 REQUIRETLS support required: the MX hosts of nopolicy\.test cannot be validated: it publishes no MTA-STS policy/);
        assert.equal(none.sink.deliveries.length, 0);
      });

      test('a policy that cannot be looked up now (the TXT lookup fails): deferred, not bounced', async () => {
        const { store, sink, alice } = await setup((sink) => direct(sink, { RELAY_TLS_CA: caFile() }), {
          ...deps(policy('enforce')),
          mtaSts: { resolveTxt: async () => Promise.reject(Object.assign(new Error('servfail'), { code: 'ESERVFAIL' })), fetchPolicy: async () => policy('enforce') },
        }, localhostCert, logger, { requireTls: true });
        const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'lookup fails', undefined, true);
        const failed = await failedWith(store, mailId);
        assert.equal(failed.data.permanent, false);
        assert.match(failed.data.response, /^451 4\.7\.5 REQUIRETLS: the MTA-STS policy of secure\.test could not be looked up/);
        assert.equal(sink.deliveries.length, 0);
      });

      test('a certificate that does not verify, or no STARTTLS: deferred, never sent in cleartext', async () => {
        for (const [sinkTls, why] of [
          [localhostCert, /self-signed/],
          [undefined, /STARTTLS/],
        ] as const) {
          const { store, sink, mailId } = await requiring(sinkTls, true, (sink) => direct(sink));
          const failed = await failedWith(store, mailId);
          assert.equal(failed.data.permanent, false);
          assert.match(failed.data.response, /^451 4\.7\.5 REQUIRETLS: no verified TLS with localhost: /);
          assert.match(failed.data.response, why);
          assert.equal(sink.deliveries.length, 0);
        }
      });

      test('smart host: verified TLS even where SMTP_RELAY_TLS_REJECT_UNAUTHORIZED=false lets ordinary mail through', async () => {
        const loose = (sink: RelaySink, over: Record<string, string> = {}) => options(sink, { SMTP_RELAY_HOST: 'localhost', SMTP_RELAY_TLS_REJECT_UNAUTHORIZED: 'false', ...over });
        const untrusted = await requiring(localhostCert, true, (sink) => loose(sink));
        const failed = await failedWith(untrusted.store, untrusted.mailId);
        assert.equal(failed.data.permanent, false, 'deferred');
        assert.match(failed.data.response, /self-signed/);
        const ordinary = await sendMail(untrusted.store, untrusted.alice, ['carol@secure.test'], 'ordinary');
        await waitUntil('ordinary mail sent', async () => (await mailDoc(untrusted.store, ordinary.mailId))?.status === 'sent');
        assert.deepEqual(untrusted.sink.deliveries.map((d) => [d.messageId, d.requireTls]), [[ordinary.messageId.replace(/^<|>$/g, ''), false]]);

        const trusted = await requiring(localhostCert, true, (sink) => loose(sink, { RELAY_TLS_CA: caFile() }));
        await waitUntil('mail sent', async () => (await mailDoc(trusted.store, trusted.mailId))?.status === 'sent');
        assert.equal(trusted.sink.deliveries[0]!.requireTls, true);
        assert.equal(trusted.sink.deliveries[0]!.secure, true);
      });
    });

    test('TLS-Required: No (RFC 8689 3): the policy is not applied, so an MX host it does not name gets the message over opportunistic TLS; REQUIRETLS wins over it', async () => {
      const { store, sink, alice } = await setup((sink) => direct(sink), deps(policy('enforce', '*.mx.secure.test')));
      const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'tls not required', undefined, false, { 'TLS-Required': 'No' });
      await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
      assert.equal(sink.deliveries.length, 1);
      const both = await sendMail(store, alice, ['carol@secure.test'], 'both', undefined, true, { 'TLS-Required': 'No' });
      const failed = await failedWith(store, both.mailId);
      assert.match(failed.data.response, /^451 4\.7\.5 MTA-STS: no MX host of secure\.test/, 'REQUIRETLS: the policy holds');
      assert.equal(sink.deliveries.length, 1);
    });

    test('RELAY_MTA_STS=false: no policy is looked at', async () => {
      const { store, sink, alice } = await setup((sink) => direct(sink, { RELAY_MTA_STS: 'false' }), deps(policy('enforce', 'mx.elsewhere.test')));
      const { mailId } = await sendMail(store, alice, ['carol@secure.test'], 'opted out');
      await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
      assert.equal(sink.deliveries.length, 1);
    });
  });

  test('two sent mails with one Message-ID (sent on to others, or another user\'s) each get their own bounce', async () => {
    const { store, sink, alice } = await setup((sink) => options(sink));
    sink.rcptPolicy = () => 550;
    const bob = await registerAccount(store, `bob-${uuidv7()}@sender.test`);
    const shared = `<shared-${uuidv7()}@sender.test>`;
    const first = await sendMail(store, alice, ['one@remote.test'], 'split', shared);
    const second = await sendMail(store, alice, ['two@remote.test'], 'split', shared);
    const other = await sendMail(store, bob, ['three@remote.test'], 'split', shared);
    for (const sent of [first, second, other]) {
      await waitUntil('bounced', async () => (await mailDoc(store, bounceMailId(sent.mailId, 1))) !== null);
    }
    const bounces = await Promise.all([first, second, other].map(async (s) => (await mailDoc(store, bounceMailId(s.mailId, 1)))!));
    assert.deepEqual(bounces.map((b) => b.userId), [alice.userId, alice.userId, bob.userId], 'each to its own sender');
  });

  test('retry deadline: a temporary failure past it becomes permanent and bounces', async () => {
    const { store, sink, alice } = await setup((sink) => options(sink, { RELAY_RETRY_DEADLINE_MS: '300' }));
    sink.rcptPolicy = () => 451;
    const { mailId, messageId } = await sendMail(store, alice, ['later@remote.test']);
    await waitUntil('mail failed', async () => (await mailDoc(store, mailId))?.status === 'failed');
    const events = await store.events.readStream(`mail-${mailId}`);
    const failures = ofType(events, 'MailDeliveryFailed');
    assert.ok(failures.length >= 2);
    const last = failures.at(-1)!;
    assert.ok(failures.slice(0, -1).every((f) => !f.data.permanent));
    assert.equal(last.data.permanent, true);
    assert.match(last.data.response, /^451 .*giving up: retry deadline passed/);
    assert.ok(Date.parse(last.recordedAt) >= Date.parse(events[0]!.recordedAt) + 300);
    // No temporary failure was scheduled past the deadline.
    for (const f of failures.slice(0, -1)) assert.ok(Date.parse(f.data.nextAttemptAt!) <= Date.parse(events[0]!.recordedAt) + 300);
    await waitUntil('bounce', async () => (await mailDoc(store, bounceMailId(mailId, last.data.attempt))) !== null);
  });

  test('direct to MX: MX hosts by preference (an unreachable one is skipped), null MX and unknown domains fail for good', async () => {
    const lookups: string[] = [];
    const resolver: MxResolver = {
      async resolveMx(domain) {
        lookups.push(domain);
        if (domain === 'remote.test') return [{ exchange: '127.0.0.1', priority: 20 }, { exchange: '127.0.0.2', priority: 10 }];
        if (domain === 'nullmx.test') return [{ exchange: '', priority: 0 }];
        throw Object.assign(new Error(`queryMx ENOTFOUND ${domain}`), { code: 'ENOTFOUND' });
      },
    };
    const { store, sink, alice } = await setup((sink) => options(sink, { SMTP_RELAY_HOST: '', RELAY_MX_PORT: String(sink.port) }), { resolver });
    const { mailId, messageId } = await sendMail(store, alice, ['carol@remote.test', 'x@nullmx.test', 'y@nowhere.test']);
    await waitUntil('mail failed', async () => (await mailDoc(store, mailId))?.status === 'failed');
    assert.deepEqual(lookups.sort(), ['nowhere.test', 'nullmx.test', 'remote.test']);
    assert.equal(sink.copies(messageId, 'carol@remote.test'), 1, 'delivered through the second MX');
    const events = await store.events.readStream(`mail-${mailId}`);
    assert.deepEqual(ofType(events, 'MailDelivered').flatMap((e) => e.data.recipients), ['carol@remote.test']);
    const failed = Object.fromEntries(ofType(events, 'MailDeliveryFailed').flatMap((e) => e.data.recipients.map((r) => [r, e.data])));
    assert.equal(failed['x@nullmx.test']!.permanent, true);
    assert.match(failed['x@nullmx.test']!.response, /^556 5\.1\.10/);
    assert.equal(failed['y@nowhere.test']!.permanent, true);
    assert.match(failed['y@nowhere.test']!.response, /^550 5\.1\.2/);
    await waitUntil('bounce', async () => (await mailDoc(store, bounceMailId(mailId, 1))) !== null);
    const bounceText = (await store.blobs.get((await mailDoc(store, bounceMailId(mailId, 1)))!.text!.sha256)).toString();
    assert.match(bounceText, /x@nullmx\.test: 556/);
    assert.match(bounceText, /y@nowhere\.test: 550/);
  });

  test('direct to MX: a host whose TLS handshake fails gets the message in cleartext (opportunistic TLS)', async () => {
    // An MX that offers STARTTLS, answers 220, then does not speak TLS; plain sessions work.
    const received: string[] = [];
    let handshakes = 0;
    const broken = net.createServer((socket) => {
      let buffer = '';
      let inData = false;
      socket.on('error', () => undefined);
      socket.write('220 broken.test ESMTP\r\n');
      socket.on('data', (d: Buffer) => {
        buffer += d.toString('latin1');
        for (let i = buffer.indexOf('\r\n'); i >= 0; i = buffer.indexOf('\r\n')) {
          const line = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          if (inData) {
            if (line === '.') {
              inData = false;
              socket.write('250 2.0.0 taken in cleartext\r\n');
            } else received.push(line);
            continue;
          }
          const command = line.toUpperCase();
          if (command.startsWith('EHLO')) socket.write('250-broken.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n');
          else if (command === 'STARTTLS') {
            handshakes += 1;
            socket.write('220 go ahead\r\n');
            setTimeout(() => socket.end('this is not TLS\r\n'), 20);
          } else if (command === 'DATA') {
            inData = true;
            socket.write('354 go\r\n');
          } else if (command === 'QUIT') socket.end('221 bye\r\n');
          else socket.write('250 ok\r\n');
        }
      });
    });
    await new Promise<void>((resolve) => broken.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => broken.close(() => resolve())));
    const port = (broken.address() as net.AddressInfo).port;
    const resolver: MxResolver = { resolveMx: async () => [{ exchange: '127.0.0.1', priority: 10 }] };
    const { store, alice } = await setup((sink) => options(sink, { SMTP_RELAY_HOST: '', RELAY_MX_PORT: String(port) }), { resolver });
    const { mailId } = await sendMail(store, alice, ['carol@remote.test'], 'cleartext fallback');
    await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
    assert.equal(handshakes, 1, 'TLS was tried first, once');
    assert.ok(received.some((l) => l === 'Subject: cleartext fallback'), 'the message arrived');
    const [delivered] = ofType(await store.events.readStream(`mail-${mailId}`), 'MailDelivered');
    assert.match(delivered!.data.response, /taken in cleartext/);
  });

  test('smart host with login, DKIM-signed with the key from dkim:keygen; the signature verifies against the TXT record', async () => {
    const key = dkimKeygen('sender.test', 'mail');
    const { store, sink, alice } = await setup((sink) => {
      sink.users.set('relayuser', 'relaypass');
      return options(sink, {
        SMTP_RELAY_USER: 'relayuser',
        SMTP_RELAY_PASS: 'relaypass',
        SMTP_RELAY_REQUIRE_TLS: 'false', // the sink speaks no TLS
        DKIM_DOMAIN: 'sender.test',
        DKIM_SELECTOR: 'mail',
        DKIM_PRIVATE_KEY: key.privateKeyPem.replace(/\n/g, '\\n'),
      });
    });
    const { mailId, raw } = await sendMail(store, alice, ['carol@remote.test']);
    await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
    const [d] = sink.deliveries;
    assert.equal(d!.user, 'relayuser');
    assert.match(d!.raw.subarray(0, 20).toString(), /^DKIM-Signature: /);
    assert.ok(d!.raw.subarray(d!.raw.length - raw.length).equals(raw), 'the stored bytes follow the signature unchanged');
    const result = await authenticate(d!.raw, {
      ip: '127.0.0.1',
      helo: 'relay.test',
      sender: alice.address,
      mta: 'remote.test',
      disableArc: true,
      disableDmarc: true,
      disableBimi: true,
      resolver: async (name, rrtype) => {
        if (name === key.name && rrtype === 'TXT') return [[key.value]];
        throw Object.assign(new Error(`no ${rrtype} for ${name}`), { code: 'ENOTFOUND' });
      },
    });
    const [sig] = result.dkim.results ?? [];
    assert.equal(sig?.status.result, 'pass');
    assert.equal(sig?.signingDomain, 'sender.test');
  });

  test('a refused smart host login defers the mail (a configuration problem, like Postfix soft_bounce), it does not bounce', async () => {
    const { store, sink, alice } = await setup((sink) => {
      sink.users.set('relayuser', 'right');
      return options(sink, { SMTP_RELAY_USER: 'relayuser', SMTP_RELAY_PASS: 'wrong', SMTP_RELAY_REQUIRE_TLS: 'false', RELAY_RETRY_BASE_MS: '60000' });
    });
    const { mailId, messageId } = await sendMail(store, alice, ['carol@remote.test']);
    await waitUntil('a failed attempt', async () => (await mailDoc(store, mailId))?.recipients['carol@remote.test']?.attempts === 1);
    const [failed] = ofType(await store.events.readStream(`mail-${mailId}`), 'MailDeliveryFailed');
    assert.match(failed!.data.response, /^535 /);
    assert.equal(failed!.data.permanent, false);
    assert.equal((await mailDoc(store, mailId))!.status, 'queued');
    assert.equal(sink.deliveries.length, 0);
    assert.deepEqual(await store.events.readStream(`mail-${bounceMailId(mailId, 1)}`), []);
  });

  test('stop while the server holds a message: the attempt is abandoned unrecorded, and the next relay sends it', async () => {
    const { store, sink, alice, relay: first } = await setup((sink) => options(sink));
    sink.holdPolicy = () => sink.deliveries.length === 1;
    const held = new Promise((resolve) => sink.once('held', resolve));
    const { mailId, messageId } = await sendMail(store, alice, ['carol@remote.test']);
    await held;
    await first.stop();
    assert.deepEqual((await store.events.readStream(`mail-${mailId}`)).map((e) => e.type), ['MailSent'], 'nothing recorded');
    const next = new Relay(store, options(sink), logger);
    await next.start();
    cleanups.push(() => next.stop());
    await waitUntil('mail sent', async () => (await mailDoc(store, mailId))?.status === 'sent');
    assert.equal(sink.copies(messageId), 2, 'sent again: the abandoned attempt may have reached the server');
  });
});

test('crash: kill -9 while the sink holds a message unanswered; after a restart every message arrives, duplicates ≤ attempts in flight', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-relay-crash-'));
  const sink = await startSink();
  const store = await openSqliteStore({ dataDir, pollIntervalMs: 50 });
  const children: ChildProcess[] = [];
  try {
    const alice = await registerAccount(store, 'alice@sender.test');
    const sent = [];
    for (let i = 0; i < 12; i += 1) sent.push(await sendMail(store, alice, [`r${i}@remote.test`]));
    let arrivals = 0;
    sink.holdPolicy = () => ++arrivals === 4; // the 4th message to arrive is never answered
    const env = {
      DATA_DIR: dataDir,
      SMTP_RELAY_HOST: '127.0.0.1',
      SMTP_RELAY_PORT: String(sink.port),
      RELAY_CONCURRENCY: '3',
      RELAY_POLL_INTERVAL_MS: '50',
      RELAY_SMTP_TIMEOUT_MS: '4000',
      RELAY_CLAIM_TTL_MS: '5000',
      RELAY_SHUTDOWN_GRACE_MS: '0',
      PROJECTOR_LEASE_TTL_MS: '1500',
    };
    const start = (): { child: ChildProcess; exited: Promise<unknown> } => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/relay-child.ts'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
      children.push(child);
      return { child, exited: new Promise((resolve) => child.once('exit', resolve)) };
    };

    const first = start();
    const held = await Promise.race([
      new Promise<{ messageId: string }>((resolve) => sink.once('held', resolve)),
      first.exited.then(() => {
        throw new Error('the relay child exited before the sink held a message');
      }),
    ]);
    first.child.kill('SIGKILL');
    await first.exited;

    // In flight at the kill = claims the dead relay still holds (an attempt releases its claim only after recording).
    let inFlight = 0;
    for (const { messageId } of sent) {
      const probe = await store.views.acquireLease(`relay:${messageId}`, 'probe', 1);
      if (probe) await store.views.releaseLease(probe);
      else inFlight += 1;
    }
    assert.ok(inFlight >= 1 && inFlight <= 3, `in flight: ${inFlight}`);

    const second = start();
    for (const { mailId } of sent) await waitUntil(`mail ${mailId} sent`, async () => (await mailDoc(store, mailId))?.status === 'sent');
    for (const { messageId } of sent) assert.ok(sink.copies(messageId) >= 1, `${messageId} arrived`);
    assert.ok(sink.duplicates() <= inFlight, `duplicates ${sink.duplicates()} ≤ in flight ${inFlight}`);
    t.diagnostic(`messages ${sent.length}, in flight at the kill ${inFlight}, duplicates ${sink.duplicates()}`);
    assert.equal(sink.copies(held.messageId), 2, 'the held message was sent again: the one duplicate SMTP cannot avoid');
    second.child.kill('SIGTERM');
    await second.exited;
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await sink.close();
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

describe('relay: MTA-STS policies', () => {
  test('policy text: fields, modes, max_age bounds, mx required unless mode none', () => {
    assert.deepEqual(parsePolicy('version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Backup.example.com.\r\nmax_age: 604800\r\nextension: ignored\r\n'), {
      mode: 'enforce',
      mx: ['mail.example.com', '*.backup.example.com'],
      maxAge: 604800,
    });
    assert.deepEqual(parsePolicy('version: STSv1\nmode: none\nmax_age: 0\n'), { mode: 'none', mx: [], maxAge: 0 });
    for (const [text, why] of [
      ['mode: enforce\nmx: a\nmax_age: 1', /version is missing/],
      ['version: STSv2\nmode: enforce\nmx: a\nmax_age: 1', /version is STSv2/],
      ['version: STSv1\nmode: strict\nmx: a\nmax_age: 1', /mode is strict/],
      ['version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601', /max_age/],
      ['version: STSv1\nmode: enforce\nmx: a\nmax_age: -1', /max_age/],
      ['version: STSv1\nmode: testing\nmax_age: 10', /names no mx/],
      ['<html>not a policy</html>', /version is missing/],
    ] as const) assert.throws(() => parsePolicy(text), why);
  });

  test('MX patterns: exact names, and a wildcard for one label on the left only', () => {
    assert.ok(mxMatches('mail.example.com', 'MAIL.example.com.'));
    assert.ok(mxMatches('*.example.com', 'mx1.example.com'));
    assert.ok(!mxMatches('*.example.com', 'example.com'));
    assert.ok(!mxMatches('*.example.com', 'a.b.example.com'));
    assert.ok(!mxMatches('mail.example.com', 'evil-mail.example.com'));
  });

  test('TXT record: exactly one v=STSv1 record with an id', () => {
    assert.equal(policyId([['v=STSv1; id=2026', '1207;'], ['some other record']]), '20261207');
    assert.equal(policyId([['v=STSv1;id=abc']]), 'abc');
    assert.equal(policyId([]), null);
    assert.equal(policyId([['v=STSv1; id=1'], ['v=STSv1; id=2']]), null, 'two records: no policy');
    assert.equal(policyId([['v=STSv1; id=has-dash']]), null);
    assert.equal(policyId([['v=STSv10; id=1']]), null);
  });

  test('policies are cached for max_age, fetched again when the id changes, and kept while a fetch or lookup fails', async () => {
    let now = Date.parse('2026-12-07T00:00:00Z');
    let id = 'one';
    let txtFails = false;
    let body = 'version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 3600\n';
    let fetches = 0;
    const policies = new MtaStsPolicies(
      {
        resolveTxt: async (name) => {
          if (txtFails) throw Object.assign(new Error('timeout'), { code: 'ETIMEOUT' });
          if (name !== '_mta-sts.a.test') throw Object.assign(new Error('none'), { code: 'ENOTFOUND' });
          return [[`v=STSv1; id=${id}`]];
        },
        fetchPolicy: async () => {
          fetches += 1;
          if (body === '') throw new Error('connection refused');
          return body;
        },
      },
      logger,
      1000,
      { now: () => now },
    );
    assert.equal(await policies.policyFor('b.test'), null, 'no record, no policy');
    assert.deepEqual((await policies.policyFor('A.test'))?.mx, ['mx.a.test']);
    await policies.policyFor('a.test');
    assert.equal(fetches, 1, 'same id: cached');
    id = 'two';
    body = 'version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 3600\n';
    assert.equal((await policies.policyFor('a.test'))?.mode, 'testing', 'a new id: fetched again');
    id = 'three';
    body = '';
    assert.equal((await policies.policyFor('a.test'))?.mode, 'testing', 'the fetch fails: the cached policy stays in force');
    const tries = fetches;
    await policies.policyFor('a.test');
    assert.equal(fetches, tries, 'a failed fetch is not tried again at once');
    txtFails = true;
    assert.equal((await policies.policyFor('a.test'))?.mode, 'testing', 'the lookup fails: likewise');
    txtFails = false;
    id = '';
    assert.equal((await policies.policyFor('a.test'))?.mode, 'testing', 'the record is gone: likewise');
    now += 3601_000;
    assert.equal(await policies.policyFor('a.test'), null, 'past max_age, with nothing fetched: no policy');
    id = 'four';
    assert.equal(await policies.policyFor('a.test'), null, 'a record, a fetch that fails, nothing cached: no policy');
    body = 'version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 3600\n';
    now += 5 * 60_000;
    assert.equal((await policies.policyFor('a.test'))?.mode, 'enforce', 'tried again after the back-off');
    const fetched = fetches;
    now += 1801_000;
    await policies.policyFor('a.test');
    assert.equal(fetches, fetched + 1, 'in use past half its max_age: fetched again before it runs out');
    assert.equal(await policies.policyFor('[192.0.2.1]'), null, 'an address literal has none');
  });

  test('a lookup that hangs is bounded by the timeout and by the attempt\'s signal', async () => {
    const hang = new Promise<never>(() => undefined);
    const policies = new MtaStsPolicies({ resolveTxt: () => hang, fetchPolicy: () => hang }, logger, 200);
    const t0 = Date.now();
    assert.equal(await policies.policyFor('slow.test'), null, 'timed out: as if there were no policy');
    assert.ok(Date.now() - t0 < 2000);
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error('relay stopped')), 20);
    await assert.rejects(new MtaStsPolicies({ resolveTxt: () => hang, fetchPolicy: () => hang }, logger, 60_000).policyFor('slow.test', stop.signal), /relay stopped/);
  });

  test('the HTTPS fetch: a 200 text/plain from a certificate valid for mta-sts.<domain>; anything else is refused', async () => {
    const cert = selfSignedCertificate('mta-sts.secure.test');
    let answer: (res: http.ServerResponse) => void = () => undefined;
    const server = https.createServer({ key: cert.key, cert: cert.cert }, (req, res) => {
      assert.equal(req.url, '/.well-known/mta-sts.txt');
      answer(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const lookup = ((_host: string, opts: unknown, cb: (...a: unknown[]) => void) =>
        (opts as { all?: boolean }).all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4)) as unknown as net.LookupFunction;
      const fetchPolicy = httpsPolicyFetcher({ timeoutMs: 2000, ca: cert.cert, port, lookup });
      answer = (res) => res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('version: STSv1\n');
      assert.equal(await fetchPolicy('secure.test'), 'version: STSv1\n');
      answer = (res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<p>hi</p>');
      await assert.rejects(fetchPolicy('secure.test'), /200 text\/html/);
      answer = (res) => res.writeHead(301, { location: 'https://elsewhere.test/' }).end();
      await assert.rejects(fetchPolicy('secure.test'), /301/, 'no redirects');
      answer = (res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('x'.repeat(70_000));
      await assert.rejects(fetchPolicy('secure.test'), /larger than 65536/);
      answer = (res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        const drip = setInterval(() => res.write('x'), 100);
        res.on('close', () => clearInterval(drip));
      };
      await assert.rejects(httpsPolicyFetcher({ timeoutMs: 500, ca: cert.cert, port, lookup })('secure.test'), /did not answer within 500 ms/, 'a server that drips bytes');
      answer = (res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('version: STSv1\n');
      await assert.rejects(httpsPolicyFetcher({ timeoutMs: 2000, port, lookup })('secure.test'), /self-signed/, 'a certificate nobody vouches for');
      await assert.rejects(fetchPolicy('other.test'), /altnames|mta-sts\.other\.test/, 'a certificate for another name');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('relay: pure parts', () => {
  const doc = (over: Partial<OutboxDoc> = {}): OutboxDoc => ({
    id: 'm1',
    messageId: '<m1@sender.test>',
    mailboxId: 'mb',
    userId: 'u',
    raw: { sha256: 'a'.repeat(64), size: 1 },
    mailFrom: 'alice@sender.test',
    recipients: [
      { address: 'a@x.test', state: 'pending', attempts: 0, lastResponse: null },
      { address: 'b@x.test', state: 'pending', attempts: 0, lastResponse: null },
      { address: 'c@x.test', state: 'delivered', attempts: 1, lastResponse: '250 ok' },
    ],
    status: 'pending',
    attempts: 1,
    nextAttemptAt: '2026-01-01T00:00:00.000Z',
    sentAt: '2026-01-01T00:00:00.000Z',
    streamVersion: 2,
    ...over,
  });
  const policy = { retryBaseMs: 1000, retryMaxDelayMs: 8000, retryDeadlineMs: 60_000 };
  const t0 = Date.parse('2026-01-01T00:00:00.000Z');

  test('bounce report: a status per failed recipient, a multiline reply on one line, no SMTP diagnostic for a failure without a reply', async () => {
    const input = {
      action: 'failed' as const,
      entry: doc(),
      sent: { message: summary('Grüße') } as EventOf<'MailSent'>['data'],
      recipients: [
        { recipient: 'a@x.test', response: '550-5.7.1 Refused by policy\r\n550 5.7.1 see https://x.test' },
        { recipient: 'b@x.test', response: '452 mailbox full' },
        { recipient: 'c@y.test', response: 'no MX host for y.test' },
      ],
      attempt: 3,
      raw: null,
      heloName: 'mx.sender.test',
      now: new Date(t0 + 60_000),
      meta: meta(),
    };
    const raw = await composeNotice(input, 'bounce-1');
    const text = raw.toString('utf8');
    const status = /Content-Type: message\/delivery-status\r\n\r\n([\s\S]*?)\r\n--/.exec(text)![1]!.trim().split('\r\n\r\n');
    assert.deepEqual(status, [
      'Reporting-MTA: dns; mx.sender.test\r\nArrival-Date: Thu, 01 Jan 2026 00:00:00 +0000',
      'Final-Recipient: rfc822; a@x.test\r\nAction: failed\r\nStatus: 5.7.1\r\nDiagnostic-Code: smtp; 550-5.7.1 Refused by policy 550 5.7.1 see https://x.test\r\nLast-Attempt-Date: Thu, 01 Jan 2026 00:01:00 +0000',
      'Final-Recipient: rfc822; b@x.test\r\nAction: failed\r\nStatus: 4.0.0\r\nDiagnostic-Code: smtp; 452 mailbox full\r\nLast-Attempt-Date: Thu, 01 Jan 2026 00:01:00 +0000',
      'Final-Recipient: rfc822; c@y.test\r\nAction: failed\r\nStatus: 5.4.4\r\nLast-Attempt-Date: Thu, 01 Jan 2026 00:01:00 +0000',
    ]);
    assert.doesNotMatch(text, /text\/rfc822-headers/, 'no header section without the original');
    assert.ok(raw.equals(await composeNotice(input, 'bounce-1')), 'the same bounce is the same bytes');
  });

  test('DSN status codes: the enhanced code right after the reply code, else the reply class; without a reply, what the action means; never a number from the text', () => {
    assert.deepEqual(
      [
        statusOf('550 5.1.1 no such user', 'failed'),
        statusOf('550-5.7.1 policy\r\n550 5.7.1 see', 'failed'),
        statusOf('452 mailbox full', 'delayed'),
        statusOf('250 2.0.0 Ok: queued as 7', 'relayed'),
        statusOf('451 5.1.1 contradicts itself', 'delayed'),
        statusOf('connect ECONNREFUSED 2.16.1.1:25', 'delayed'),
        statusOf('attempt timed out after 30000 ms', 'delayed'),
        statusOf('no MX host for y.test', 'failed'),
        statusOf('attempt timed out after 30000 ms (giving up: retry deadline passed)', 'failed'),
        statusOf('535 5.7.8 Authentication failed', 'delayed'),
      ],
      ['5.1.1', '5.7.1', '4.0.0', '2.0.0', '4.0.0', '4.4.1', '4.4.1', '5.4.4', '4.4.7', '4.7.8'],
    );
  });

  test('DSN requests (RFC 3461): without NOTIFY a failure is reported and a success not; NEVER asks for nothing', () => {
    const dsn = { ret: null, envid: null, recipients: [{ address: 'A@x.test', notify: ['SUCCESS' as const], orcpt: null }, { address: 'n@x.test', notify: [], orcpt: null }] };
    assert.deepEqual(
      [noticeRequested(undefined, 'z@x.test', 'FAILURE'), noticeRequested(undefined, 'z@x.test', 'SUCCESS'), noticeRequested(dsn, 'a@x.test', 'SUCCESS'), noticeRequested(dsn, 'a@x.test', 'FAILURE'), noticeRequested(dsn, 'n@x.test', 'FAILURE'), noticeRequested(dsn, 'other@x.test', 'FAILURE')],
      [true, false, true, false, false, true],
    );
  });

  test('success and failure notices: ENVID and ORCPT come back; RET=FULL returns the whole original to a failure notice, a success notice only its header section', async () => {
    const original = Buffer.from('Subject: hi\r\nMessage-ID: <m1@sender.test>\r\n\r\nthe body\r\n');
    const base = {
      entry: doc(),
      sent: { message: summary('hi'), dsn: { ret: 'FULL' as const, envid: 'Q+1', recipients: [{ address: 'a@x.test', notify: null, orcpt: 'rfc822;first@orig.test' }] } },
      attempt: 1,
      raw: original,
      heloName: 'mx.sender.test',
      now: new Date(t0 + 60_000),
      meta: meta(),
    };
    const failed = (await composeNotice({ ...base, action: 'failed', recipients: [{ recipient: 'a@x.test', response: '550 5.1.1 no such user' }] }, 'n-1')).toString();
    assert.match(failed, /^Subject: Undelivered Mail Returned to Sender\r$/m);
    assert.match(failed, /\r\n\r\nOriginal-Envelope-Id: Q\+1\r\nReporting-MTA: dns; mx.sender.test\r\n/);
    assert.match(failed, /Original-Recipient: rfc822;first@orig.test\r\nFinal-Recipient: rfc822; a@x.test\r\nAction: failed\r\nStatus: 5.1.1\r\n/);
    assert.match(failed, /Content-Type: message\/rfc822[^]*the body/, 'the whole original');
    const relayed = (await composeNotice({ ...base, action: 'relayed', recipients: [{ recipient: 'a@x.test', response: '250 2.0.0 Ok: queued as 7' }] }, 'n-2')).toString();
    assert.match(relayed, /^Subject: Successful Mail Delivery Report\r$/m);
    assert.match(relayed, /Action: relayed\r\nStatus: 2.0.0\r\nDiagnostic-Code: smtp; 250 2.0.0 Ok: queued as 7\r\n/);
    assert.match(relayed, /Content-Type: text\/rfc822-headers/);
    assert.doesNotMatch(relayed, /the body/, 'a success notice returns the header section only');
    const big = (await composeNotice({ ...base, raw: Buffer.concat([original, Buffer.alloc(1024 * 1024, 'x')]), action: 'failed', recipients: [{ recipient: 'a@x.test', response: '550 no' }] }, 'n-3')).toString();
    assert.match(big, /Content-Type: text\/rfc822-headers/, 'too big to return whole: its header section');
  });

  test('backoff doubles from the base and is capped', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 60].map((a) => backoffDelay(a, policy)), [1000, 2000, 4000, 8000, 8000, 8000]);
  });

  test('planAttempt: one event per reply; 5xx permanent and bounced; 4xx retried; recipients no longer pending are ignored', () => {
    const outcomes: RecipientOutcome[] = [
      { recipient: 'A@x.test', kind: 'delivered', response: '250 ok' },
      { recipient: 'b@x.test', kind: 'temporary', response: '451 later' },
      { recipient: 'c@x.test', kind: 'permanent', response: '550 gone' },
    ];
    const plan = planAttempt(doc(), outcomes, 2, t0 + 1000, policy);
    assert.deepEqual(plan.events, [
      { type: 'MailDelivered', data: { mailId: 'm1', messageId: '<m1@sender.test>', attempt: 2, recipients: ['A@x.test'], response: '250 ok' } },
      { type: 'MailDeliveryFailed', data: { mailId: 'm1', messageId: '<m1@sender.test>', attempt: 2, recipients: ['b@x.test'], response: '451 later', permanent: false, nextAttemptAt: new Date(t0 + 1000 + 2000).toISOString() } },
    ]);
    assert.deepEqual(plan.bounced, []);
    const permanent = planAttempt(doc(), [{ recipient: 'b@x.test', kind: 'permanent', response: '550 gone' }], 2, t0, policy);
    assert.deepEqual(permanent.bounced, [{ recipient: 'b@x.test', response: '550 gone' }]);
  });

  test('planAttempt: never schedules past the deadline, and gives up once it has passed', () => {
    const temp: RecipientOutcome[] = [{ recipient: 'a@x.test', kind: 'temporary', response: '421 busy' }];
    const near = planAttempt(doc(), temp, 9, t0 + 59_000, policy);
    assert.equal(near.events[0]!.type === 'MailDeliveryFailed' && near.events[0]!.data.nextAttemptAt, new Date(t0 + 60_000).toISOString());
    const late = planAttempt(doc(), temp, 10, t0 + 60_000, policy);
    assert.ok(late.events[0]!.type === 'MailDeliveryFailed' && late.events[0]!.data.permanent);
    assert.deepEqual(late.bounced.map((b) => b.recipient), ['a@x.test']);
  });

  test('outbox projection: pending → done; a late duplicate report changes nothing; the stream fold equals the view', () => {
    const base = { streamId: 'mail-m1', schemaVersion: 1, meta: meta(), eventId: 'e' };
    const events = [
      { ...base, version: 1, position: 1, recordedAt: '2026-01-01T00:00:00.000Z', type: 'MailSent', data: { mailId: 'm1', mailboxId: 'mb', userId: 'u', messageId: '<m1@s>', raw: { sha256: 'a'.repeat(64), size: 1 }, envelope: { mailFrom: 'a@s', rcptTo: ['X@r', 'x@r', 'y@r'] }, message: summary('s'), bcc: [], wasDraft: false } },
      { ...base, version: 2, position: 2, recordedAt: '2026-01-01T00:00:01.000Z', type: 'MailDeliveryFailed', data: { mailId: 'm1', messageId: '<m1@s>', recipients: ['y@r'], response: '451', attempt: 1, permanent: false, nextAttemptAt: '2026-01-01T00:05:00.000Z' } },
      { ...base, version: 3, position: 3, recordedAt: '2026-01-01T00:00:01.000Z', type: 'MailDelivered', data: { mailId: 'm1', messageId: '<m1@s>', recipients: ['x@r'], response: '250', attempt: 1 } },
    ] as StoredEvent[];
    const mid = outboxFromStream(events)!;
    assert.deepEqual(mid.recipients.map((r) => [r.address, r.state, r.attempts]), [['X@r', 'delivered', 1], ['y@r', 'pending', 1]]);
    assert.equal(mid.status, 'pending');
    assert.equal(mid.nextAttemptAt, '2026-01-01T00:05:00.000Z');
    assert.equal(mid.streamVersion, 3);
    const done = outboxFromStream([
      ...events,
      { ...base, version: 4, position: 4, recordedAt: '2026-01-01T00:05:01.000Z', type: 'MailDelivered', data: { mailId: 'm1', messageId: '<m1@s>', recipients: ['y@r'], response: '250', attempt: 2 } },
      { ...base, version: 5, position: 5, recordedAt: '2026-01-01T00:05:02.000Z', type: 'MailDeliveryFailed', data: { mailId: 'm1', messageId: '<m1@s>', recipients: ['x@r'], response: '550', attempt: 3, permanent: true, nextAttemptAt: null } },
    ] as StoredEvent[])!;
    assert.equal(done.status, 'done');
    assert.deepEqual(done.recipients.map((r) => r.state), ['delivered', 'delivered'], 'a report after the fact does not undo a delivery');
    let viewDoc: OutboxDoc | null = null;
    for (const e of events) if (outbox.keys(e).length) viewDoc = outbox.evolve(viewDoc, e, 'm1') as OutboxDoc | null;
    assert.deepEqual(viewDoc, mid);
  });

  test('SMTP results per recipient from nodemailer info and errors', () => {
    const info = {
      accepted: ['a@x'],
      rejected: ['b@x', 'c@x'],
      rejectedErrors: [
        Object.assign(new Error('r'), { recipient: 'b@x', responseCode: 451, response: '451 later' }),
        Object.assign(new Error('r'), { recipient: 'c@x', responseCode: 550, response: '550 no', permanent: true }),
        // RFC 5321 4.5.3.1.10: an old server's 552 to RCPT means "too many recipients", retried like 452.
        Object.assign(new Error('r'), { recipient: 'd@x', responseCode: 552, response: '552 too many recipients', permanent: true, command: 'RCPT TO' }),
      ],
      response: '250 queued',
    };
    assert.deepEqual(outcomesFromInfo(['A@x', 'b@x', 'c@x', 'd@x'], info), [
      { recipient: 'A@x', kind: 'delivered', response: '250 queued' },
      { recipient: 'b@x', kind: 'temporary', response: '451 later' },
      { recipient: 'c@x', kind: 'permanent', response: '550 no' },
      { recipient: 'd@x', kind: 'temporary', response: '552 too many recipients' },
    ]);
    const refused = Object.assign(new Error('conn'), { code: 'ESOCKET', originalCode: 'ECONNREFUSED', command: 'CONN' });
    assert.deepEqual(outcomesFromError(['a@x'], refused), [{ recipient: 'a@x', kind: 'temporary', response: 'ESOCKET ECONNREFUSED: conn' }]);
    assert.equal(unreachable(refused), true);
    assert.equal(unreachable(Object.assign(new Error('t'), { code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT', command: 'CONN' })), false, 'mid-message: maybe delivered');
    assert.equal(unreachable(Object.assign(new Error('g'), { code: 'EPROTOCOL', responseCode: 421, response: '421 busy', command: 'CONN' })), true);
    const dataRefused = Object.assign(new Error('m'), { code: 'EMESSAGE', responseCode: 554, response: '554 spam', command: 'DATA', permanent: true });
    assert.deepEqual(outcomesFromError(['a@x', 'b@x'], dataRefused).map((o) => o.kind), ['permanent', 'permanent']);
  });

  test('MX planning: preference order, implicit MX, null MX, NXDOMAIN, temporary DNS errors, address literals', async () => {
    const r = (records: { exchange: string; priority: number }[] | string): MxResolver => ({
      resolveMx: async () => {
        if (typeof records === 'string') throw Object.assign(new Error(records), { code: records });
        return records;
      },
    });
    assert.deepEqual(await mxHosts('x.test', r([{ exchange: 'b.x.test.', priority: 20 }, { exchange: 'a.x.test', priority: 10 }])), { hosts: ['a.x.test', 'b.x.test'] });
    assert.deepEqual(await mxHosts('x.test', r('ENODATA')), { hosts: ['x.test'] });
    assert.deepEqual(await mxHosts('x.test', r([])), { hosts: ['x.test'] });
    assert.equal(((await mxHosts('x.test', r([{ exchange: '.', priority: 0 }]))) as { failure: { kind: string } }).failure.kind, 'permanent');
    assert.equal(((await mxHosts('x.test', r('ENOTFOUND'))) as { failure: { kind: string } }).failure.kind, 'permanent');
    assert.equal(((await mxHosts('x.test', r('ESERVFAIL'))) as { failure: { kind: string } }).failure.kind, 'temporary');
    assert.deepEqual(await mxHosts('[192.0.2.1]', r('ENOTFOUND')), { hosts: ['192.0.2.1'] });
  });

  test('options: defaults, claim TTL must outlive the attempt, DKIM and login all-or-nothing', () => {
    const o = relayOptionsFromEnv({});
    assert.equal(o.SMTP_RELAY_HOST, undefined);
    assert.equal(o.RELAY_MX_PORT, 25);
    assert.ok(o.RELAY_CLAIM_TTL_MS > o.RELAY_SMTP_TIMEOUT_MS);
    assert.throws(() => relayOptionsFromEnv({ RELAY_SMTP_TIMEOUT_MS: '5000', RELAY_CLAIM_TTL_MS: '5000' }), /RELAY_CLAIM_TTL_MS/);
    assert.throws(() => relayOptionsFromEnv({ DKIM_DOMAIN: 'x.test' }), /DKIM_SELECTOR/);
    assert.throws(() => relayOptionsFromEnv({ SMTP_RELAY_USER: 'u' }), /SMTP_RELAY_PASS/);
    assert.throws(() => relayOptionsFromEnv({ SMTP_RELAY_PORT: 'abc' }), /SMTP_RELAY_PORT/);
    assert.equal(relayOptionsFromEnv({ SMTP_RELAY_SECURE: 'true', SMTP_RELAY_HOST: 'smtp.sendgrid.net' }).SMTP_RELAY_SECURE, true);
  });
});
