import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { LeaseLostError, type Lease, type ViewStore } from '../store/port.js';
import { sleep } from '../store/wait.js';
import type { RunnerStatus } from './runner.js';

export interface LeasedFollower {
  /** The lease that lets one process at a time follow the log this way. */
  lease: string;
  owner: string;
  ttlMs: number;
  /** Names this follower in the log lines (`{ projector: … }`). */
  name: string;
  logger: Logger;
  /** The last position it has gone over, for the log lines. */
  position(): number;
  /** The lease is held by another process: called before each pause. */
  standby?(): Promise<void>;
  /** The lease was just taken: set up the position to go on from (a throw parks or retries like any failure). */
  acquired(lease: Lease): Promise<void>;
  /** One read of the log and what it leads to, or a wait for appends. `renew` keeps the lease through a long step. */
  step(lease: Lease, renew: () => Promise<void>): Promise<void>;
  /** Whether a failure (the `failures`th in a row) parks the follower rather than being retried. */
  parks(error: unknown, failures: number): boolean;
  /** What /health and the metrics read; every change of it is emitted as 'progress' on `progressed`. */
  state: { status: RunnerStatus; lastError: string | null; readonly progressed: EventEmitter };
}

/**
 * The loop of a follower of the log that one process at a time runs (a projector, the local
 * delivery follower): takes the lease, or stands by while another process holds it; renews it
 * once a third of its time is gone; runs `step` again and again; retries a failure with back-off,
 * or parks; releases the lease when `signal` stops it.
 */
export async function followUnderLease(f: LeasedFollower, views: ViewStore, signal: AbortSignal): Promise<void> {
  let lease: Lease | null = null;
  let renewedAt = 0;
  let failures = 0;
  const { state } = f;
  const report = (change: { status?: RunnerStatus; error?: string | null }): void => {
    if (change.status) state.status = change.status;
    if (change.error !== undefined) state.lastError = change.error;
    state.progressed.emit('progress');
  };
  const renew = async (held: Lease): Promise<void> => {
    if (Date.now() - renewedAt < f.ttlMs / 3) return;
    if (!(await views.renewLease(held, f.ttlMs))) throw new LeaseLostError(held);
    renewedAt = Date.now();
  };
  while (!signal.aborted) {
    try {
      if (lease) await renew(lease);
      else {
        lease = await views.acquireLease(f.lease, f.owner, f.ttlMs);
        if (!lease) {
          await f.standby?.();
          if (state.status !== 'standby') report({ status: 'standby' });
          await sleep(Math.min(1000, f.ttlMs / 3), signal);
          continue;
        }
        renewedAt = Date.now();
        await f.acquired(lease);
        report({ status: 'running' });
        f.logger.info({ projector: f.name, token: lease.token, position: f.position() }, 'lease acquired');
      }
      const held: Lease = lease;
      await f.step(held, () => renew(held));
      if (failures > 0) report({ error: null });
      failures = 0;
    } catch (error) {
      if (error instanceof LeaseLostError) {
        f.logger.info({ projector: f.name }, 'lease lost or handed over');
        lease = null;
        continue;
      }
      failures += 1;
      report({ error: error instanceof Error ? error.message : String(error) });
      if (f.parks(error, failures)) {
        report({ status: 'parked' });
        f.logger.error({ projector: f.name, position: f.position(), err: error }, 'parked: fix the cause, then restart');
        break;
      }
      const delay = Math.min(30_000, 100 * 2 ** failures);
      f.logger.warn({ projector: f.name, position: f.position(), err: error, retryInMs: delay }, 'failed; retrying');
      await sleep(delay, signal);
    }
  }
  if (lease) await views.releaseLease(lease).catch(() => undefined);
}
