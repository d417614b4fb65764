/**
 * The DNS records mailtrail asks for, the live check against an injected resolver (every found,
 * missing and wrong case), and the two operator commands.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { checkDomain, dkimValue, expectedRecords, type DomainSetup, type RecordCheck } from '../src/dns/records.js';
import { dkimPublicKey, formatChecks, generateDkimKey, quoteTxt, zoneLine } from '../src/ops/dns.js';
import type { DnsResolver } from '../src/smtp/dns.js';
import { runScript } from './support/process.js';

const key = generateDkimKey();
const setup: DomainSetup = { domain: 'example.com', host: 'mail.example.com', ipv4: '203.0.113.7', ipv6: '2001:db8::7', dkim: { selector: 'mail', publicKey: key.publicKey } };

describe('expectedRecords', () => {
  test('every record a mail domain needs, with the values to publish', () => {
    const records = expectedRecords(setup);
    assert.deepEqual(
      records.map((r) => [r.kind, r.name, r.type, r.value]),
      [
        ['MX', 'example.com', 'MX', '10 mail.example.com.'],
        ['A', 'mail.example.com', 'A', '203.0.113.7'],
        ['AAAA', 'mail.example.com', 'AAAA', '2001:db8::7'],
        ['SPF', 'example.com', 'TXT', 'v=spf1 mx -all'],
        ['DKIM', 'mail._domainkey.example.com', 'TXT', `v=DKIM1; k=rsa; p=${key.publicKey}`],
        ['DMARC', '_dmarc.example.com', 'TXT', 'v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com; adkim=s; aspf=s'],
        ['MTA-STS', '_mta-sts.example.com', 'TXT', 'v=STSv1; id=1'],
        ['MTA-STS policy', 'https://mta-sts.example.com/.well-known/mta-sts.txt', 'HTTPS file', 'version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 604800'],
        ['TLS-RPT', '_smtp._tls.example.com', 'TXT', 'v=TLSRPTv1; rua=mailto:postmaster@example.com'],
        ['PTR', '7.113.0.203.in-addr.arpa', 'PTR', 'mail.example.com.'],
      ],
    );
  });

  test('without addresses or a DKIM key: no A, AAAA, DKIM or PTR; reports go where asked', () => {
    const records = expectedRecords({ domain: 'example.org', host: 'mx.example.org', reportTo: 'dmarc@example.org' });
    assert.deepEqual(records.map((r) => r.kind), ['MX', 'SPF', 'DMARC', 'MTA-STS', 'MTA-STS policy', 'TLS-RPT']);
    assert.match(records.find((r) => r.kind === 'DMARC')!.value, /rua=mailto:dmarc@example\.org;/);
    assert.match(records.find((r) => r.kind === 'TLS-RPT')!.value, /rua=mailto:dmarc@example\.org$/);
  });

  test('a PEM public key and its base64 body give the same DKIM value', () => {
    const pem = createPublicKey(createPrivateKey(key.privateKeyPem)).export({ type: 'spki', format: 'pem' }).toString();
    assert.equal(dkimValue(pem), `v=DKIM1; k=rsa; p=${key.publicKey}`);
  });

  test('zone lines: TXT values quoted, split into strings of at most 255 characters', () => {
    const dkim = expectedRecords(setup).find((r) => r.kind === 'DKIM')!;
    const line = zoneLine(dkim);
    assert.match(line, /^mail\._domainkey\.example\.com\.\t3600\tIN\tTXT\t"v=DKIM1; k=rsa; p=/);
    const strings = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
    assert.ok(strings.length >= 2 && strings.every((s) => s.length <= 255));
    assert.equal(strings.join(''), dkim.value);
    assert.equal(quoteTxt('say "hi" \\ bye'), '"say \\"hi\\" \\\\ bye"');
    assert.equal(zoneLine(expectedRecords(setup)[0]!), 'example.com.\t3600\tIN\tMX\t10 mail.example.com.');
  });
});

/** A zone as the resolver would answer it: name → type → answer, or an error code. */
type Zone = Record<string, Partial<Record<'MX' | 'TXT', unknown[] | string>>>;

function resolverFor(zone: Zone): DnsResolver {
  return async (name, rrtype) => {
    const answer = zone[name]?.[rrtype as 'MX' | 'TXT'];
    if (answer === undefined) throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: zone[name] ? 'ENODATA' : 'ENOTFOUND' });
    if (typeof answer === 'string') throw Object.assign(new Error(`query ${answer} ${name}`), { code: answer });
    return answer;
  };
}

const txt = (...values: string[]): string[][] => values.map((v) => (v.match(/.{1,255}/g) ?? []) as string[]);

const goodZone = (): Zone => ({
  'example.com': { MX: [{ exchange: 'mail.example.com', priority: 10 }], TXT: txt('google-site-verification=abc', 'v=spf1 mx -all') },
  '_dmarc.example.com': { TXT: txt('v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com') },
  'mail._domainkey.example.com': { TXT: txt(`v=DKIM1; k=rsa; p=${key.publicKey}`) },
});

async function check(zone: Zone, s: DomainSetup = setup): Promise<Record<string, RecordCheck>> {
  return Object.fromEntries((await checkDomain(resolverFor(zone), s)).map((c) => [c.kind, c]));
}

describe('checkDomain against an injected resolver', () => {
  test('everything published: MX, SPF, DMARC and DKIM found', async () => {
    const checks = await check(goodZone());
    assert.deepEqual(Object.keys(checks).sort(), ['DKIM', 'DMARC', 'MX', 'SPF']);
    for (const c of Object.values(checks)) assert.equal(c.status, 'found', `${c.kind}: ${c.detail}`);
    assert.deepEqual(checks.MX!.actual, ['10 mail.example.com']);
    assert.deepEqual(checks.SPF!.actual, ['v=spf1 mx -all'], 'only the SPF record among the TXT records');
  });

  test('without a DKIM key, DKIM is not looked up', async () => {
    const { dkim: _, ...noDkim } = setup;
    assert.deepEqual(Object.keys(await check(goodZone(), noDkim)).sort(), ['DMARC', 'MX', 'SPF']);
  });

  test('MX: missing, and wrong when it points elsewhere', async () => {
    const zone = goodZone();
    delete zone['example.com']!.MX;
    assert.equal((await check(zone)).MX!.status, 'missing');
    zone['example.com']!.MX = [{ exchange: 'mx.other.example.net.', priority: 10 }];
    const mx = (await check(zone)).MX!;
    assert.equal(mx.status, 'wrong');
    assert.equal(mx.detail, 'MX points to mx.other.example.net, not to mail.example.com');
    assert.equal(mx.expected, '10 mail.example.com.');
  });

  test('the whole domain missing: every record missing with what to publish', async () => {
    const checks = await check({});
    for (const kind of ['MX', 'SPF', 'DMARC', 'DKIM']) {
      assert.equal(checks[kind]!.status, 'missing', kind);
      assert.equal(checks[kind]!.detail, 'no such record');
    }
    assert.equal(checks.SPF!.expected, 'v=spf1 mx -all');
  });

  test('SPF: missing among other TXT records, not allowing this server, +all, two records', async () => {
    const zone = goodZone();
    const spf = async (...values: string[]): Promise<RecordCheck> => {
      zone['example.com']!.TXT = txt('google-site-verification=abc', ...values);
      return (await check(zone)).SPF!;
    };
    assert.equal((await spf()).status, 'missing');
    const narrow = await spf('v=spf1 ip4:198.51.100.1 -all');
    assert.equal(narrow.status, 'wrong');
    assert.equal(narrow.detail, 'SPF does not allow this server (add "mx" or "a:mail.example.com")');
    const open = await spf('v=spf1 mx +all');
    assert.equal(open.status, 'wrong');
    assert.equal(open.detail, 'SPF ends in +all: anyone may send as this domain');
    const two = await spf('v=spf1 mx -all', 'v=spf1 a -all');
    assert.equal(two.status, 'wrong');
    assert.match(two.detail, /^2 SPF records; receivers ignore all of them/);
    for (const ok of ['v=spf1 a:mail.example.com -all', 'v=spf1 ip4:203.0.113.7 -all', 'v=spf1 include:_spf.example.net ~all', 'v=spf1 a mx ~all']) {
      assert.equal((await spf(ok)).status, 'found', ok);
    }
  });

  test('DMARC: missing, without a policy, two records', async () => {
    const zone = goodZone();
    zone['_dmarc.example.com'] = { TXT: txt('some other text') };
    assert.equal((await check(zone)).DMARC!.status, 'missing');
    zone['_dmarc.example.com'] = { TXT: txt('v=DMARC1; rua=mailto:a@example.com') };
    const nopolicy = (await check(zone)).DMARC!;
    assert.equal(nopolicy.status, 'wrong');
    assert.equal(nopolicy.detail, 'DMARC record has no valid p= policy');
    zone['_dmarc.example.com'] = { TXT: txt('v=DMARC1; p=none', 'v=DMARC1; p=reject') };
    assert.match((await check(zone)).DMARC!.detail, /^2 DMARC records/);
  });

  test('DKIM: missing, and wrong when the published key is not the signing key', async () => {
    const zone = goodZone();
    delete zone['mail._domainkey.example.com'];
    assert.equal((await check(zone)).DKIM!.status, 'missing');
    zone['mail._domainkey.example.com'] = { TXT: txt(`v=DKIM1; k=rsa; p=${generateDkimKey().publicKey}`) };
    const dkim = (await check(zone)).DKIM!;
    assert.equal(dkim.status, 'wrong');
    assert.equal(dkim.detail, 'DKIM key differs from the key this server signs with');
    assert.equal(dkim.expected, `v=DKIM1; k=rsa; p=${key.publicKey}`);
  });

  test('a failed lookup counts as missing and says to check again', async () => {
    const zone = goodZone();
    zone['example.com']!.MX = 'ESERVFAIL';
    const mx = (await check(zone)).MX!;
    assert.equal(mx.status, 'missing');
    assert.match(mx.detail, /^lookup failed \(ESERVFAIL: .*\); check again later$/);
  });

  test('the report names each problem and the record to publish for it', async () => {
    const zone = goodZone();
    zone['example.com']!.MX = [{ exchange: 'mx.other.example.net', priority: 10 }];
    delete zone['_dmarc.example.com'];
    const checks = await checkDomain(resolverFor(zone), setup);
    const text = formatChecks(checks, expectedRecords(setup));
    assert.match(text, /^wrong +MX +example\.com +MX points to mx\.other\.example\.net, not to mail\.example\.com$/m);
    assert.match(text, /^ +found: +"10 mx\.other\.example\.net"$/m);
    assert.match(text, /^ +publish: example\.com\.\t3600\tIN\tMX\t10 mail\.example\.com\.$/m);
    assert.match(text, /^missing +DMARC +_dmarc\.example\.com +no such record$/m);
    assert.match(text, /^ +publish: _dmarc\.example\.com\.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine;/m);
    assert.match(text, /^found +SPF +example\.com +v=spf1 mx -all$/m);
    assert.match(text, /^2 found, 1 missing, 1 wrong$/m);
  });
});

describe('npm run dns:records and dns:check', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-dns-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const args = ['--domain', 'Example.com', '--host', 'mail.example.com', '--ip', '203.0.113.7'];

  test('DKIM_PRIVATE_KEY as PEM text (\\n escaped) or as a file gives the same public key', () => {
    const file = path.join(dir, 'dkim.pem');
    writeFileSync(file, key.privateKeyPem);
    assert.equal(dkimPublicKey(key.privateKeyPem.replace(/\n/g, '\\n')), key.publicKey);
    assert.equal(dkimPublicKey(file), key.publicKey);
    assert.throws(() => dkimPublicKey(path.join(dir, 'nope.pem')), /DKIM_PRIVATE_KEY: not a usable PEM private key or key file/);
  });

  test('with the configured key: every record, the DKIM one from that key, no new key', async () => {
    const file = path.join(dir, 'configured.pem');
    writeFileSync(file, key.privateKeyPem);
    const r = await runScript('scripts/dns-records.ts', [...args, '--ipv6', '2001:db8::7'], { DKIM_PRIVATE_KEY: file, DKIM_SELECTOR: 'mail', DKIM_DOMAIN: 'example.com' });
    assert.equal(r.code, 0, r.stderr);
    for (const record of expectedRecords(setup).filter((x) => x.type !== 'HTTPS file' && x.type !== 'PTR')) {
      assert.ok(r.stdout.includes(zoneLine(record)), `prints ${record.kind}: ${zoneLine(record)}`);
    }
    assert.match(r.stdout, /^7\.113\.0\.203\.in-addr\.arpa\.\tIN\tPTR\tmail\.example\.com\.$/m);
    assert.match(r.stdout, /^; +mode: enforce$/m);
    assert.doesNotMatch(r.stdout, /PRIVATE KEY/);
  });

  test('without a key: a new pair, the record matching the printed private key, and where to put it', async () => {
    const r = await runScript('scripts/dns-records.ts', [...args, '--dkim-selector', 's2025'], { DKIM_PRIVATE_KEY: '', DKIM_SELECTOR: '', DKIM_DOMAIN: '' });
    assert.equal(r.code, 0, r.stderr);
    const pem = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(r.stdout)?.[0];
    assert.ok(pem, 'prints the private key');
    const dkimLine = r.stdout.split('\n').find((l) => l.startsWith('s2025._domainkey.example.com.'))!;
    const value = [...dkimLine.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
    assert.equal(value, dkimValue(dkimPublicKey(pem)));
    assert.match(r.stdout, /DKIM_PRIVATE_KEY=\/etc\/mailtrail\/dkim\.pem/);
    assert.match(r.stdout, /DKIM_SELECTOR=s2025/);
  });

  test('bad arguments say what is wrong', async () => {
    const r = await runScript('scripts/dns-records.ts', ['--domain', 'example.com', '--host', 'mail.example.com', '--ip', '300.1.1.1'], {});
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--ip must be the server's public IPv4 address/);
  });

  test('dns:check of a domain that cannot exist: each record missing with what to publish, exit 1', async () => {
    const r = await runScript('scripts/dns-check.ts', ['--domain', 'mailtrail-test.invalid', '--host', 'mail.mailtrail-test.invalid'], { DKIM_PRIVATE_KEY: '' });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^missing +MX +mailtrail-test\.invalid /m);
    assert.match(r.stdout, /publish: mailtrail-test\.invalid\.\t3600\tIN\tTXT\t"v=spf1 mx -all"/);
    assert.match(r.stdout, /^0 found, 3 missing, 0 wrong$/m);
    assert.match(r.stdout, /DKIM not checked: DKIM_PRIVATE_KEY is not set/);
  });
});
