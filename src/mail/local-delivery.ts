import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Logger } from 'pino';
import { MalformedEventError, type EventOf } from '../events/envelope.js';
import type { Projector, RunnerStatus } from '../projection/runner.js';
import { followUnderLease } from '../projection/follow.js';
import type { Store, ViewSpec } from '../store/port.js';
import { sleep, waitForWakeUp } from '../store/wait.js';
import { noticeLocalDelivered } from '../relay/dsn.js';
import { appendMails, planLocalCopies } from './commands.js';

/** Its name among the followers of the log, its lease (one process at a time) and its checkpoint. */
export const LOCAL_DELIVERY = 'local-delivery';
const LEASE = LOCAL_DELIVERY;
/**
 * The views store fences a checkpoint by a lease and keeps it with a view; this one has no
 * documents and holds only the follower's checkpoint. It is not a projection: a replay leaves it.
 */
const CHECKPOINT_VIEW: ViewSpec = { name: 'local_delivery', indexed: [], indexes: [] };
/** Events per read, as the projectors read them (they share what they read, see SharedLogReader). */
const BATCH = 500;
const LEASE_TTL_MS = 15_000;
/**
 * After a wake-up, how long appends gather before the next read. The API stores the copies itself
 * and this follower only repairs a send cut short: it need not look at every append at once.
 */
const GATHER_MS = 200;
/** How long after its MailSent a send is given to append its copies itself, before they count as left out. */
const SEND_GRACE_MS = 3000;

/**
 * Follows the log and makes sure every local recipient named in a `MailSent` (`localCopies`, sends
 * from the API) has its copy. The API appends those copies itself right after `MailSent`; a crash
 * between the two appends would leave the mail sent and the recipients without it. A copy that
 * exists is left alone, and one appended by both the API and this follower is stored once (its
 * stream is appended with "no stream" expected). The checkpoint moves only after a batch's copies
 * are in, and with them the delivery receipt the send asked for, if it is missing too. It runs in
 * the projectors' thread and reads the batches they read; /health and the metrics show it with them.
 */
export class LocalDelivery implements Projector {
  readonly name = LEASE;
  status: RunnerStatus = 'standby';
  /** The last position gone over. */
  position = 0;
  lastError: string | null = null;
  /** Emits 'progress' on every new position, status or error. */
  readonly progressed = new EventEmitter();
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    /** Identifies this process in the lease. */
    private readonly owner: string,
    /** Where batches come from: the projectors' SharedLogReader in their thread. */
    private readonly reader: Pick<Store['events'], 'readAll'> = store.events,
    /** The host name delivery receipts report from (SMTP_HOSTNAME). */
    private readonly reportingHost: string = os.hostname(),
  ) {
    this.progressed.setMaxListeners(0);
  }

  async start(): Promise<void> {
    await this.store.views.ensure(CHECKPOINT_VIEW);
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.setStatus('stopped');
  }

  async waitFor(position: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.position < position) {
      const left = deadline - Date.now();
      if (left <= 0 || this.abort.signal.aborted) return false;
      await waitForWakeUp(this.progressed, 'progress', left, this.abort.signal);
    }
    return true;
  }

  private setStatus(status: RunnerStatus): void {
    this.status = status;
    this.progressed.emit('progress');
  }

  /** The copies of `sent` that are not in the log yet, appended; then the delivery receipt it asked for, if that is missing too. */
  private async deliver(sent: EventOf<'MailSent'>): Promise<void> {
    const planned = planLocalCopies(sent.data);
    // Reads first: nearly always the API has stored them all, and a read costs no write or fsync.
    const exists = await Promise.all(planned.map(async (p) => (await this.store.events.readStream(p.streamId)).length > 0));
    const missing = planned.filter((_, i) => !exists[i]);
    if (missing.length > 0) {
      const outcomes = await appendMails(this.store, missing, { ...sent.meta, causationId: sent.eventId });
      const stored = outcomes.filter((o) => o.stored === 'new');
      if (stored.length > 0) this.logger.warn({ mailId: sent.data.mailId, messageId: sent.data.messageId, copies: stored.map((o) => o.mailId) }, 'stored local copies that their send had left out');
    }
    // Stored once (under the sent mail's id), whether the send got to it or not.
    const { data } = sent;
    await noticeLocalDelivered(this.store, {
      entry: { id: data.mailId, messageId: data.messageId, mailboxId: data.mailboxId, userId: data.userId, mailFrom: data.envelope.mailFrom, sentAt: sent.recordedAt },
      sent: { message: data.message, dsn: data.dsn },
      recipients: data.localCopies?.recipients.map((r) => r.address) ?? [],
      raw: data.raw,
      heloName: this.reportingHost,
      meta: { ...sent.meta, causationId: sent.eventId },
    });
  }

  private run(): Promise<void> {
    const { views, events } = this.store;
    const { signal } = this.abort;
    return followUnderLease(
      {
        lease: LEASE,
        owner: this.owner,
        ttlMs: LEASE_TTL_MS,
        name: LEASE,
        logger: this.logger,
        position: () => this.position,
        // Another process follows the log: its checkpoint is this one's position.
        standby: async () => {
          this.position = Math.max(this.position, await views.checkpoint(LEASE));
        },
        acquired: async (lease) => {
          this.position = await views.checkpoint(LEASE);
          const head = await events.head();
          if (this.position > head) {
            // The log lost its tail in a power cut, after this follower had gone over it: a send
            // that survived may have lost its copies with it, and new appends take those
            // positions. Go over the whole log again; copies that exist are left alone.
            this.logger.warn({ checkpoint: this.position, head }, 'local delivery: the log ends before its checkpoint; going over it again');
            await views.resetCheckpoint(LEASE, 0, lease);
            this.position = 0;
          }
        },
        step: async (lease, renew) => {
          const batch = await this.reader.readAll({ after: this.position, limit: BATCH });
          if (batch.length === 0) {
            await events.waitForAppend(this.position, LEASE_TTL_MS / 3, signal);
            await sleep(GATHER_MS, signal);
            return;
          }
          let last = this.position;
          let dueAt = 0;
          for (const e of batch) {
            if (e.type === 'MailSent' && e.data.localCopies) {
              // A send appends its copies right after MailSent: give it time to, or this follower
              // would store copies of sends that are about to finish (and warn of them).
              dueAt = Date.parse(e.recordedAt) + SEND_GRACE_MS;
              if (dueAt > Date.now()) break;
              dueAt = 0;
              await this.deliver(e);
              await renew();
            }
            last = e.position;
          }
          if (last > this.position) {
            await views.commit({ view: CHECKPOINT_VIEW.name, docs: [], checkpoint: { name: LEASE, position: last }, lease });
            this.position = last;
            this.progressed.emit('progress');
          }
          // Stopped before a recent send: come back when its time is up.
          if (dueAt > 0) await sleep(Math.min(dueAt - Date.now(), LEASE_TTL_MS / 3), signal);
        },
        // A malformed event will not get better by retrying; anything else (a store outage) is retried.
        parks: (error) => error instanceof MalformedEventError,
        state: this,
      },
      views,
      signal,
    );
  }
}
