import { v7 as uuidv7 } from 'uuid';
import type { Lease, Store } from '../store/port.js';
import { sleep } from '../store/wait.js';
import { applyBatch } from './apply.js';
import type { Projection } from './projection.js';
import { leaseName } from './runner.js';

export interface RebuildProgress {
  view: string;
  position: number;
  head: number;
}

export interface RebuildResult {
  view: string;
  events: number;
  position: number;
  ms: number;
}

const LEASE_TTL_MS = 30_000;
/** How long to wait for a running server to hand over the live view. */
const HANDOFF_TIMEOUT_MS = 60_000;

async function acquireOrThrow(store: Store, name: string, owner: string, timeoutMs: number): Promise<Lease> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lease = await store.views.acquireLease(name, owner, LEASE_TTL_MS);
    if (lease) return lease;
    if (Date.now() > deadline) throw new Error(`lease ${name} is still held by another process after ${timeoutMs / 1000} s; is it stuck? try again or stop it`);
    await sleep(200);
  }
}

/**
 * Rebuilds a view from the log into a shadow, then swaps it in atomically. Safe while the server
 * runs: the live view keeps serving until the swap; for the last stretch the rebuild asks the
 * live projector for its lease, so nothing writes the live view while it is replaced.
 */
export async function rebuild(
  store: Store,
  projection: Projection,
  opts: { batchSize?: number; onProgress?: (p: RebuildProgress) => void } = {},
): Promise<RebuildResult> {
  const started = Date.now();
  const view = projection.spec.name;
  const shadow = `${view}__rebuild`;
  const owner = `rebuild-${uuidv7()}`;
  const batchSize = opts.batchSize ?? 2000;
  const shadowLease = await acquireOrThrow(store, leaseName(shadow), owner, 5_000);
  let liveLease: Lease | null = null;
  try {
    await store.views.drop(shadow);
    await store.views.ensure({ ...projection.spec, name: shadow });
    let position = 0;
    let events = 0;
    let renewedAt = Date.now();
    const catchUp = async (): Promise<void> => {
      const head = await store.events.head();
      while (position < head) {
        const batch = await store.events.readAll({ after: position, limit: batchSize });
        if (batch.length === 0) break;
        position = await applyBatch(store.views, projection, batch, { view: shadow, checkpoint: `rebuild:${view}`, lease: shadowLease });
        events += batch.length;
        opts.onProgress?.({ view, position, head });
        if (Date.now() - renewedAt > LEASE_TTL_MS / 3) {
          renewedAt = Date.now();
          await store.views.renewLease(shadowLease, LEASE_TTL_MS);
          if (liveLease) await store.views.renewLease(liveLease, LEASE_TTL_MS);
        }
      }
    };
    await catchUp();
    await store.views.requestLease(leaseName(view), owner);
    liveLease = await acquireOrThrow(store, leaseName(view), owner, HANDOFF_TIMEOUT_MS);
    // The live projector has stopped: apply what arrived meanwhile, then swap.
    await catchUp();
    await store.views.swap(projection.spec, shadow, view, position, liveLease);
    return { view, events, position, ms: Date.now() - started };
  } finally {
    if (liveLease) await store.views.releaseLease(liveLease);
    await store.views.releaseLease(shadowLease);
  }
}
