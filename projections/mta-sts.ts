import { defineProjection } from '../src/projection/projection.js';

export type MtaStsDoc = {
  /** The recipient domain, lower-case. */
  id: string;
  policyId: string;
  mode: 'enforce' | 'testing' | 'none';
  mx: string[];
  /** Seconds from `fetchedAt`. */
  maxAge: number;
  fetchedAt: string;
};

/** The last MTA-STS policy the relay fetched for each recipient domain: its cache, kept across restarts. */
export const mtaSts = defineProjection<MtaStsDoc>({
  spec: { name: 'mta_sts', indexed: [], indexes: [] },
  version: 1,
  keys: (e) => (e.type === 'MtaStsPolicyFetched' ? [e.data.domain.toLowerCase()] : []),
  evolve: (doc, e, id) =>
    e.type === 'MtaStsPolicyFetched' ? { id, policyId: e.data.policyId, mode: e.data.mode, mx: e.data.mx, maxAge: e.data.maxAge, fetchedAt: e.recordedAt } : doc,
});
