/**
 * npm run dns:check -- --domain example.com --host mail.example.com [--dkim-selector mail]
 * Looks up the domain's MX, SPF, DMARC and (when DKIM_PRIVATE_KEY is set) DKIM records live, as
 * the API's domains.verify does, and prints each as found, missing or wrong with the record to
 * publish. Exits 1 when anything is missing or wrong.
 */
import { parseFlags, runWithoutStore, UsageError } from '../src/cli/run.js';
import { checkDomain, expectedRecords, type DomainSetup } from '../src/dns/records.js';
import { dkimPublicKey, formatChecks } from '../src/ops/dns.js';
import { systemResolver } from '../src/smtp/dns.js';

const USAGE = 'npm run dns:check -- --domain example.com --host mail.example.com [--dkim-selector mail]';
const NAME = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;
/** Per lookup; a resolver that does not answer in this time counts as a failed lookup. */
const LOOKUP_TIMEOUT_MS = 5000;

await runWithoutStore('dns:check', async ({ args }) => {
  const f = parseFlags(args, ['domain', 'host', 'dkim-selector'], USAGE);
  if (!f.domain || !NAME.test(f.domain)) throw new UsageError(`--domain must be a domain name such as example.com\nusage: ${USAGE}`);
  if (!f.host || !NAME.test(f.host)) throw new UsageError(`--host must be the mail server's name, such as mail.${f.domain}\nusage: ${USAGE}`);
  const key = process.env.DKIM_PRIVATE_KEY;
  const setup: DomainSetup = {
    domain: f.domain.toLowerCase(),
    host: f.host.toLowerCase(),
    ...(key ? { dkim: { selector: f['dkim-selector'] ?? (process.env.DKIM_SELECTOR || 'mail'), publicKey: dkimPublicKey(key) } } : {}),
  };
  const checks = await checkDomain(systemResolver(LOOKUP_TIMEOUT_MS), setup);
  process.stdout.write(formatChecks(checks, expectedRecords(setup)));
  if (!key) console.log('DKIM not checked: DKIM_PRIVATE_KEY is not set (npm run dns:records makes a key and its record).');
  console.log('Not checked here: A/AAAA and PTR (dig +short A <host>; dig +short -x <ip>), MTA-STS and TLS-RPT.');
  if (checks.some((c) => c.status !== 'found')) process.exitCode = 1;
});
