/**
 * npm run audit -- --mail <mailId> | --mailbox <address> | --domain <domain> [--format text|json]
 * Prints the history of a mail, a mailbox, or the MTA-STS policies the relay fetched for a
 * recipient domain (to explain a deferred delivery), from the event log, oldest first.
 */
import { findMailboxByAddress, accountStream } from '../src/accounts/accounts.js';
import { parseFlags, runCommand, UsageError } from '../src/cli/run.js';
import { describeEvent, type EventSummary } from '../src/events/describe.js';
import type { StoredEvent } from '../src/events/envelope.js';
import type { Store } from '../src/store/port.js';
import { mailboxes } from '../projections/mailboxes.js';
import { catchUpViews } from '../src/projection/catch-up.js';

const USAGE = 'npm run audit -- --mail <mailId> | --mailbox <address> | --domain <domain> [--format text|json]';

/**
 * Every event of the mailbox's account, its aliases and every mail that was ever in it; one pass
 * over the log. An address's stream may hold more than this mailbox's story (an alias removed and
 * the address registered by someone else since): from those, only the events about this mailbox.
 */
async function mailboxHistory(store: Store, address: string): Promise<StoredEvent[]> {
  // The mailboxes view may lag the log with the server stopped (a user:add just now).
  await catchUpViews(store, [mailboxes]);
  const mailbox = await findMailboxByAddress(store, address);
  if (!mailbox) throw new UsageError(`no mailbox ${address}; check the address (case does not matter)`);
  const streams = new Set([accountStream(mailbox.address)]);
  const out: StoredEvent[] = [];
  for (let after = 0; ; ) {
    const batch = await store.events.readAll({ after, limit: 5000 });
    if (batch.length === 0) return out;
    for (const e of batch) {
      const ours = ('mailboxId' in e.data && e.data.mailboxId === mailbox.id) || ('userId' in e.data && e.data.userId === mailbox.userId);
      if ('mailboxId' in e.data && e.data.mailboxId === mailbox.id) streams.add(e.streamId);
      if (streams.has(e.streamId) && (ours || !e.streamId.startsWith('account-'))) out.push(e);
    }
    after = batch.at(-1)!.position;
  }
}

function print(events: EventSummary[]): void {
  for (const e of events) {
    const details = Object.entries(e.details)
      .filter(([, v]) => v !== null && v !== '')
      .map(([k, v]) => `${k}=${typeof v === 'string' && /\s/.test(v) ? JSON.stringify(v) : String(v)}`)
      .join(' ');
    console.log(`${String(e.position).padStart(8)}  ${e.at}  ${e.type.padEnd(18)} ${(e.actor ?? '').padEnd(24)} ${details}`);
  }
}

await runCommand('audit', async ({ store, args }) => {
  const flags = parseFlags(args, ['mail', 'mailbox', 'domain', 'format'], USAGE);
  if ([flags.mail, flags.mailbox, flags.domain].filter(Boolean).length !== 1) throw new UsageError(`give exactly one of --mail, --mailbox or --domain\nusage: ${USAGE}`);
  if (flags.format !== undefined && flags.format !== 'text' && flags.format !== 'json') throw new UsageError(`--format is text or json\nusage: ${USAGE}`);
  const events = flags.mail
    ? await store.events.readStream(`mail-${flags.mail}`)
    : flags.domain
      ? await store.events.readStream(`mta-sts-${flags.domain.toLowerCase()}`)
      : await mailboxHistory(store, flags.mailbox!);
  if (events.length === 0 && flags.domain) throw new UsageError(`no MTA-STS policy was fetched for ${flags.domain}: the relay delivers to it without one (opportunistic TLS)`);
  if (events.length === 0) throw new UsageError(`no events for mail ${flags.mail}; the id is the one mails.list returns`);
  const summaries = events.map(describeEvent);
  if (flags.format === 'json') console.log(JSON.stringify(summaries, null, 2));
  else print(summaries);
}, { existingStore: true });
