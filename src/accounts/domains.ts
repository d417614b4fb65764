import type { Meta } from '../events/envelope.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';

export const domainStream = (domain: string): string => `domain-${domain.toLowerCase()}`;

/** The domain of an address, lower-cased, without the brackets of an address literal. */
export const domainOf = (address: string): string => address.slice(address.lastIndexOf('@') + 1).replace(/^\[|\]$/g, '').toLowerCase();

export class DomainExistsError extends Error {
  constructor(readonly domain: string) {
    super(`${domain} is already a local domain`);
    this.name = 'DomainExistsError';
  }
}

/** Local domains: the configured default plus those added at run time (the `domains` view). */
export async function isLocalDomain(store: Store, defaultDomain: string, domain: string): Promise<boolean> {
  const d = domain.toLowerCase();
  return d === defaultDomain || (await store.views.get('domains', d)) !== null;
}

export async function addDomain(store: Store, domain: string, meta: Meta): Promise<number> {
  try {
    const r = await store.events.append(domainStream(domain), [{ type: 'DomainAdded', data: { domain: domain.toLowerCase() } }], { expectedVersion: 'no_stream', meta });
    return r.lastPosition;
  } catch (error) {
    if (error instanceof WrongExpectedVersionError) throw new DomainExistsError(domain);
    throw error;
  }
}
