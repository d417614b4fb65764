import type { AliasDoc } from '../../projections/aliases.js';
import type { MailboxDoc } from '../../projections/mailboxes.js';
import { CommandError } from '../compose/decide.js';
import type { Meta, StoredEvent } from '../events/envelope.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';
import { accountStream, findMailboxByAddress, isPlainAddress } from './accounts.js';
import { domainOf, isLocalDomain } from './domains.js';

/**
 * Aliases: more addresses for a mailbox. Each lives in the stream its address would have as an
 * account (`accountStream`), so an address is either a mailbox or an alias, once: registering it
 * or adding it again fails on the stream's version, whoever comes first.
 */

/** Another change to the address won the race: the caller looks again and decides. */
const changedMeanwhile = (address: string) => (error: unknown): never => {
  if (error instanceof WrongExpectedVersionError) throw new CommandError('CONFLICT', `address: ${address} changed meanwhile; try again`);
  throw error;
};

/** The alias an address's stream holds now (the last AliasAdded not removed since), else null. */
function currentAlias(events: StoredEvent[]): { mailboxId: string; userId: string; address: string } | null {
  const last = events.at(-1);
  return last?.type === 'AliasAdded' ? last.data : null;
}

/** AliasAdded for `address` → `mailbox`, given the address's stream as it is; or why not. */
export function decideAddAlias(events: StoredEvent[], address: string, mailbox: MailboxDoc): { address: string; mailboxId: string; userId: string } {
  if (events.some((e) => e.type === 'MailboxCreated')) throw new CommandError('CONFLICT', `address: ${address} is a mailbox`);
  const alias = currentAlias(events);
  if (alias) throw new CommandError('CONFLICT', `address: ${address} is already an alias${alias.mailboxId === mailbox.id ? ' of this mailbox' : ' of another mailbox'}`);
  return { address, mailboxId: mailbox.id, userId: mailbox.userId };
}

export async function addAlias(store: Store, defaultDomain: string, input: { address: string; mailbox: string }, meta: Meta): Promise<{ position: number; alias: { address: string; mailbox: string } }> {
  if (!isPlainAddress(input.address)) throw new CommandError('BAD_REQUEST', 'address: must be a plain address such as name@example.com');
  if (!(await isLocalDomain(store, defaultDomain, domainOf(input.address)))) {
    throw new CommandError('BAD_REQUEST', `address: ${domainOf(input.address)} is not a local domain; add it first (domains.add)`);
  }
  const mailbox = await findMailboxByAddress(store, input.mailbox);
  if (!mailbox) throw new CommandError('NOT_FOUND', `mailbox: there is no mailbox ${input.mailbox}`);
  const stream = accountStream(input.address);
  const events = await store.events.readStream(stream);
  const data = decideAddAlias(events, input.address, mailbox);
  const r = await store.events.append(stream, [{ type: 'AliasAdded', data }], { expectedVersion: events.at(-1)?.version ?? 'no_stream', meta }).catch(changedMeanwhile(input.address));
  return { position: r.lastPosition, alias: { address: input.address, mailbox: mailbox.address } };
}

export async function removeAlias(store: Store, address: string, meta: Meta): Promise<number> {
  const stream = accountStream(address);
  const events = await store.events.readStream(stream);
  const alias = currentAlias(events);
  if (!alias) throw new CommandError('NOT_FOUND', `address: ${address} is not an alias`);
  const r = await store.events.append(stream, [{ type: 'AliasRemoved', data: alias }], { expectedVersion: events.at(-1)!.version, meta }).catch(changedMeanwhile(address));
  return r.lastPosition;
}

/** The mailbox an alias leads to, if `address` is one. */
async function aliasTarget(store: Store, address: string): Promise<MailboxDoc | null> {
  const alias = (await store.views.get('aliases', address.toLowerCase())) as AliasDoc | null;
  return alias ? ((await store.views.get('mailboxes', alias.mailboxId)) as MailboxDoc | null) : null;
}

/** The address without its tag: bob+lists@ is bob@ (with delimiter "+"); as it is without one. */
function untagged(address: string, delimiter: string): string {
  const at = address.lastIndexOf('@');
  const cut = delimiter ? address.slice(0, at).indexOf(delimiter) : -1;
  return cut > 0 ? `${address.slice(0, cut)}${address.slice(at)}` : address;
}

/**
 * Whether the mailbox may send as `address`: its own, or one of its aliases, either with a tag.
 * The one rule for SMTP and the API. Decided from the log (the alias's stream), not a view, so an
 * alias removed a moment ago is refused at once.
 */
export async function sendsAs(store: Store, mailbox: Pick<MailboxDoc, 'id' | 'address'>, address: string, delimiter: string): Promise<boolean> {
  const base = untagged(address, delimiter).toLowerCase();
  if (base === mailbox.address.toLowerCase()) return true;
  return currentAlias(await store.events.readStream(accountStream(base)))?.mailboxId === mailbox.id;
}

/**
 * The mailbox mail to `address` goes to: the mailbox of that address, else the one it is an alias
 * of; else, with a recipient delimiter (`+`: bob+lists@ is bob@), the same for the address
 * without the part after it.
 */
export async function recipientMailbox(store: Store, address: string, delimiter: string): Promise<MailboxDoc | null> {
  const found = (await findMailboxByAddress(store, address)) ?? (await aliasTarget(store, address));
  const base = untagged(address, delimiter);
  if (found || base === address) return found;
  return (await findMailboxByAddress(store, base)) ?? (await aliasTarget(store, base));
}
