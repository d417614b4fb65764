import { defineProjection } from '../src/projection/projection.js';

export type DomainDoc = { id: string; domain: string; addedAt: string };

/** Local domains added at run time; the id is the lower-case domain. */
export const domains = defineProjection<DomainDoc>({
  spec: { name: 'domains', indexed: [], indexes: [] },
  version: 1,
  keys: (e) => (e.type === 'DomainAdded' ? [e.data.domain.toLowerCase()] : []),
  evolve: (doc, e, id) => (e.type === 'DomainAdded' ? (doc ?? { id, domain: id, addedAt: e.recordedAt }) : doc),
});
