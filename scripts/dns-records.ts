/**
 * npm run dns:records -- --domain example.com --host mail.example.com --ip 203.0.113.7
 *                        [--ipv6 2001:db8::7] [--dkim-selector mail] [--report-to dmarc@example.com]
 * Prints every DNS record the domain needs for mailtrail (MX, A/AAAA, SPF, DKIM, DMARC, MTA-STS,
 * TLS-RPT) and the PTR to ask the IP's owner for. DKIM: the public half of DKIM_PRIVATE_KEY when
 * it is set; otherwise a new key pair, with where to put the private key.
 */
import net from 'node:net';
import { parseFlags, runWithoutStore, UsageError } from '../src/cli/run.js';
import { expectedRecords } from '../src/dns/records.js';
import { dkimPublicKey, formatRecords, generateDkimKey } from '../src/ops/dns.js';

const USAGE =
  'npm run dns:records -- --domain example.com --host mail.example.com --ip 203.0.113.7 [--ipv6 2001:db8::7] [--dkim-selector mail] [--report-to dmarc@example.com]';
const NAME = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;

await runWithoutStore('dns:records', async ({ args }) => {
  const f = parseFlags(args, ['domain', 'host', 'ip', 'ipv6', 'dkim-selector', 'report-to'], USAGE);
  if (!f.domain || !NAME.test(f.domain)) throw new UsageError(`--domain must be a domain name such as example.com\nusage: ${USAGE}`);
  if (!f.host || !NAME.test(f.host)) throw new UsageError(`--host must be the mail server's name, such as mail.${f.domain}\nusage: ${USAGE}`);
  if (!f.ip || !net.isIPv4(f.ip)) throw new UsageError(`--ip must be the server's public IPv4 address\nusage: ${USAGE}`);
  if (f.ipv6 !== undefined && !net.isIPv6(f.ipv6)) throw new UsageError(`--ipv6 must be an IPv6 address\nusage: ${USAGE}`);
  const domain = f.domain.toLowerCase();
  const setup = { domain, host: f.host.toLowerCase(), ipv4: f.ip, ...(f.ipv6 ? { ipv6: f.ipv6 } : {}) };
  const selector = f['dkim-selector'] ?? (process.env.DKIM_SELECTOR || 'mail');
  if (!/^[A-Za-z0-9._-]+$/.test(selector)) throw new UsageError(`--dkim-selector must be letters, digits, dots, dashes or underscores, such as mail`);

  const configured = process.env.DKIM_PRIVATE_KEY;
  const generated = configured ? null : generateDkimKey();
  const publicKey = configured ? dkimPublicKey(configured) : generated!.publicKey;
  if (configured && process.env.DKIM_DOMAIN && process.env.DKIM_DOMAIN.toLowerCase() !== domain) {
    console.error(`note: DKIM_DOMAIN is ${process.env.DKIM_DOMAIN}: the relay signs as that domain, so its DKIM record belongs there, not under ${domain}`);
  }
  if (configured && process.env.DKIM_SELECTOR && process.env.DKIM_SELECTOR !== selector) {
    console.error(`note: DKIM_SELECTOR is ${process.env.DKIM_SELECTOR} but the record below uses ${selector}; the relay signs with DKIM_SELECTOR`);
  }

  const records = expectedRecords({ ...setup, dkim: { selector, publicKey }, ...(f['report-to'] ? { reportTo: f['report-to'] } : {}) });
  process.stdout.write(formatRecords(records, setup));
  process.stdout.write(`\n; Once published: npm run dns:check -- --domain ${domain} --host ${setup.host}\n`);
  if (generated) {
    process.stdout.write(
      [
        '',
        '; DKIM_PRIVATE_KEY is not set, so the DKIM record above is for this new key. Save it as',
        '; /etc/mailtrail/dkim.pem (owner mailtrail, mode 0600) and set in mailtrail.env (or .env):',
        `;   DKIM_DOMAIN=${domain}`,
        `;   DKIM_SELECTOR=${selector}`,
        ';   DKIM_PRIVATE_KEY=/etc/mailtrail/dkim.pem',
        '; then restart mailtrail. Running this command again without it makes another key.',
        generated.privateKeyPem.trimEnd(),
        '',
      ].join('\n'),
    );
  }
});
