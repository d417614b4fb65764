import type { StoredEvent } from '../events/envelope.js';
import type { ViewDoc, ViewSpec } from '../store/port.js';

/**
 * A read model as a pure fold over the log. The runtime feeds it events in global order and
 * stores the documents; `evolve` must not do I/O, read the clock or draw random numbers, so a
 * rebuild from the log gives the same documents as the live view.
 */
export interface Projection<D extends ViewDoc = ViewDoc> {
  spec: ViewSpec;
  /** Bump when `evolve` changes meaning; the view must then be rebuilt (`npm run replay`). */
  version: number;
  /** Ids of the documents this event changes; empty when the projection ignores it. */
  keys(event: StoredEvent): string[];
  /** The document `id` after `event`; null = deleted. */
  evolve(doc: D | null, event: StoredEvent, id: string): D | null;
}

/** Erases the document type so projections of different views fit in one list. */
export const defineProjection = <D extends ViewDoc>(p: Projection<D>): Projection => p as unknown as Projection;
