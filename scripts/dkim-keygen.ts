/**
 * `npm run dkim:keygen -- --domain example.com --selector mail [--bits 2048]`
 *
 * Prints a new RSA private key (PEM, for DKIM_PRIVATE_KEY) and the DNS TXT record to publish:
 *   mail._domainkey.example.com TXT "v=DKIM1; k=rsa; p=…"
 * Nothing is written to disk; redirect the output where you keep secrets.
 */
import { generateKeyPairSync } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export interface DkimKey {
  privateKeyPem: string;
  /** Name of the TXT record. */
  name: string;
  /** Value of the TXT record, unquoted. */
  value: string;
  /** The value split into ≤ 255-character strings, quoted, as most DNS zone files want it. */
  quoted: string;
}

export function dkimKeygen(domain: string, selector: string, bits = 2048): DkimKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const p = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  const value = `v=DKIM1; k=rsa; p=${p}`;
  const quoted = (value.match(/.{1,255}/g) ?? []).map((part) => `"${part}"`).join(' ');
  return { privateKeyPem, name: `${selector}._domainkey.${domain.toLowerCase()}`, value, quoted };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const { values } = parseArgs({ options: { domain: { type: 'string' }, selector: { type: 'string', default: 'mail' }, bits: { type: 'string', default: '2048' } } });
  const domain = values.domain;
  const selector = values.selector ?? 'mail';
  const bits = Number(values.bits);
  if (!domain || !/^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/.test(domain) || !/^[A-Za-z0-9._-]+$/.test(selector) || ![1024, 2048, 4096].includes(bits)) {
    process.stderr.write('usage: npm run dkim:keygen -- --domain example.com [--selector mail] [--bits 1024|2048|4096]\n');
    process.exit(2);
  }
  const key = dkimKeygen(domain, selector, bits);
  process.stdout.write(
    [
      `# Private key: set DKIM_DOMAIN=${domain.toLowerCase()} DKIM_SELECTOR=${selector} and DKIM_PRIVATE_KEY to this PEM (or to the path of a file holding it).`,
      key.privateKeyPem.trimEnd(),
      '',
      '# DNS record to publish:',
      `${key.name} TXT ${key.quoted}`,
      '',
    ].join('\n'),
  );
}
