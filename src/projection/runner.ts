import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { MalformedEventError } from '../events/envelope.js';
import { LeaseLostError, type Lease, type Store } from '../store/port.js';
import { sleep, waitForWakeUp } from '../store/wait.js';
import { applyBatch } from './apply.js';
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
}

export type RunnerStatus = 'standby' | 'running' | 'parked' | 'stopped';

export const leaseName = (view: string): string => `projector:${view}`;

/**
 * Keeps one view up to date with the log: holds the view's lease (only one process projects a
 * view at a time; another takes over when the holder dies), reads batches after the checkpoint,
 * applies them, waits for appends when caught up.
 */
export class ProjectionRunner {
  status: RunnerStatus = 'standby';
  /** The last position this process has applied (or read from the checkpoint). */
  position = 0;
  lastError: string | null = null;
  private readonly progressed = new EventEmitter();
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;
  private readonly ttl: number;
  private readonly batchSize: number;
  private readonly maxFailures: number;

  constructor(
    private readonly store: Store,
    readonly projection: Projection,
    private readonly opts: RunnerOptions,
  ) {
    this.ttl = opts.leaseTtlMs ?? 15_000;
    this.batchSize = opts.batchSize ?? 500;
    this.maxFailures = opts.maxFailures ?? 10;
    this.progressed.setMaxListeners(0);
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
    this.status = 'stopped';
  }

  /** Resolves true once the view has applied `position` (read-your-writes), false after `timeoutMs`. */
  async waitFor(position: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.position < position) {
      const left = deadline - Date.now();
      if (left <= 0 || this.abort.signal.aborted) return false;
      // Another process may hold the lease and project this view: read the shared checkpoint too.
      if (this.status === 'standby') this.position = Math.max(this.position, await this.store.views.checkpoint(this.name));
      await waitForWakeUp(this.progressed, 'progress', Math.min(left, this.status === 'standby' ? 50 : left), this.abort.signal);
    }
    return true;
  }

  private async run(): Promise<void> {
    const { signal } = this.abort;
    const { views, events } = this.store;
    let lease: Lease | null = null;
    let renewedAt = 0;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (!lease) {
          lease = await views.acquireLease(leaseName(this.name), this.opts.owner, this.ttl);
          if (!lease) {
            this.status = 'standby';
            await sleep(Math.min(1000, this.ttl / 3), signal);
            continue;
          }
          renewedAt = Date.now();
          this.position = await views.checkpoint(this.name);
          this.status = 'running';
          this.opts.logger.info({ projector: this.name, token: lease.token, position: this.position }, 'projector lease acquired');
        } else if (Date.now() - renewedAt > this.ttl / 3) {
          if (!(await views.renewLease(lease, this.ttl))) {
            this.opts.logger.info({ projector: this.name }, 'projector lease lost or handed over');
            lease = null;
            continue;
          }
          renewedAt = Date.now();
        }
        const batch = await (this.opts.reader ?? events).readAll({ after: this.position, limit: this.batchSize });
        if (batch.length === 0) {
          await events.waitForAppend(this.position, Math.min(1000, this.ttl / 3), signal);
          continue;
        }
        this.position = await applyBatch(views, this.projection, batch, { view: this.name, checkpoint: this.name, lease });
        failures = 0;
        this.progressed.emit('progress');
      } catch (error) {
        if (error instanceof LeaseLostError) {
          lease = null;
          continue;
        }
        failures += 1;
        this.lastError = error instanceof Error ? error.message : String(error);
        // A malformed event will not get better by retrying: park at once so an operator looks.
        if (failures >= this.maxFailures || error instanceof MalformedEventError) {
          this.status = 'parked';
          this.opts.logger.error({ projector: this.name, position: this.position, err: error }, 'projector parked: fix the cause, then restart');
          if (lease) await views.releaseLease(lease).catch(() => undefined);
          return;
        }
        const delay = Math.min(30_000, 100 * 2 ** failures);
        this.opts.logger.warn({ projector: this.name, position: this.position, err: error, retryInMs: delay }, 'projector batch failed');
        await sleep(delay, signal);
      }
    }
    if (lease) await views.releaseLease(lease).catch(() => undefined);
  }
}
