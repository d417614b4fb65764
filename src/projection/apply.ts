import type { StoredEvent } from '../events/envelope.js';
import type { Lease, ViewDoc, ViewStore } from '../store/port.js';
import type { Projection } from './projection.js';

type Versioned = { doc: ViewDoc | null; position: number };

/**
 * The documents a projector wrote or read lately, so one touched again (a mailbox's counts, on
 * every mail) is neither read nor parsed again. It mirrors the view only while nobody else writes
 * it: keep one per lease held without a break, and clear it on any failure (applyBatch does).
 * Two generations instead of a strict LRU: when the young one is full it becomes the old one and
 * the old one is dropped, all in O(1).
 */
export class DocCache {
  private young = new Map<string, Versioned>();
  private old = new Map<string, Versioned>();

  constructor(private readonly max: number) {}

  get(id: string): Versioned | undefined {
    return this.young.get(id) ?? this.old.get(id);
  }

  set(id: string, value: Versioned): void {
    this.young.set(id, value);
    if (this.young.size >= this.max / 2) {
      this.old = this.young;
      this.young = new Map();
    }
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }
}

/**
 * Folds one batch of events into `view` and commits it with the checkpoint. A document already at
 * or past an event's position skips that event, so a batch applied twice (crash before the
 * checkpoint, a second delivery) changes nothing. Only documents the batch changed are written.
 */
export async function applyBatch(
  views: Pick<ViewStore, 'load' | 'commit'>,
  projection: Projection,
  events: StoredEvent[],
  target: { view: string; checkpoint: string; lease: Lease; cache?: DocCache },
): Promise<number> {
  const last = events.at(-1);
  if (!last) throw new Error('applyBatch needs at least one event');
  const { cache } = target;
  const keyed: [StoredEvent, string[]][] = [];
  const state = new Map<string, Versioned>();
  const missing: string[] = [];
  for (const event of events) {
    const ids = projection.keys(event);
    if (ids.length === 0) continue;
    keyed.push([event, ids]);
    for (const id of ids) {
      if (state.has(id)) continue;
      const known = cache?.get(id);
      if (known) state.set(id, known);
      else {
        state.set(id, { doc: null, position: 0 });
        missing.push(id);
      }
    }
  }
  if (missing.length > 0) for (const [id, stored] of await views.load(target.view, missing)) state.set(id, stored);
  const changed = new Set<string>();
  for (const [event, ids] of keyed) {
    for (const id of ids) {
      const current = state.get(id)!;
      if (current.position >= event.position) continue;
      const doc = projection.evolve(current.doc, event, id);
      // Unchanged (an event this document ignores): nothing to write, and applying it again changes nothing either.
      if (doc === current.doc) continue;
      state.set(id, { doc, position: event.position });
      changed.add(id);
    }
  }
  try {
    await views.commit({
      view: target.view,
      docs: [...changed].map((id) => ({ id, ...state.get(id)! })),
      checkpoint: { name: target.checkpoint, position: last.position },
      lease: target.lease,
    });
  } catch (error) {
    cache?.clear();
    throw error;
  }
  if (cache) for (const [id, value] of state) cache.set(id, value);
  return last.position;
}
