import type { Logger } from 'pino';
import { MalformedEventError, type EventOf } from '../events/envelope.js';
import { LeaseLostError, type Lease, type Store, type ViewSpec } from '../store/port.js';
import { sleep } from '../store/wait.js';
import { appendMails, planLocalCopies } from './commands.js';

/** One process at a time follows the log (another takes over when it dies). */
const LEASE = 'local-delivery';
/**
 * The views store fences a checkpoint by a lease and keeps it with a view; this one has no
 * documents and holds only the follower's checkpoint. It is not a projection: a replay leaves it.
 */
const CHECKPOINT_VIEW: ViewSpec = { name: 'local_delivery', indexed: [], indexes: [] };
const BATCH = 1000;
const LEASE_TTL_MS = 15_000;
/**
 * After a wake-up, how long appends gather before the next read. The API stores the copies itself
 * and this follower only repairs a send cut short, so it reads in large batches, not on every
 * append (while SMTP takes in mail, it would decode each message's event once more).
 */
const GATHER_MS = 200;

export type LocalDeliveryStatus = 'standby' | 'running' | 'parked' | 'stopped';

/**
 * Follows the log and makes sure every local recipient named in a `MailSent` (`localCopies`, sends
 * from the API) has its copy. The API appends those copies itself right after `MailSent`; a crash
 * between the two appends would leave the mail sent and the recipients without it. Appending a
 * copy that exists already changes nothing (the stream exists: a duplicate), so going over a send
 * twice, or racing the API, is harmless. The checkpoint moves only after a batch's copies are in.
 */
export class LocalDelivery {
  status: LocalDeliveryStatus = 'standby';
  /** The last position gone over. */
  position = 0;
  lastError: string | null = null;
  /** Copies this follower had to store itself (the send that decided them did not). */
  recovered = 0;
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    /** Identifies this process in the lease. */
    private readonly owner: string,
  ) {}

  async start(): Promise<void> {
    await this.store.views.ensure(CHECKPOINT_VIEW);
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.status = 'stopped';
  }

  private async deliver(sent: EventOf<'MailSent'>): Promise<void> {
    const planned = planLocalCopies(sent.data);
    if (planned.length === 0) return;
    const outcomes = await appendMails(this.store, planned, { ...sent.meta, causationId: sent.eventId });
    const stored = outcomes.filter((o) => o.stored === 'new');
    if (stored.length === 0) return;
    this.recovered += stored.length;
    this.logger.warn({ mailId: sent.data.mailId, messageId: sent.data.messageId, copies: stored.map((o) => o.mailId) }, 'stored local copies that their send had left out');
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
          lease = await views.acquireLease(LEASE, this.owner, LEASE_TTL_MS);
          if (!lease) {
            this.status = 'standby';
            await sleep(LEASE_TTL_MS / 3, signal);
            continue;
          }
          renewedAt = Date.now();
          // A log that lost its tail in a power cut ends before the checkpoint, and new sends take
          // those positions: go over them from the head (a copy made twice is stored once).
          this.position = Math.min(await views.checkpoint(LEASE), await events.head());
          this.status = 'running';
        } else if (Date.now() - renewedAt > LEASE_TTL_MS / 3) {
          if (!(await views.renewLease(lease, LEASE_TTL_MS))) {
            lease = null;
            continue;
          }
          renewedAt = Date.now();
        }
        const batch = await events.readAll({ after: this.position, limit: BATCH });
        if (batch.length === 0) {
          await events.waitForAppend(this.position, LEASE_TTL_MS / 3, signal);
          await sleep(GATHER_MS, signal);
          continue;
        }
        for (const e of batch) if (e.type === 'MailSent') await this.deliver(e);
        const last = batch.at(-1)!.position;
        await views.commit({ view: CHECKPOINT_VIEW.name, docs: [], checkpoint: { name: LEASE, position: last }, lease });
        this.position = last;
        failures = 0;
        this.lastError = null;
      } catch (error) {
        if (error instanceof LeaseLostError) {
          lease = null;
          continue;
        }
        failures += 1;
        this.lastError = error instanceof Error ? error.message : String(error);
        if (error instanceof MalformedEventError) {
          this.status = 'parked';
          this.logger.error({ position: this.position, err: error }, 'local delivery parked: fix the cause, then restart');
          break;
        }
        const delay = Math.min(30_000, 100 * 2 ** failures);
        this.logger.warn({ position: this.position, err: error, retryInMs: delay }, 'local delivery failed; retrying');
        await sleep(delay, signal);
      }
    }
    if (lease) await views.releaseLease(lease).catch(() => undefined);
  }
}
