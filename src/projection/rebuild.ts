import { v7 as uuidv7 } from 'uuid';
import type { Lease, ShadowWriter, Store, ViewStore } from '../store/port.js';
import { sleep } from '../store/wait.js';
import { applyBatch, DocCache } from './apply.js';
import type { Projection } from './projection.js';
import { leaseName } from './runner.js';

export interface RebuildProgress {
  position: number;
  head: number;
}

export interface RebuildResult {
  views: string[];
  /** Events read from the log (each read once, whatever the number of views). */
  events: number;
  position: number;
  ms: number;
}

const LEASE_TTL_MS = 30_000;
/** Documents kept per view between batches: enough for the ones a stretch of the log keeps touching. */
const CACHE_DOCS = 20_000;
/** How long to wait for a running server to hand over the live views. */
const HANDOFF_TIMEOUT_MS = 60_000;

/** For stores without a write-behind writer: every commit written before it resolves. */
const writeThrough = (views: ViewStore): ShadowWriter => ({
  indexesAsRowsArrive: false,
  load: (view, ids) => views.load(view, ids),
  commit: (c) => views.commit(c),
  flush: async () => undefined,
  close: async () => undefined,
});

async function acquireOrThrow(store: Store, name: string, owner: string, timeoutMs: number, signal?: AbortSignal): Promise<Lease> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const lease = await store.views.acquireLease(name, owner, LEASE_TTL_MS);
    if (lease) return lease;
    if (Date.now() > deadline) throw new Error(`lease ${name} is still held by another process after ${timeoutMs / 1000} s; is a rebuild already running? try again later`);
    await sleep(200, signal);
  }
}

/**
 * Rebuilds views from the log into shadows, in one pass over the log, then swaps each in
 * atomically. Safe while the server runs: the live views keep serving until the swap; for the
 * last stretch the rebuild asks the live projectors for their leases, so nothing writes a live
 * view while it is replaced. Where the writes run on the same thread as the fold, the shadows get
 * their indexes once the bulk of the log is in (building an index once is cheaper than keeping it
 * up to date row by row); where a writer thread has time to spare, it keeps them up to date.
 */
export async function rebuild(
  store: Store,
  projections: Projection[],
  /** `signal`: stops the rebuild between batches; the live views stay as they were and are handed back. */
  opts: { batchSize?: number; onProgress?: (p: RebuildProgress) => void; signal?: AbortSignal } = {},
): Promise<RebuildResult> {
  const started = Date.now();
  const owner = `rebuild-${uuidv7()}`;
  // Small enough that a batch's events and documents die young: with 10,000 they outlived the
  // collector's young generation, and replay spent a third of its time collecting.
  const batchSize = opts.batchSize ?? 500;
  const shadows: { projection: Projection; view: string; shadow: string; lease: Lease; cache: DocCache }[] = [];
  const liveLeases: Lease[] = [];
  const requested: string[] = [];
  const { signal } = opts;
  const writer = store.views.shadowWriter?.() ?? writeThrough(store.views);
  try {
    for (const projection of projections) {
      const view = projection.spec.name;
      const shadow = `${view}__rebuild`;
      const lease = await acquireOrThrow(store, leaseName(shadow), owner, 5_000, signal);
      shadows.push({ projection, view, shadow, lease, cache: new DocCache(CACHE_DOCS) });
      await store.views.drop(shadow);
      await store.views.ensure({ ...projection.spec, name: shadow, indexes: writer.indexesAsRowsArrive ? projection.spec.indexes : [] });
    }
    let position = 0;
    let events = 0;
    let renewedAt = Date.now();
    const catchUp = async (): Promise<void> => {
      const head = await store.events.head();
      while (position < head) {
        signal?.throwIfAborted();
        const batch = await store.events.readAll({ after: position, limit: batchSize });
        if (batch.length === 0) break;
        // All views at once: the store may write them in one transaction.
        await Promise.all(
          shadows.map((s) => applyBatch(writer, s.projection, batch, { view: s.shadow, checkpoint: `rebuild:${s.view}`, lease: s.lease, cache: s.cache })),
        );
        position = batch.at(-1)!.position;
        events += batch.length;
        opts.onProgress?.({ position, head });
        if (Date.now() - renewedAt > LEASE_TTL_MS / 3) {
          renewedAt = Date.now();
          for (const lease of [...shadows.map((s) => s.lease), ...liveLeases]) await store.views.renewLease(lease, LEASE_TTL_MS);
        }
      }
    };
    await catchUp();
    await writer.flush();
    for (const s of shadows) await store.views.ensure({ ...s.projection.spec, name: s.shadow });
    for (const s of shadows) {
      requested.push(leaseName(s.view));
      await store.views.requestLease(leaseName(s.view), owner);
    }
    for (const s of shadows) liveLeases.push(await acquireOrThrow(store, leaseName(s.view), owner, HANDOFF_TIMEOUT_MS, signal));
    // The live projectors have stopped: apply what arrived meanwhile, then swap.
    await catchUp();
    await writer.flush();
    for (const [i, s] of shadows.entries()) await store.views.swap(s.projection.spec, s.shadow, s.view, position, liveLeases[i]!);
    return { views: shadows.map((s) => s.view), events, position, ms: Date.now() - started };
  } finally {
    await writer.close();
    // A rebuild that stops early must not leave the live projectors asked to hand over.
    for (const name of requested) await store.views.withdrawRequest(name, owner);
    for (const lease of [...liveLeases, ...shadows.map((s) => s.lease)]) await store.views.releaseLease(lease);
  }
}
