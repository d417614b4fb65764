import bcrypt from 'bcrypt';
import { v7 as uuidv7 } from 'uuid';
import type { MailboxDoc } from '../../projections/mailboxes.js';
import type { UserDoc } from '../../projections/users.js';
import type { Meta, NewEvent, StoredEvent } from '../events/envelope.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';

/** Stream of one account: its registration, its mailbox, password changes. Keyed by address so an address is taken once. */
export const accountStream = (email: string): string => `account-${email.toLowerCase()}`;

export class AddressTakenError extends Error {
  constructor(readonly email: string) {
    super(`${email} is already registered`);
    this.name = 'AddressTakenError';
  }
}

export interface RegisteredAccount {
  user: { id: string; email: string; name: string; role: 'user' | 'admin' };
  mailboxId: string;
  /** Global position of the last event, for read-your-writes. */
  position: number;
}

/** A syntactically plain address: local@domain, no quotes, routes or `%` tricks. */
export const PLAIN_ADDRESS = /^[A-Za-z0-9.!#$&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$|^[A-Za-z0-9.!#$&'*+/=?^_`{|}~-]+@localhost$/i;

/** A plain address mail may be delivered to: PLAIN_ADDRESS, at most 254 characters, no `%` or `!` relaying tricks. */
export const isPlainAddress = (address: string): boolean => address.length <= 254 && PLAIN_ADDRESS.test(address) && !/[%!]/.test(address);

/**
 * Registers a user with one mailbox for their address. Both events go in one append to the
 * account's stream with "no stream" expected, so two racing registrations of one address
 * cannot both succeed.
 */
export async function registerAccount(
  store: Store,
  input: { email: string; password: string; name: string; role?: 'user' | 'admin' },
  opts: { bcryptCost: number; meta: Meta },
): Promise<RegisteredAccount> {
  const userId = uuidv7();
  const mailboxId = uuidv7();
  const role = input.role ?? 'user';
  const passwordHash = await bcrypt.hash(input.password, opts.bcryptCost);
  // The address's stream is new, or holds an alias that was removed: the address is free again.
  const history = await store.events.readStream(accountStream(input.email));
  if (history.length > 0 && history.at(-1)!.type !== 'AliasRemoved') throw new AddressTakenError(input.email);
  try {
    const result = await store.events.append(
      accountStream(input.email),
      [
        { type: 'UserRegistered', data: { userId, email: input.email, name: input.name, passwordHash, role } },
        { type: 'MailboxCreated', data: { mailboxId, userId, address: input.email } },
      ],
      { expectedVersion: history.at(-1)?.version ?? 'no_stream', meta: opts.meta },
    );
    return { user: { id: userId, email: input.email, name: input.name, role }, mailboxId, position: result.lastPosition };
  } catch (error) {
    if (error instanceof WrongExpectedVersionError) throw new AddressTakenError(input.email);
    throw error;
  }
}

export async function findUserByEmail(store: Store, email: string): Promise<UserDoc | null> {
  const [user] = await store.views.list('users', { where: { emailKey: email.toLowerCase() }, orderBy: { field: 'emailKey', direction: 'asc' }, limit: 1 });
  return (user as UserDoc | undefined) ?? null;
}

export async function findMailboxByAddress(store: Store, address: string): Promise<MailboxDoc | null> {
  const [mailbox] = await store.views.list('mailboxes', {
    where: { addressKey: address.toLowerCase() },
    orderBy: { field: 'addressKey', direction: 'asc' },
    limit: 1,
  });
  return (mailbox as MailboxDoc | undefined) ?? null;
}

/**
 * Compared against when the user does not exist, so a wrong address costs as long as a wrong
 * password: one hash per cost, the cost new passwords are hashed with.
 */
const dummyHashes = new Map<number, Promise<string>>();
function dummyHash(cost: number): Promise<string> {
  let hash = dummyHashes.get(cost);
  if (!hash) dummyHashes.set(cost, (hash = bcrypt.hash('mailtrail-timing-equaliser', cost)));
  return hash;
}

/** The active user with this address and password, else null. `bcryptCost`: the cost of the stand-in hash for unknown addresses. */
export async function verifyPassword(store: Store, email: string, password: string, bcryptCost: number): Promise<UserDoc | null> {
  const user = await findUserByEmail(store, email);
  const ok = await bcrypt.compare(password, user?.passwordHash ?? (await dummyHash(bcryptCost)));
  return ok && user && !user.disabled ? user : null;
}

export class NoSuchUserError extends Error {
  constructor(readonly email: string) {
    super(`no user ${email}`);
    this.name = 'NoSuchUserError';
  }
}

/** Appends to the account's stream at the version read, so a concurrent change is not overwritten. */
/** `change` may answer null: the account is already as asked, nothing is appended and the result is null. */
async function changeAccount(store: Store, email: string, change: (userId: string, events: StoredEvent[]) => NewEvent | null, meta: Meta): Promise<number | null> {
  const events = await store.events.readStream(accountStream(email));
  const registered = events.find((e) => e.type === 'UserRegistered');
  if (!registered || registered.type !== 'UserRegistered') throw new NoSuchUserError(email);
  const event = change(registered.data.userId, events);
  if (!event) return null;
  const r = await store.events.append(accountStream(email), [event], { expectedVersion: events.at(-1)!.version, meta });
  return r.lastPosition;
}

/** The position of the change, and the hash it set (what a token issued for it is tied to). */
export async function changePassword(store: Store, email: string, password: string, opts: { bcryptCost: number; meta: Meta }): Promise<{ position: number; passwordHash: string }> {
  const passwordHash = await bcrypt.hash(password, opts.bcryptCost);
  // A password change is always appended: changeAccount answers its position.
  const position = (await changeAccount(store, email, (userId) => ({ type: 'UserPasswordChanged', data: { userId, passwordHash } }), opts.meta))!;
  return { position, passwordHash };
}

/** Null when the account was disabled already: nothing new to record. */
export function disableAccount(store: Store, email: string, meta: Meta): Promise<number | null> {
  return changeAccount(store, email, (userId, events) => (events.some((e) => e.type === 'UserDisabled') ? null : { type: 'UserDisabled', data: { userId } }), meta);
}
