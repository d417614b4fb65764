import type { StoredEvent } from '../events/envelope.js';
import type { Lease, ViewDoc, ViewStore } from '../store/port.js';
import type { Projection } from './projection.js';

/**
 * Folds one batch of events into `view` and commits it with the checkpoint. A document already at
 * or past an event's position skips that event, so a batch applied twice (crash before the
 * checkpoint, a second delivery) changes nothing.
 */
export async function applyBatch(
  views: ViewStore,
  projection: Projection,
  events: StoredEvent[],
  target: { view: string; checkpoint: string; lease: Lease },
): Promise<number> {
  const last = events.at(-1);
  if (!last) throw new Error('applyBatch needs at least one event');
  const keyed = events.map((e) => [e, projection.keys(e)] as const);
  const state = await views.load(target.view, keyed.flatMap(([, ids]) => ids));
  const changed = new Set<string>();
  for (const [event, ids] of keyed) {
    for (const id of ids) {
      const current = state.get(id) ?? { doc: null, position: 0 };
      if (current.position >= event.position) continue;
      const doc: ViewDoc | null = projection.evolve(current.doc, event, id);
      state.set(id, { doc, position: event.position });
      changed.add(id);
    }
  }
  await views.commit({
    view: target.view,
    docs: [...changed].map((id) => ({ id, ...state.get(id)! })),
    checkpoint: { name: target.checkpoint, position: last.position },
    lease: target.lease,
  });
  return last.position;
}
