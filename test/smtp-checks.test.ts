/**
 * SPF/DKIM/DMARC with an injected resolver (offline), DMARC_REJECT, the DNS time budget, insecure
 * AUTH when allowed, implicit TLS (SMTPS), per-IP rate limits, graceful close.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { selfSignedCertificate } from '../src/smtp/tls.js';
import { addUser, DOMAIN, fakeResolver, mailEventCount, PASSWORD, rawMessage, receivedWithSubject, sent, SmtpTalk, startTestServer, tempDir, transport, type TestServer } from './support/smtp.js';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const dkimTxt = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

const resolver = fakeResolver(
  {
    'good.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    '_dmarc.good.example': { TXT: [['v=DMARC1; p=reject']] },
    'sel._domainkey.signed.example': { TXT: [[dkimTxt]] },
    '_dmarc.signed.example': { TXT: [['v=DMARC1; p=quarantine']] },
    'strict.example': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
    '_dmarc.strict.example': { TXT: [['v=DMARC1; p=reject']] },
    '_dmarc.lax.example': { TXT: [['v=DMARC1; p=none']] },
  },
  { hang: /slow\.example$/ },
);

/**
 * mailauth computes `t=` twice when no signTime is given: once for the signed header and once for
 * the one it returns, so a signature made across a second boundary never verifies. Fix the time.
 */
async function dkimSignature(unsigned: string): Promise<string> {
  const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  const { signatures } = await dkimSign(unsigned, { signTime: new Date(), signatureData: [{ signingDomain: 'signed.example', selector: 'sel', privateKey: privateKeyPem }] });
  return signatures;
}

let server: TestServer;
before(async () => {
  server = await startTestServer(
    { DMARC_REJECT: 'true', SMTP_ALLOW_INSECURE_AUTH: 'true', SMTPS_PORT: '0', SMTP_DNS_TIMEOUT_MS: '300', SMTP_MAX_RECIPIENTS: '5', MAX_MESSAGE_SIZE: String(2 * 1024 * 1024) },
    resolver,
  );
  await addUser(server, `bob@${DOMAIN}`);
  await addUser(server, `sub@${DOMAIN}`);
});
after(async () => {
  await server.stop();
});

async function deliver(from: string, raw: string): Promise<{ code: number; text: string }> {
  const { talk } = await SmtpTalk.open(server.port);
  await talk.cmd('EHLO client.example.org');
  await talk.envelope(from, [`bob@${DOMAIN}`]);
  const r = await talk.data(raw);
  await talk.quit();
  return r;
}

describe('mail authentication (mailauth, injected resolver)', () => {
  test('SPF pass and DMARC pass are recorded in the event and its Authentication-Results header', async () => {
    const r = await deliver('news@good.example', rawMessage({ subject: 'spf pass', from: 'news@good.example' }));
    assert.equal(r.code, 250, r.text);
    const [e] = await receivedWithSubject(server.store, 'spf pass');
    assert.equal(e?.data.authResults?.spf, 'pass');
    assert.equal(e?.data.authResults?.dmarc, 'pass');
    assert.equal(e?.data.authResults?.dkim, 'none');
    assert.match(e!.data.authResults!.header, /^Authentication-Results: mx\.mail\.test;/);
    assert.match(e!.data.authResults!.header, /spf=pass/);
    assert.match(e!.data.authResults!.header, /dmarc=pass/);
  });

  test('a DKIM-signed message verifies (dkim=pass, DMARC aligned through DKIM)', async () => {
    const unsigned = rawMessage({ subject: 'dkim signed', from: 'ceo@signed.example' });
    const signatures = await dkimSignature(unsigned);
    const r = await deliver('bounces@unrelated.example', signatures + unsigned);
    assert.equal(r.code, 250, r.text);
    const [e] = await receivedWithSubject(server.store, 'dkim signed');
    assert.equal(e?.data.authResults?.dkim, 'pass');
    assert.equal(e?.data.authResults?.dmarc, 'pass');
    // The stored raw message is what was received under this server's Received field, which DKIM
    // does not sign: the signature still verifies from the blob.
    const raw = (await server.store.blobs.get(e!.data.raw.sha256)).toString();
    assert.match(raw, /^Received: from [^\r\n]+\r\n\tby mx\.mail\.test \(mailtrail\) with ESMTP id [^\r\n]+\r\n\tfor <bob@mail\.test>;\r\n\t[^\r\n]+\r\nDKIM-Signature: /);
    assert.equal(raw.slice(raw.indexOf('DKIM-Signature: ')), signatures + unsigned);
  });

  test('a tampered DKIM-signed message does not pass DKIM (body hash mismatch), so DMARC fails', async () => {
    const unsigned = rawMessage({ subject: 'dkim tampered', from: 'ceo@signed.example', body: 'original' });
    const signatures = await dkimSignature(unsigned);
    const r = await deliver('bounces@unrelated.example', signatures + unsigned.replace('original', 'changed!'));
    assert.equal(r.code, 250, 'p=quarantine is not a reject');
    const [e] = await receivedWithSubject(server.store, 'dkim tampered');
    assert.equal(e?.data.authResults?.dkim, 'neutral');
    assert.match(e!.data.authResults!.header, /body hash did not verify/);
    assert.equal(e?.data.authResults?.dmarc, 'fail');
  });

  test('DMARC_REJECT=true: DMARC fail under p=reject is refused with 550 5.7.1 and nothing is stored', async () => {
    const before = await mailEventCount(server.store);
    const puts = server.blobPuts.length;
    const r = await deliver('attacker@strict.example', rawMessage({ subject: 'dmarc reject', from: 'ceo@strict.example' }));
    assert.equal(r.code, 550, r.text);
    assert.match(r.text, /^5\.7\.1 /);
    assert.equal(await mailEventCount(server.store), before);
    assert.equal(server.blobPuts.length, puts, 'no blob stored');
  });

  test('an outcome reused for the same client and envelope is keyed by the From field: a spoofed From after a clean message is still refused', async () => {
    const sender = 'news@relay-test.example';
    const clean = await deliver(sender, rawMessage({ subject: 'from lax first', from: 'x@lax.example' }));
    assert.equal(clean.code, 250, clean.text);
    const spoofed = await deliver(sender, rawMessage({ subject: 'then strict', from: 'ceo@strict.example' }));
    assert.equal(spoofed.code, 550, spoofed.text);
    assert.match(spoofed.text, /^5\.7\.1 /);
    const again = await deliver(sender, rawMessage({ subject: 'lax again', from: 'x@lax.example' }));
    assert.equal(again.code, 250, again.text);
    const [e] = await receivedWithSubject(server.store, 'lax again');
    assert.equal(e?.data.authResults?.dmarc, 'fail', 'the same inputs get the same results');
  });

  test('DMARC fail under p=none is accepted and recorded', async () => {
    const r = await deliver('someone@elsewhere.example', rawMessage({ subject: 'dmarc none', from: 'x@lax.example' }));
    assert.equal(r.code, 250, r.text);
    const [e] = await receivedWithSubject(server.store, 'dmarc none');
    assert.equal(e?.data.authResults?.dmarc, 'fail');
  });

  test('DNS that never answers: the message is accepted within the budget with temperror results, never lost', async () => {
    const r = await deliver('someone@slow.example', rawMessage({ subject: 'slow dns', from: 'someone@slow.example' }));
    assert.equal(r.code, 250, r.text);
    const [e] = await receivedWithSubject(server.store, 'slow dns');
    assert.equal(e?.data.authResults?.spf, 'temperror');
    assert.match(e!.data.authResults!.header, /temperror/);
  });
});

describe('large messages (streamed into the blob store)', () => {
  test('1.5 MB with a 1 MB attachment: raw and attachment blobs are byte-exact', async () => {
    const attachment = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < attachment.length; i++) attachment[i] = (i * 7919) % 251;
    const info = await transport(server.port).sendMail({
      from: 'big@example.org',
      to: `bob@${DOMAIN}`,
      subject: 'large message',
      text: 'see attachment\n'.repeat(20_000),
      attachments: [{ filename: 'data.bin', content: attachment }],
    });
    assert.match(info.response, /^250 /);
    const [e] = await receivedWithSubject(server.store, 'large message');
    assert.ok(e);
    assert.ok(e.data.raw.size > 1024 * 1024, `raw is ${e.data.raw.size} bytes`);
    const raw = await server.store.blobs.get(e.data.raw.sha256);
    assert.equal(raw.length, e.data.raw.size);
    assert.match(raw.toString('latin1', 0, 2000), /Subject: large message/);
    const [a] = e.data.message.attachments;
    assert.equal(a?.filename, 'data.bin');
    assert.ok((await server.store.blobs.get(a!.sha256)).equals(attachment));
  });

  test('over the limit while streaming: 552 5.3.4, nothing stored, the session goes on', async () => {
    const before = await mailEventCount(server.store);
    const puts = server.blobPuts.length;
    const { talk } = await SmtpTalk.open(server.port);
    await talk.cmd('EHLO client.example.org');
    await talk.envelope('big@example.org', [`bob@${DOMAIN}`]);
    const r = await talk.data(rawMessage({ subject: 'too large', body: `${'y'.repeat(998)}\r\n`.repeat(2600) }));
    assert.equal(r.code, 552);
    assert.match(r.text, /^5\.3\.4 /);
    assert.equal(await mailEventCount(server.store), before);
    assert.equal(server.blobPuts.length, puts);
    assert.equal((await talk.cmd('NOOP')).code, 250);
    await talk.quit();
  });
});

describe('TLS and AUTH options', () => {
  test('SMTP_ALLOW_INSECURE_AUTH=true: AUTH PLAIN without TLS works (development)', async () => {
    const { talk } = await SmtpTalk.open(server.port);
    await talk.cmd('EHLO client.example.org');
    const r = await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`);
    assert.equal(r.code, 235, r.text);
    await talk.envelope(`sub@${DOMAIN}`, ['friend@external.example']);
    assert.equal((await talk.data(rawMessage({ subject: 'insecure submission', from: `sub@${DOMAIN}`, to: 'friend@external.example' }))).code, 250);
    const [s] = (await sent(server.store)).filter((e) => e.data.message.subject === 'insecure submission');
    assert.deepEqual(s?.data.envelope.rcptTo, ['friend@external.example']);
    await talk.quit();
  });

  test('implicit TLS on SMTPS_PORT: greeting over TLS, AUTH and submission', async () => {
    const securePort = server.app.smtp.securePort!;
    assert.ok(securePort > 0);
    const socket = tls.connect({ port: securePort, host: '127.0.0.1', rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    assert.equal(socket.getPeerCertificate().subject?.CN, 'mx.mail.test');
    socket.destroy();
    const info = await transport(securePort, { secure: true, user: `sub@${DOMAIN}` }).sendMail({ from: `sub@${DOMAIN}`, to: `bob@${DOMAIN}`, subject: 'over smtps', text: 'x' });
    assert.match(info.response, /^250 /);
    const [e] = await receivedWithSubject(server.store, 'over smtps');
    assert.equal(e?.data.envelope.tls, true);
    assert.equal(e?.data.envelope.authUser, `sub@${DOMAIN}`);
  });
});

describe('recipient and connection limits', () => {
  test('SMTP_MAX_RECIPIENTS: the recipient past the limit gets 452 4.5.3, the message still goes to the others', async () => {
    const { talk } = await SmtpTalk.open(server.port);
    await talk.cmd('EHLO client.example.org');
    assert.equal((await talk.cmd(`AUTH PLAIN ${b64(`\0sub@${DOMAIN}\0${PASSWORD}`)}`)).code, 235);
    const replies = await talk.envelope(`sub@${DOMAIN}`, ['r1@x.example', 'r2@x.example', 'r3@x.example', 'r4@x.example', 'r5@x.example', 'r6@x.example']);
    assert.deepEqual(replies.map((r) => r.code), [250, 250, 250, 250, 250, 250, 452]);
    assert.match(replies.at(-1)!.text, /^4\.5\.3 /);
    assert.equal((await talk.data(rawMessage({ subject: 'five recipients', from: `sub@${DOMAIN}` }))).code, 250);
    const [s] = (await sent(server.store)).filter((e) => e.data.message.subject === 'five recipients');
    assert.equal(s?.data.envelope.rcptTo.length, 5);
    await talk.quit();
  });
});

describe('per-IP rate limits (loopback not exempt) and SMTP_MAX_CONNECTIONS', () => {
  let limited: TestServer;
  before(async () => {
    limited = await startTestServer({ RATE_LIMIT_LOOPBACK: 'true', SMTP_CONNECTION_RATE_PER_IP: '3', SMTP_MESSAGE_RATE_PER_IP: '2' });
    await addUser(limited, `bob@${DOMAIN}`);
  });
  after(async () => {
    await limited.stop();
  });

  test('messages per IP: past the rate, MAIL FROM answers 451 4.7.1', async () => {
    const { talk } = await SmtpTalk.open(limited.port);
    await talk.cmd('EHLO client.example.org');
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await talk.cmd('MAIL FROM:<a@example.org>');
      codes.push(r.code);
      if (r.code === 451) assert.match(r.text, /^4\.7\.1 /);
      await talk.cmd('RSET');
    }
    // The burst allowance is the rate itself; past it, refused.
    assert.deepEqual(codes.slice(0, 2), [250, 250]);
    assert.ok(codes.includes(451), codes.join(' '));
    await talk.quit();
  });

  test('connections per IP: past the rate, 421 4.7.0 at connect', async () => {
    // The previous test used one connection of the burst of 3.
    const greetings: number[] = [];
    for (let i = 0; i < 6; i++) {
      const { talk, greeting } = await SmtpTalk.open(limited.port);
      greetings.push(greeting.code);
      if (greeting.code === 421) assert.match(greeting.text, /^4\.7\.0 /);
      talk.destroy();
    }
    assert.ok(greetings.includes(421), greetings.join(' '));
    assert.deepEqual(greetings.slice(0, 2), [220, 220]);
  });

  test('SMTP_MAX_CONNECTIONS: a connection past the limit gets 421', async () => {
    const capped = await startTestServer({ SMTP_MAX_CONNECTIONS: '2' });
    const a = await SmtpTalk.open(capped.port);
    const b = await SmtpTalk.open(capped.port);
    const c = await SmtpTalk.open(capped.port);
    assert.deepEqual([a.greeting.code, b.greeting.code, c.greeting.code], [220, 220, 421]);
    for (const x of [a, b, c]) x.talk.destroy();
    await capped.stop();
  });
});

describe('TLS_KEY / TLS_CERT', () => {
  test('the operator’s certificate is used for STARTTLS; a key that does not match stops start-up naming the variables', async () => {
    const dir = tempDir('tls');
    const mine = selfSignedCertificate('smtp.operator.example');
    writeFileSync(path.join(dir, 'key.pem'), mine.key);
    writeFileSync(path.join(dir, 'cert.pem'), mine.cert);
    const s = await startTestServer({ TLS_KEY: path.join(dir, 'key.pem'), TLS_CERT: path.join(dir, 'cert.pem') });
    const { talk } = await SmtpTalk.open(s.port);
    await talk.cmd('EHLO client.example.org');
    assert.equal((await talk.starttls()).code, 220);
    assert.equal(talk.peerCertificate()?.subject?.CN, 'smtp.operator.example');
    await talk.quit();
    await s.stop();
    writeFileSync(path.join(dir, 'other-key.pem'), selfSignedCertificate('x').key);
    await assert.rejects(startTestServer({ TLS_KEY: path.join(dir, 'other-key.pem'), TLS_CERT: path.join(dir, 'cert.pem') }), /TLS_KEY\/TLS_CERT/);
    await assert.rejects(startTestServer({ TLS_KEY: path.join(dir, 'missing.pem'), TLS_CERT: path.join(dir, 'cert.pem') }), /TLS_KEY: cannot read/);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('observer (metrics hook)', () => {
  test('is told of connections and of each transaction with its outcome and reason', async () => {
    const seen: string[] = [];
    const s = await startTestServer({}, fakeResolver(), {
      smtpObserver: { connection: () => seen.push('connection'), transaction: (t) => seen.push(`${t.outcome} ${t.reason} ${t.bytes > 0}`) },
    });
    await addUser(s, `bob@${DOMAIN}`);
    const { talk } = await SmtpTalk.open(s.port);
    await talk.cmd('EHLO client.example.org');
    await talk.envelope('a@example.org', [`bob@${DOMAIN}`]);
    await talk.data(rawMessage({ subject: 'observed' }));
    await talk.envelope('a@example.org', [`bob@${DOMAIN}`]);
    await talk.data(rawMessage({ subject: 'observed nul', body: 'a\0b' }));
    await talk.envelope('a@example.org', [`bob@${DOMAIN}`]);
    await talk.quit();
    await s.stop();
    assert.deepEqual(seen, ['connection', 'accepted ok true', 'rejected 5.6.0 true', 'abandoned abandoned false']);
  });
});

describe('graceful close', () => {
  test('close() lets a message being received finish (250, stored), tells idle sessions 421, then stops', async () => {
    const s = await startTestServer();
    await addUser(s, `bob@${DOMAIN}`);
    const idle = (await SmtpTalk.open(s.port)).talk;
    const busy = (await SmtpTalk.open(s.port)).talk;
    await busy.cmd('EHLO client.example.org');
    await busy.envelope('a@example.org', [`bob@${DOMAIN}`]);
    assert.equal((await busy.cmd('DATA')).code, 354);
    // The 354 means the server is receiving this message: close() must let it finish.
    busy.write('Subject: in flight at shutdown\r\n\r\nfirst half\r\n');
    const closing = s.app.smtp.close();
    const idleReply = await idle.reply();
    assert.equal(idleReply.code, 421);
    busy.write('second half\r\n.\r\n');
    const done = await busy.reply();
    assert.equal(done.code, 250, done.text);
    await closing;
    const [e] = await receivedWithSubject(s.store, 'in flight at shutdown');
    assert.ok(e, 'stored');
    assert.equal((await s.store.blobs.get(e.data.message.text!.sha256)).toString(), 'first half\nsecond half\n');
    await busy.closedPromise;
    await s.stop();
  });
  test('a message that never ends does not hold close() for longer than SMTP_SHUTDOWN_TIMEOUT_MS allows: the connection is closed, nothing is stored, the store stays usable', { timeout: 30_000 }, async () => {
    const s = await startTestServer({ SMTP_SHUTDOWN_TIMEOUT_MS: '300' });
    try {
      await addUser(s, `bob@${DOMAIN}`);
      const stalled = (await SmtpTalk.open(s.port)).talk;
      await stalled.cmd('EHLO client.example.org');
      await stalled.envelope('a@example.org', [`bob@${DOMAIN}`]);
      assert.equal((await stalled.cmd('DATA')).code, 354);
      stalled.write('Subject: never finished\r\n\r\nthe client stops here\r\n');
      // Resolving at all is the point: a client that stalls must not hold a shutdown forever.
      await s.app.smtp.close();
      await stalled.closedPromise;
      assert.equal((await receivedWithSubject(s.store, 'never finished')).length, 0, 'a message without its end is not stored');
      const account = await s.store.events.readStream(`account-bob@${DOMAIN}`);
      assert.ok(account.length > 0, 'the store still reads after the SMTP side stopped');
    } finally {
      await s.stop();
    }
  });
});
