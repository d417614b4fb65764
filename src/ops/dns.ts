import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { DnsRecord, RecordCheck } from '../dns/records.js';
import { loadDkimKey } from '../relay/transport.js';

/**
 * Text for `npm run dns:records` and `npm run dns:check`: the records of `expectedRecords` in
 * zone-file form with a line on what each is for, and the result of `checkDomain` with the record
 * to publish for everything missing or wrong.
 */

const TTL = 3600;

/** The public half of DKIM_PRIVATE_KEY (PEM text or a file path, read as the relay reads it), as base64 SPKI. */
export function dkimPublicKey(setting: string): string {
  return createPublicKey(createPrivateKey(loadDkimKey(setting))).export({ type: 'spki', format: 'der' }).toString('base64');
}

/** A new 2048-bit RSA key pair for DKIM (the size every receiver accepts). */
export function generateDkimKey(): { privateKeyPem: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
  };
}

/** A TXT value as zone files want it: quoted strings of at most 255 characters each (a DKIM key is longer). */
export function quoteTxt(value: string): string {
  return (value.match(/[\s\S]{1,255}/g) ?? ['']).map((part) => `"${part.replace(/["\\]/g, '\\$&')}"`).join(' ');
}

export function zoneLine(r: DnsRecord): string {
  return `${r.name}.\t${TTL}\tIN\t${r.type}\t${r.type === 'TXT' ? quoteTxt(r.value) : r.value}`;
}

const PURPOSE: Record<DnsRecord['kind'], string> = {
  MX: 'where other servers deliver mail for the domain',
  A: 'the IPv4 address of the mail server',
  AAAA: 'the IPv6 address of the mail server',
  SPF: 'which servers may send mail as the domain: its MX',
  DKIM: "the public key receivers check mailtrail's signatures with",
  DMARC: 'what receivers do with mail that fails SPF and DKIM alignment, and where they send reports',
  'MTA-STS': 'announces the MTA-STS policy below; change id= whenever the policy changes',
  'MTA-STS policy': 'not DNS',
  'TLS-RPT': 'where sending servers report TLS problems with this server',
  PTR: 'not DNS',
};

/** Every record in zone-file form, the MTA-STS policy file and the PTR request spelled out. */
export function formatRecords(records: DnsRecord[], setup: { domain: string; host: string; ipv4: string; ipv6?: string }): string {
  const lines = [
    `; DNS records for ${setup.domain}, mail server ${setup.host} (${[setup.ipv4, setup.ipv6].filter(Boolean).join(', ')})`,
    '; In zone-file form. A DNS provider\'s web form usually wants the name without the domain and the TXT value',
    '; without the quotes; a DKIM value split into several quoted strings is one value there.',
  ];
  for (const r of records) {
    lines.push('');
    if (r.kind === 'MTA-STS policy') {
      lines.push(`; MTA-STS policy: a file, not a record. Serve it as ${r.name}`);
      lines.push(`; (mta-sts.${setup.domain} needs an A record and a certificate; deploy/nginx/mailtrail.conf has a server block for it):`);
      lines.push(...r.value.split('\n').map((l) => `;   ${l}`));
    } else if (r.kind === 'PTR') {
      lines.push(`; PTR (reverse DNS): not in your zone. Ask whoever owns ${setup.ipv4} (your provider's "reverse DNS" setting) for:`);
      lines.push(`${r.name}.\tIN\tPTR\t${r.value}`);
      if (setup.ipv6) lines.push(`; and the same for ${setup.ipv6} -> ${setup.host}.`);
    } else {
      lines.push(`; ${r.kind}: ${PURPOSE[r.kind]}`);
      lines.push(zoneLine(r));
    }
  }
  return `${lines.join('\n')}\n`;
}

const short = (v: string): string => (v.length > 72 ? `${v.slice(0, 71)}…` : v);

/** One block per check; for missing and wrong ones, what DNS answered and the record to publish. */
export function formatChecks(checks: RecordCheck[], records: DnsRecord[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines: string[] = [];
  for (const c of checks) {
    lines.push(`${c.status.padEnd(8)} ${c.kind.padEnd(6)} ${c.name.padEnd(width)}  ${c.status === 'found' ? c.actual.map(short).join(' | ') : c.detail}`);
    if (c.status === 'found') continue;
    if (c.actual.length > 0) lines.push(`${' '.repeat(16)}found:   ${c.actual.map((v) => JSON.stringify(v)).join(' | ')}`);
    const record = records.find((r) => r.kind === c.kind);
    if (record) lines.push(`${' '.repeat(16)}publish: ${zoneLine(record)}`);
  }
  const count = (s: RecordCheck['status']): number => checks.filter((c) => c.status === s).length;
  lines.push('', `${count('found')} found, ${count('missing')} missing, ${count('wrong')} wrong`);
  if (count('found') < checks.length) {
    lines.push('Publish the records above at your DNS provider. A change shows once the old answer\'s TTL has run out (often an hour): run this again then.');
  }
  return `${lines.join('\n')}\n`;
}
