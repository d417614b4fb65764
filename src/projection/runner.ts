import { EventEmitter, setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import { MalformedEventError } from '../events/envelope.js';
import type { Store } from '../store/port.js';
import { waitForWakeUp } from '../store/wait.js';
import { applyBatch, DocCache } from './apply.js';
import { followUnderLease } from './follow.js';
import type { Projection } from './projection.js';

export interface RunnerOptions {
  /** Identifies this process in leases. */
  owner: string;
  logger: Logger;
  leaseTtlMs?: number;
  batchSize?: number;
  /** Consecutive failures at one position before the projector parks itself. */
  maxFailures?: number;
  /** Where batches come from; share one SharedLogReader between the runners of a process. */
  reader?: Pick<Store['events'], 'readAll'>;
  /**
   * After a wake-up, how long to let further appends gather before reading, so that one batch
   * (one transaction for all the views of the process) carries them. Nobody waits for it: a
   * read-your-writes wait (`waitFor`) cuts it short.
   */
  gatherMs?: number;
}

export type RunnerStatus = 'standby' | 'running' | 'parked' | 'stopped';

/** What the API, /health, /ready and the metrics read of a projector, in this thread or another. */
export interface Projector {
  readonly name: string;
  readonly status: RunnerStatus;
  /** The last position applied (or read from the checkpoint). */
  readonly position: number;
  readonly lastError: string | null;
  /** Resolves true once the view has applied `position` (read-your-writes), false after `timeoutMs`. */
  waitFor(position: number, timeoutMs: number): Promise<boolean>;
}

export const leaseName = (view: string): string => `projector:${view}`;

/** An error of the store or the disk rather than of the projection: SQLite result codes, system errors, the MongoDB driver's errors. */
export function isStoreOutage(error: unknown): boolean {
  const { code, name } = (error ?? {}) as { code?: unknown; name?: unknown };
  return (typeof code === 'string' && /^(SQLITE_[A-Z_]+|E[A-Z]+)$/.test(code)) || (typeof name === 'string' && name.startsWith('Mongo'));
}

/**
 * The view has applied events the log no longer has: the log lost its tail (a power cut between
 * the commit of appends a projector had read and their fsync). Appends from now on would take
 * those positions and be skipped, so the projector stops until the view is rebuilt.
 */
export class ViewAheadOfLogError extends Error {
  constructor(view: string, checkpoint: number, head: number) {
    super(`the ${view} view has applied the log up to position ${checkpoint}, but the log ends at ${head} (its tail was lost); rebuild the view: npm run replay -- --projection ${view}`);
    this.name = 'ViewAheadOfLogError';
  }
}

/** Documents a runner keeps between batches (see DocCache). */
const CACHE_DOCS = 10_000;

/**
 * Keeps one view up to date with the log: holds the view's lease (only one process projects a
 * view at a time; another takes over when the holder dies), reads batches after the checkpoint,
 * applies them, waits for appends when caught up.
 */
export class ProjectionRunner implements Projector {
  status: RunnerStatus = 'standby';
  /** The last position this process has applied (or read from the checkpoint). */
  position = 0;
  lastError: string | null = null;
  /** Emits 'progress' on every new position, status or error. */
  readonly progressed = new EventEmitter();
  /** Told when someone starts waiting for this view, so a runner gathering appends stops gathering. */
  private readonly awaited = new EventEmitter();
  private waiting = 0;
  /** Readers in another thread waiting for this view (see setRemoteWaiters). */
  private remoteWaiting = 0;
  private readonly cache = new DocCache(CACHE_DOCS);
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;
  private readonly ttl: number;
  private readonly batchSize: number;
  private readonly maxFailures: number;
  private readonly gatherMs: number;

  constructor(
    private readonly store: Store,
    readonly projection: Projection,
    private readonly opts: RunnerOptions,
  ) {
    this.ttl = opts.leaseTtlMs ?? 15_000;
    this.batchSize = opts.batchSize ?? 500;
    this.maxFailures = opts.maxFailures ?? 10;
    this.gatherMs = opts.gatherMs ?? 5;
    this.progressed.setMaxListeners(0);
    // Every waitFor listens on it while it waits: many concurrent readers are no leak.
    setMaxListeners(0, this.abort.signal);
  }

  get name(): string {
    return this.projection.spec.name;
  }

  async start(): Promise<void> {
    await this.store.views.ensure(this.projection.spec);
    this.position = await this.store.views.checkpoint(this.name);
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.setStatus('stopped');
  }

  private setStatus(status: RunnerStatus): void {
    if (this.status === status) return;
    this.status = status;
    this.progressed.emit('progress');
  }

  /** How many readers elsewhere wait for this view: while any do, the runner does not gather appends. */
  setRemoteWaiters(count: number): void {
    this.remoteWaiting = count;
    if (count > 0) this.awaited.emit('waiting');
  }

  /** Resolves true once the view has applied `position` (read-your-writes), false after `timeoutMs`. */
  async waitFor(position: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    if (this.position >= position) return true;
    this.waiting += 1;
    this.awaited.emit('waiting');
    try {
      while (this.position < position) {
        const left = deadline - Date.now();
        if (left <= 0 || this.abort.signal.aborted) return false;
        // Another process may hold the lease and project this view: read the shared checkpoint too.
        if (this.status === 'standby') this.position = Math.max(this.position, await this.store.views.checkpoint(this.name));
        await waitForWakeUp(this.progressed, 'progress', Math.min(left, this.status === 'standby' ? 50 : left), this.abort.signal);
      }
      return true;
    } finally {
      this.waiting -= 1;
    }
  }

  private run(): Promise<void> {
    const { views, events } = this.store;
    return followUnderLease(
      {
        lease: leaseName(this.name),
        owner: this.opts.owner,
        ttlMs: this.ttl,
        name: this.name,
        logger: this.opts.logger,
        position: () => this.position,
        acquired: async () => {
          this.position = await views.checkpoint(this.name);
          const head = await events.head();
          if (this.position > head) throw new ViewAheadOfLogError(this.name, this.position, head);
          // Someone else may have written the view since this process last held it.
          this.cache.clear();
        },
        step: async (lease) => {
          const batch = await (this.opts.reader ?? events).readAll({ after: this.position, limit: this.batchSize });
          if (batch.length === 0) {
            await events.waitForAppend(this.position, Math.min(1000, this.ttl / 3), this.abort.signal);
            if (this.waiting + this.remoteWaiting === 0) await waitForWakeUp(this.awaited, 'waiting', this.gatherMs, this.abort.signal);
            return;
          }
          this.position = await applyBatch(views, this.projection, batch, { view: this.name, checkpoint: this.name, lease, cache: this.cache });
          this.progressed.emit('progress');
        },
        // A malformed event will not get better by retrying: park at once so an operator looks. A
        // store outage (disk full, database unreachable) ends by itself: retry for as long as it lasts.
        parks: (error, failures) => error instanceof MalformedEventError || error instanceof ViewAheadOfLogError || (failures >= this.maxFailures && !isStoreOutage(error)),
        state: this,
      },
      views,
      this.abort.signal,
    );
  }
}
