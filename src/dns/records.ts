import type { DnsResolver } from '../smtp/dns.js';

/**
 * The DNS records a mail domain needs, and a check of what is published. The expectations are
 * pure functions; `checkDomain` is the only part that asks DNS (through an injectable resolver),
 * shared by the API's domains.verify and `npm run dns:check`.
 */

export interface DomainSetup {
  domain: string;
  /** The host name of this server (MX target, SMTP banner). */
  host: string;
  ipv4?: string;
  ipv6?: string;
  dkim?: { selector: string; publicKey: string };
  /** Where DMARC aggregate reports go (default: postmaster@domain). */
  reportTo?: string;
}

export interface DnsRecord {
  kind: 'MX' | 'A' | 'AAAA' | 'SPF' | 'DKIM' | 'DMARC' | 'MTA-STS' | 'MTA-STS policy' | 'TLS-RPT' | 'PTR';
  name: string;
  type: 'MX' | 'A' | 'AAAA' | 'TXT' | 'PTR' | 'HTTPS file';
  value: string;
}

/** The DKIM TXT value for a PEM or base64 public key. */
export function dkimValue(publicKey: string): string {
  const base64 = publicKey.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, '').replace(/\s+/g, '');
  return `v=DKIM1; k=rsa; p=${base64}`;
}

const reverseName = (ipv4: string): string => `${ipv4.split('.').reverse().join('.')}.in-addr.arpa`;

export function expectedRecords(s: DomainSetup): DnsRecord[] {
  const reports = s.reportTo ?? `postmaster@${s.domain}`;
  const records: DnsRecord[] = [{ kind: 'MX', name: s.domain, type: 'MX', value: `10 ${s.host}.` }];
  if (s.ipv4) records.push({ kind: 'A', name: s.host, type: 'A', value: s.ipv4 });
  if (s.ipv6) records.push({ kind: 'AAAA', name: s.host, type: 'AAAA', value: s.ipv6 });
  records.push({ kind: 'SPF', name: s.domain, type: 'TXT', value: 'v=spf1 mx -all' });
  if (s.dkim) records.push({ kind: 'DKIM', name: `${s.dkim.selector}._domainkey.${s.domain}`, type: 'TXT', value: dkimValue(s.dkim.publicKey) });
  records.push({ kind: 'DMARC', name: `_dmarc.${s.domain}`, type: 'TXT', value: `v=DMARC1; p=quarantine; rua=mailto:${reports}; adkim=s; aspf=s` });
  records.push({ kind: 'MTA-STS', name: `_mta-sts.${s.domain}`, type: 'TXT', value: 'v=STSv1; id=1' });
  records.push({ kind: 'MTA-STS policy', name: `https://mta-sts.${s.domain}/.well-known/mta-sts.txt`, type: 'HTTPS file', value: `version: STSv1\nmode: enforce\nmx: ${s.host}\nmax_age: 604800` });
  records.push({ kind: 'TLS-RPT', name: `_smtp._tls.${s.domain}`, type: 'TXT', value: `v=TLSRPTv1; rua=mailto:${reports}` });
  if (s.ipv4) records.push({ kind: 'PTR', name: reverseName(s.ipv4), type: 'PTR', value: `${s.host}.` });
  return records;
}

export type CheckStatus = 'found' | 'missing' | 'wrong';

export interface RecordCheck {
  kind: DnsRecord['kind'];
  name: string;
  status: CheckStatus;
  /** What to publish (for missing and wrong). */
  expected: string;
  /** What DNS answered. */
  actual: string[];
  detail: string;
}

type Answer = { ok: true; values: string[] } | { ok: false; missing: boolean; error: string };

async function ask(resolver: DnsResolver, name: string, type: 'MX' | 'TXT' | 'A' | 'AAAA'): Promise<Answer> {
  try {
    const answer = (await resolver(name, type)) as unknown[];
    const values = answer.map((a) => {
      if (type === 'MX') {
        const mx = a as { exchange: string; priority: number };
        return `${mx.priority} ${mx.exchange.replace(/\.$/, '').toLowerCase()}`;
      }
      return type === 'TXT' ? (a as string[]).join('') : String(a);
    });
    return { ok: true, values };
  } catch (error) {
    const code = (error as { code?: string }).code ?? '';
    return { ok: false, missing: code === 'ENOTFOUND' || code === 'ENODATA', error: `${code || 'error'}: ${(error as Error).message}` };
  }
}

function judge(kind: DnsRecord['kind'], name: string, expected: string, answer: Answer, pick: (v: string) => boolean, good: (v: string) => string | null): RecordCheck {
  if (!answer.ok) return { kind, name, status: 'missing', expected, actual: [], detail: answer.missing ? 'no such record' : `lookup failed (${answer.error}); check again later` };
  const candidates = answer.values.filter(pick);
  if (candidates.length === 0) return { kind, name, status: 'missing', expected, actual: answer.values, detail: 'no such record' };
  if (candidates.length > 1 && (kind === 'SPF' || kind === 'DMARC')) return { kind, name, status: 'wrong', expected, actual: candidates, detail: `${candidates.length} ${kind} records; receivers ignore all of them when there is more than one` };
  const problems = candidates.map(good);
  const ok = problems.findIndex((p) => p === null);
  if (ok >= 0) return { kind, name, status: 'found', expected, actual: candidates, detail: 'ok' };
  return { kind, name, status: 'wrong', expected, actual: candidates, detail: problems.filter(Boolean).join('; ') };
}

/** MX, SPF, DKIM and DMARC of `setup.domain` as published, each found / missing / wrong, with what to publish. */
export async function checkDomain(resolver: DnsResolver, setup: DomainSetup): Promise<RecordCheck[]> {
  const expected = new Map(expectedRecords(setup).map((r) => [r.kind, r]));
  const host = setup.host.toLowerCase();
  const checks: Promise<RecordCheck>[] = [
    ask(resolver, setup.domain, 'MX').then((a) =>
      judge('MX', setup.domain, expected.get('MX')!.value, a, () => true, (v) => (v.split(' ')[1] === host ? null : `MX points to ${v.split(' ')[1]}, not to ${host}`)),
    ),
    ask(resolver, setup.domain, 'TXT').then((a) =>
      judge('SPF', setup.domain, expected.get('SPF')!.value, a, (v) => /^v=spf1(\s|$)/i.test(v), (v) => {
        const allows = /\s(\+?mx|\+?a)(\s|$)/i.test(v) || v.toLowerCase().includes(`a:${host}`) || (setup.ipv4 !== undefined && v.includes(`ip4:${setup.ipv4}`)) || /\sinclude:/i.test(v);
        if (!allows) return `SPF does not allow this server (add "mx" or "a:${host}")`;
        return /\+all(\s|$)/i.test(v) ? 'SPF ends in +all: anyone may send as this domain' : null;
      }),
    ),
    ask(resolver, `_dmarc.${setup.domain}`, 'TXT').then((a) =>
      judge('DMARC', `_dmarc.${setup.domain}`, expected.get('DMARC')!.value, a, (v) => /^v=DMARC1(;|\s|$)/i.test(v), (v) => (/;\s*p=(none|quarantine|reject)\b/i.test(v) ? null : 'DMARC record has no valid p= policy')),
    ),
  ];
  if (setup.dkim) {
    const name = `${setup.dkim.selector}._domainkey.${setup.domain}`;
    const want = dkimValue(setup.dkim.publicKey);
    const key = want.slice(want.indexOf('p=') + 2);
    checks.push(
      ask(resolver, name, 'TXT').then((a) =>
        judge('DKIM', name, want, a, (v) => /(^|;)\s*p=/i.test(v), (v) => (v.replace(/\s+/g, '').includes(`p=${key}`) ? null : 'DKIM key differs from the key this server signs with')),
      ),
    );
  }
  return Promise.all(checks);
}
