/**
 * The pure core of the SMTP side: policy decisions, the DATA guard, limits, header rewriting,
 * message summaries, event planning, the DNS wrappers. No sockets, no store.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import { inboundMailId, sentMailId } from '../src/mail/ids.js';
import { planInbound, planSent, submissionBcc, type LocalMailbox } from '../src/mail/commands.js';
import { headerFacts, headerSectionEnd, rewriteHeaderSection, rfc5322Date } from '../src/mail/headers.js';
import { headerDate, htmlToSnippetText, snippetOf } from '../src/mail/summary.js';
import { authResultsFrom, temperrorResults } from '../src/smtp/auth-check.js';
import { DataGuard } from '../src/smtp/data-guard.js';
import { receivedHeader } from '../src/smtp/received.js';
import { budgetedResolver, cachingResolver } from '../src/smtp/dns.js';
import { FailureLimiter, isLoopback, RateLimiter, takeToken } from '../src/security/limits.js';
import { derInteger, selfSignedCertificate } from '../src/smtp/tls.js';
import { decideDmarc, decideHeaderFrom, decideRecipient, decideSender, parseAddress, replies } from '../src/smtp/policy.js';

const bob: LocalMailbox = { id: 'mb-bob', userId: 'u-bob', address: 'bob@mail.test' };
const carol: LocalMailbox = { id: 'mb-carol', userId: 'u-carol', address: 'carol@mail.test' };

describe('addresses and recipients', () => {
  test('only plain addresses parse', () => {
    assert.deepEqual(parseAddress('Bob@Mail.Test'), { ok: true, address: 'Bob@Mail.Test', local: 'Bob', domain: 'mail.test' });
    assert.deepEqual(parseAddress('anna@bücher.example'), { ok: true, address: 'anna@xn--bcher-kva.example', local: 'anna', domain: 'xn--bcher-kva.example' });
    assert.equal(parseAddress('ännä@example.org').ok, false, 'non-ASCII local parts are not accepted');
    assert.deepEqual(parseAddress('Bob@LocalHost'), { ok: true, address: 'Bob@LocalHost', local: 'Bob', domain: 'localhost' }, 'localhost in any case, like any domain');
    for (const bad of ['a%b@mail.test', 'host!user@mail.test', '"quoted"@mail.test', 'a@[192.0.2.1]', 'a@mail.test.', 'a@b@mail.test', 'no-at-all', `${'x'.repeat(250)}@mail.test`]) {
      assert.equal(parseAddress(bad).ok, false, bad);
    }
  });

  test('local domain: existing mailbox or 550 5.1.1; other domains: relay only when authenticated, else 554 5.7.1', () => {
    const p = parseAddress('bob@mail.test');
    assert.deepEqual(decideRecipient({ parsed: p, domainIsLocal: true, mailbox: bob, authenticated: false }), { kind: 'local', address: 'bob@mail.test', mailbox: bob });
    assert.deepEqual(decideRecipient({ parsed: p, domainIsLocal: true, mailbox: null, authenticated: true }), { kind: 'reject', reply: replies.unknownMailbox('bob@mail.test') });
    const ext = parseAddress('x@external.example');
    assert.deepEqual(decideRecipient({ parsed: ext, domainIsLocal: false, mailbox: null, authenticated: true }), { kind: 'relay', address: 'x@external.example' });
    const denied = decideRecipient({ parsed: ext, domainIsLocal: false, mailbox: null, authenticated: false });
    assert.equal(denied.kind === 'reject' && `${denied.reply.code} ${denied.reply.enhanced}`, '554 5.7.1');
    const hack = decideRecipient({ parsed: parseAddress('x%external.example@mail.test'), domainIsLocal: true, mailbox: null, authenticated: true });
    assert.equal(hack.kind === 'reject' && `${hack.reply.code} ${hack.reply.enhanced}`, '553 5.1.3');
  });

  test('senders: authenticated users send as their own mailbox only; unauthenticated clients not as a local address', () => {
    const user = { id: 'u-bob', email: 'bob@mail.test' };
    const own = decideSender({ address: 'bob@mail.test', parsed: parseAddress('bob@mail.test'), domainIsLocal: true, user, senderMailbox: bob });
    assert.deepEqual(own, { ok: true, mailbox: bob });
    const other = decideSender({ address: 'carol@mail.test', parsed: parseAddress('carol@mail.test'), domainIsLocal: true, user, senderMailbox: carol });
    assert.equal(!other.ok && `${other.reply.code} ${other.reply.enhanced}`, '553 5.7.1');
    const nobody = decideSender({ address: 'x@external.example', parsed: parseAddress('x@external.example'), domainIsLocal: false, user, senderMailbox: null });
    assert.equal(nobody.ok, false);
    assert.equal(decideSender({ address: '', parsed: null, domainIsLocal: false, user, senderMailbox: null }).ok, false);
    assert.deepEqual(decideSender({ address: '', parsed: null, domainIsLocal: false, user: null, senderMailbox: null }), { ok: true, mailbox: null });
    assert.deepEqual(decideSender({ address: 'x@external.example', parsed: parseAddress('x@external.example'), domainIsLocal: false, user: null, senderMailbox: null }), { ok: true, mailbox: null });
    const spoof = decideSender({ address: 'bob@mail.test', parsed: parseAddress('bob@mail.test'), domainIsLocal: true, user: null, senderMailbox: null });
    assert.equal(!spoof.ok && `${spoof.reply.code} ${spoof.reply.enhanced}`, '553 5.7.1');
  });

  test('From header of a submission, DMARC reject, loopback', () => {
    assert.equal(decideHeaderFrom([{ name: 'Bob', address: 'BOB@mail.test' }], ['bob@mail.test']), null);
    assert.equal(decideHeaderFrom([{ name: '', address: 'ceo@mail.test' }], ['bob@mail.test'])?.code, 550);
    assert.equal(decideHeaderFrom([], ['bob@mail.test'])?.code, 550);
    assert.equal(decideDmarc({ result: 'fail', policy: 'reject', domain: 'x.example' }, true)?.code, 550);
    assert.equal(decideDmarc({ result: 'fail', policy: 'reject', domain: 'x.example' }, false), null);
    assert.equal(decideDmarc({ result: 'fail', policy: 'quarantine', domain: 'x.example' }, true), null);
    assert.equal(decideDmarc({ result: 'temperror', policy: 'reject', domain: 'x.example' }, true), null);
    assert.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('::ffff:127.0.0.2'));
    assert.ok(!isLoopback('192.0.2.1') && !isLoopback('::ffff:10.0.0.1'));
  });
});

describe('DATA guard', () => {
  const message = (middle: string): Buffer => Buffer.from(`Subject: x\r\n\r\nline one\r\n${middle}MAIL FROM:<x@y.z>\r\n`, 'latin1');

  /** Feeds `bytes` cut at every pair of positions (3 chunks) and byte by byte; all must agree. */
  function verdicts(bytes: Buffer, max = 1 << 20): Set<string> {
    const out = new Set<string>();
    const run = (chunks: Buffer[]): void => {
      const g = new DataGuard(max);
      let v = null;
      for (const c of chunks) v ??= g.feed(c);
      v ??= g.end();
      out.add(v ? `${v.code} ${v.enhanced}` : 'ok');
    };
    for (let i = 0; i <= bytes.length; i++) {
      for (let j = i; j <= bytes.length; j += 3) run([bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)]);
    }
    run([...bytes].map((b) => Buffer.from([b])));
    return out;
  }

  for (const seq of ['\n.\n', '\r\n.\n', '\n.\r\n', '\r.\r', '\r\n.\r', '\r.\r\n', '\r.\n', '\n.\r', '\r\n.\r\r\n', '\n\n.\n\n']) {
    test(`${JSON.stringify(seq)} is refused however the bytes are cut`, () => {
      assert.deepEqual(verdicts(message(seq)), new Set(['554 5.6.0']));
    });
  }

  for (const [name, body] of [
    ['a lone dot between CRLFs (sent dot-stuffed)', 'Subject: x\r\n\r\na\r\n.\r\nb\r\n'],
    ['a dot at the very start, then CRLF', '.\r\nSubject: x\r\n\r\n'],
    ['dots inside lines and dot-led lines', 'Subject: x\r\n\r\na.b\r\n.hidden\r\n..\r\n\n.x\r\n'],
    ['bare LFs away from dots', 'Subject: x\n\nbody\nmore\n'],
    ['empty', ''],
  ] as const) {
    test(`${name}: accepted`, () => {
      assert.deepEqual(verdicts(Buffer.from(body, 'latin1')), new Set(['ok']));
    });
  }

  test('a message that starts with a bare-LF lone dot is refused', () => {
    assert.deepEqual(verdicts(Buffer.from('.\nMAIL FROM:<a@b.c>\r\n')), new Set(['554 5.6.0']));
  });

  test('NUL bytes: 554 5.6.0; size: exactly the limit is fine, one byte more is 552 5.3.4', () => {
    assert.deepEqual(verdicts(Buffer.from('a\0b')), new Set(['554 5.6.0']));
    assert.deepEqual(verdicts(Buffer.alloc(10, 0x61), 10), new Set(['ok']));
    assert.deepEqual(verdicts(Buffer.alloc(11, 0x61), 10), new Set(['552 5.3.4']));
  });
});

describe('limits', () => {
  test('token bucket: a burst of the rate, then one per refill interval', () => {
    let b = takeToken(undefined, 0, 2, 60_000);
    assert.ok(b.allowed);
    b = takeToken(b.bucket, 0, 2, 60_000);
    assert.ok(b.allowed);
    b = takeToken(b.bucket, 1000, 2, 60_000);
    assert.equal(b.allowed, false);
    b = takeToken(b.bucket, 31_000, 2, 60_000);
    assert.ok(b.allowed, 'half a window refills one token');
  });

  test('RateLimiter and FailureLimiter keep one state per key', () => {
    let now = 0;
    const rate = new RateLimiter(1, 1000, () => now);
    assert.ok(rate.hit('a'));
    assert.ok(!rate.hit('a'));
    assert.ok(rate.hit('b'));
    now = 1000;
    assert.ok(rate.hit('a'));
    const failures = new FailureLimiter(2, 1000, () => now);
    failures.fail('k');
    assert.ok(!failures.blocked('k'));
    failures.fail('k');
    assert.ok(failures.blocked('k'));
    now = 2500;
    assert.ok(!failures.blocked('k'), 'failures leave the window');
    failures.fail('k');
    failures.fail('k');
    failures.clear('k');
    assert.ok(!failures.blocked('k'));
  });
});

describe('headers of submissions', () => {
  test('the end of the header section, CRLF or LF', () => {
    assert.equal(headerSectionEnd(Buffer.from('A: b\r\nC: d\r\n\r\nbody')), 14);
    assert.equal(headerSectionEnd(Buffer.from('A: b\n\nbody')), 6);
    assert.equal(headerSectionEnd(Buffer.from('\r\nbody')), 2);
    assert.equal(headerSectionEnd(Buffer.from('A: b\r\nC: d\r\n')), -1);
  });

  test('Message-ID/Date added on top, Bcc (folded too) removed, the rest untouched', () => {
    const head = Buffer.from('Subject: s\r\nBcc: a@x.example,\r\n  b@x.example\r\nTo: t@x.example\r\n\r\n');
    assert.deepEqual(headerFacts(head), { hasMessageId: false, hasDate: false, hasBcc: true, hasFrom: false, fromFields: 0 });
    assert.equal(headerFacts(Buffer.from('From : a@x.example\r\nFrom: b@x.example\r\n\r\n')).fromFields, 2, 'blanks before the colon (obsolete syntax) still make a From field');
    const out = rewriteHeaderSection(head, { prepend: ['Message-ID: <m@h>', 'Date: d'], dropBcc: true }).toString();
    assert.equal(out, 'Message-ID: <m@h>\r\nDate: d\r\nSubject: s\r\nTo: t@x.example\r\n\r\n');
    const lf = rewriteHeaderSection(Buffer.from('Subject: s\nBCC: z@x\n\n'), { prepend: ['Date: d'], dropBcc: true }).toString();
    assert.equal(lf, 'Date: d\nSubject: s\n\n');
    assert.match(rfc5322Date(new Date(Date.UTC(2026, 10, 23, 10, 0, 0))), /^Mon, 23 Nov 2026 10:00:00 \+0000$/);
  });

  test('Received trace field: IP literals, printable HELO only, folded in the message\'s own line ending', () => {
    const at = new Date(Date.UTC(2026, 10, 23, 10, 0, 0));
    const facts = { helo: 'client.example', remoteAddress: '::ffff:192.0.2.7', by: 'mx.mail.test', protocol: 'ESMTPS', id: 'q1', recipient: 'bob@mail.test', at };
    assert.equal(
      receivedHeader(facts),
      'Received: from client.example ([192.0.2.7])\n\tby mx.mail.test (mailtrail) with ESMTPS id q1\n\tfor <bob@mail.test>;\n\tMon, 23 Nov 2026 10:00:00 +0000',
    );
    const v6 = receivedHeader({ ...facts, helo: '', remoteAddress: '2001:db8::1', recipient: null });
    assert.match(v6, /^Received: from \[IPv6:2001:db8::1\] \(\[IPv6:2001:db8::1\]\)\n\tby mx\.mail\.test \(mailtrail\) with ESMTPS id q1;\n/);
    assert.match(receivedHeader({ ...facts, helo: 'evil\tX-Injected: yes' }), /^Received: from evil\?X-Injected:\?yes \(/);
    const lf = rewriteHeaderSection(Buffer.from('Subject: s\n\n'), { prepend: [receivedHeader(facts)], dropBcc: false }).toString();
    assert.equal(lf, `${receivedHeader(facts)}\nSubject: s\n\n`);
    const crlf = rewriteHeaderSection(Buffer.from('Subject: s\r\n\r\n'), { prepend: [receivedHeader(facts)], dropBcc: false }).toString();
    assert.equal(crlf, `${receivedHeader(facts).replaceAll('\n', '\r\n')}\r\nSubject: s\r\n\r\n`);
  });
});

describe('message summary', () => {
  test('Date header: parsed to ISO, null when missing or invalid (never "now")', () => {
    assert.equal(headerDate([{ key: 'date', line: 'Date: Sun, 23 Nov 2026 10:00:00\r\n +0100' }]), '2026-11-23T09:00:00.000Z');
    assert.equal(headerDate([{ key: 'date', line: 'Date: the day after tomorrow' }]), null);
    assert.equal(headerDate(false), null);
  });

  test('snippets from text, or from HTML without markup, scripts or styles', () => {
    assert.equal(htmlToSnippetText('<style>p{}</style><p>Caf&eacute; &amp; <b>tea</b>&#33;</p><script>x()</script>').replace(/\s+/g, ' ').trim(), 'Caf&eacute; & tea !');
    assert.equal(snippetOf(undefined, '<p>Hi&nbsp;there</p>'), 'Hi there');
    assert.equal(snippetOf('a\n\n  b', '<p>ignored</p>'), 'a b');
    assert.equal(snippetOf('x'.repeat(500), undefined).length, 200);
  });
});

describe('events a message becomes', () => {
  const raw = { sha256: 'a'.repeat(64), size: 10 };
  const message = { messageId: '<m@x>', subject: 's', from: [], to: [{ name: '', address: 'bob@mail.test' }], cc: [], date: null, inReplyTo: null, references: [], snippet: '', text: null, html: null, attachments: [] };
  const envelope = { mailFrom: 'a@x.example', remoteAddress: '127.0.0.1', helo: 'h', tls: false, authUser: null };

  test('one MailReceived per mailbox, deterministic ids, each envelope naming only its recipient', () => {
    const dedupe = { messageId: '<m@x>', sha256: raw.sha256 };
    const planned = planInbound({
      deliveries: [
        { mailbox: bob, recipient: 'bob@mail.test' },
        { mailbox: carol, recipient: 'carol@mail.test' },
        { mailbox: bob, recipient: 'BOB@mail.test' },
      ],
      dedupe,
      raw,
      message,
      envelope,
      authResults: null,
    });
    assert.equal(planned.length, 2);
    assert.equal(planned[0]!.mailId, inboundMailId('mb-bob', '<m@x>', raw.sha256));
    assert.equal(planned[0]!.streamId, `mail-${planned[0]!.mailId}`);
    assert.notEqual(planned[0]!.mailId, inboundMailId('mb-bob', '<m@x>', 'b'.repeat(64)));
    assert.notEqual(planned[0]!.mailId, inboundMailId('mb-carol', '<m@x>', raw.sha256));
    const data = planned.map((p) => (p.event.type === 'MailReceived' ? p.event.data.envelope.rcptTo : null));
    assert.deepEqual(data, [['bob@mail.test'], ['carol@mail.test']]);
  });

  test('MailSent: the relay gets only the external recipients; Bcc = envelope recipients not in To/Cc plus a Bcc header', () => {
    const bcc = submissionBcc(['bob@mail.test', 'hidden@x.example', 'carol@mail.test'], message, [{ name: 'C', address: 'carol@mail.test' }]);
    assert.deepEqual(bcc, [
      { name: 'C', address: 'carol@mail.test' },
      { name: '', address: 'hidden@x.example' },
    ]);
    const p = planSent({ sender: bob, mailFrom: 'bob@mail.test', relayTo: ['hidden@x.example'], dedupe: { messageId: '<m@x>', sha256: raw.sha256 }, messageId: '<m@x>', raw, message, bcc });
    assert.equal(p.mailId, sentMailId('mb-bob', '<m@x>', raw.sha256, ['Hidden@x.example']));
    assert.notEqual(p.mailId, sentMailId('mb-bob', '<m@x>', raw.sha256, ['other@x.example']), 'the same message sent on to others is another sending');
    assert.notEqual(p.mailId, inboundMailId('mb-bob', '<m@x>', raw.sha256), 'sent copy and inbox copy are different mails');
    assert.ok(p.event.type === 'MailSent' && p.event.data.wasDraft === false && p.event.data.envelope.rcptTo.length === 1);
  });
});

describe('authentication results and DNS', () => {
  test('mailauth answers map onto the event; a failure or timeout is temperror everywhere', () => {
    const r = authResultsFrom({
      dkim: { results: [{ status: { result: 'fail' } }, { status: { result: 'pass' } }] },
      spf: { status: { result: 'softfail' } },
      dmarc: { status: { result: 'pass' }, policy: 'reject', domain: 'x.example' },
      arc: false,
      bimi: false,
      headers: 'Received-SPF: softfail\r\nAuthentication-Results: mx;\r\n spf=softfail\r\n',
    });
    assert.deepEqual(r.results, { spf: 'softfail', dkim: 'pass', dmarc: 'pass', arc: 'none', header: 'Authentication-Results: mx;\r\n spf=softfail' });
    assert.deepEqual(r.dmarc, { result: 'pass', policy: 'reject', domain: 'x.example' });
    const t = temperrorResults('mx', 'budget (2000 ms) spent');
    assert.equal(t.results.dmarc, 'temperror');
    assert.doesNotMatch(t.results.header, /\(2000/, 'parentheses in the reason do not break the comment');
  });

  test('cachingResolver: one query for concurrent and repeated look-ups, negative answers cached too', async () => {
    let calls = 0;
    const inner = async (name: string): Promise<unknown> => {
      calls += 1;
      if (name === 'none.example') throw Object.assign(new Error('nx'), { code: 'ENOTFOUND' });
      return [['v=spf1 -all']];
    };
    const r = cachingResolver(inner);
    await Promise.all([r('a.example', 'TXT'), r('A.EXAMPLE', 'TXT'), r('a.example', 'TXT')]);
    assert.equal(calls, 1);
    await assert.rejects(r('none.example', 'TXT'));
    await assert.rejects(r('none.example', 'TXT'));
    assert.equal(calls, 2);
  });

  test('budgetedResolver: past the deadline every look-up fails with ETIMEOUT', async () => {
    const never = (): Promise<unknown> => new Promise(() => undefined);
    await assert.rejects(budgetedResolver(never, Date.now() + 20)('slow.example', 'TXT'), (e: { code?: string }) => e.code === 'ETIMEOUT');
    await assert.rejects(budgetedResolver(never, Date.now() - 1)('slow.example', 'TXT'), (e: { code?: string }) => e.code === 'ETIMEOUT');
    assert.deepEqual(await budgetedResolver(async () => ['ok'], Date.now() + 1000)('x.example', 'TXT'), ['ok']);
  });
});

describe('self-signed certificate', () => {
  test('DER integers are minimal (a serial starting with 0x00 must not keep it)', () => {
    assert.equal(derInteger(Buffer.from([0x00, 0x01])).toString('hex'), '020101');
    assert.equal(derInteger(Buffer.from([0x00, 0x00, 0x80])).toString('hex'), '02020080');
    assert.equal(derInteger(Buffer.from([0x80, 0x01])).toString('hex'), '0203008001');
    assert.equal(derInteger(Buffer.from([0x00])).toString('hex'), '020100');
  });

  test('generated certificates load, match their key and name the host', () => {
    for (let i = 0; i < 50; i++) {
      const { key, cert } = selfSignedCertificate('mx.mail.test');
      tls.createSecureContext({ key, cert });
      const x509 = new X509Certificate(cert);
      assert.ok(x509.checkPrivateKey(createPrivateKey(key)));
      assert.equal(x509.checkHost('mx.mail.test'), 'mx.mail.test');
      assert.ok(x509.verify(x509.publicKey));
    }
  });
});
