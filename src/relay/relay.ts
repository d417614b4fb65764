import { EventEmitter } from 'node:events';
import { v7 as uuidv7 } from 'uuid';
import type { Logger } from 'pino';
import { outbox, outboxFromStream, pendingRecipients, type OutboxDoc } from '../../projections/outbox.js';
import type { EventOf, Meta, NewEvent } from '../events/envelope.js';
import { headerField, headerSectionEnd } from '../mail/headers.js';
import { mailStream } from '../mail/ids.js';
import { WrongExpectedVersionError, type Lease, type Store } from '../store/port.js';
import { sleep, waitForWakeUp } from '../store/wait.js';
import { deliverNotice, noticeRequested, type NoticeInput } from './dsn.js';
import { storePolicyArchive, type MtaStsSources } from './mta-sts.js';
import type { RelayOptions } from './options.js';
import { isDue, planAttempt, type RecipientOutcome, type RetryPolicy } from './plan.js';
import { createDeliverer, RelayStoppedError, type Deliverer, type MxResolver } from './transport.js';

/**
 * The relay: follows the `outbox` view and delivers each sent mail to its external recipients.
 *
 * Per message, at most one attempt is in flight across every process on the store:
 *  1. claim the message: a lease `relay:<Message-ID>` with a unique owner per Relay instance and a
 *     TTL longer than the attempt can last (the attempt is aborted at RELAY_SMTP_TIMEOUT_MS);
 *  2. re-read the mail's stream and fold it (`outboxFromStream`): the view may lag, the stream is
 *     the truth, so a recipient recorded as delivered or failed is never sent to again;
 *  3. send the stored bytes (same Message-ID on every attempt) to the pending recipients;
 *  4. append `MailDelivered` / `MailDeliveryFailed` with `expectedVersion` = the version read in
 *     step 2. A conflict means someone else appended: re-read and record only what is still
 *     pending there; never resend on a conflict;
 *  5. release the claim.
 *
 * What cannot be avoided (SMTP has no exactly-once): if the process dies, or the claim runs out,
 * between the server's reply to the message and the append in step 4, the next claimant finds the
 * recipients still pending and sends again. Only messages whose attempt was in flight at that
 * moment (at most RELAY_CONCURRENCY per process) can be delivered twice; every other message that
 * the relay acknowledged (recorded) is never sent again. A stop abandons attempts still running
 * after RELAY_SHUTDOWN_GRACE_MS the same way.
 */

export interface RelayDeps {
  /** Lease owner prefix (e.g. INSTANCE_ID); a unique suffix is added per instance. */
  owner?: string;
  /** MX lookups for direct delivery; defaults to `dns.promises`. */
  resolver?: MxResolver;
  /** Where MTA-STS policies come from (tests); defaults to the resolver's TXT lookups and HTTPS. */
  mtaSts?: MtaStsSources;
  /** Replaces the SMTP side (tests). */
  deliverer?: Deliverer;
  now?: () => number;
}

export interface RelayStats {
  attempts: number;
  delivered: number;
  temporaryFailures: number;
  permanentFailures: number;
  bounces: number;
  /** Appends that found the stream changed since it was read. */
  conflicts: number;
}

const claimName = (messageId: string): string => `relay:${messageId}`;
const PRUNE_CLAIMS_EVERY_MS = 10 * 60_000;

export class Relay {
  readonly owner: string;
  readonly stats: RelayStats = { attempts: 0, delivered: 0, temporaryFailures: 0, permanentFailures: 0, bounces: 0, conflicts: 0 };
  lastError: string | null = null;
  private readonly stopping = new AbortController();
  private readonly abortAttempts = new AbortController();
  private readonly wake = new EventEmitter();
  private readonly deliverer: Deliverer;
  private readonly now: () => number;
  private readonly policy: RetryPolicy;
  /** Message-IDs with an attempt running in this instance. */
  private readonly busy = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  /**
   * What this instance learnt from streams that the view may not show yet: don't look at the
   * entry again while the view's `streamVersion` is below `version`, until `until`.
   */
  private readonly settled = new Map<string, { version: number; until: number }>();
  private loop: Promise<void> | null = null;
  private head = 0;

  constructor(
    private readonly store: Store,
    private readonly options: RelayOptions,
    private readonly logger: Logger,
    deps: RelayDeps = {},
  ) {
    this.owner = `${deps.owner ?? 'relay'}:${uuidv7()}`;
    this.deliverer =
      deps.deliverer ??
      createDeliverer(options, {
        logger,
        ...(deps.resolver ? { resolver: deps.resolver } : {}),
        ...(deps.mtaSts ? { mtaSts: deps.mtaSts } : {}),
        policyArchive: storePolicyArchive(store, this.owner),
      });
    this.now = deps.now ?? Date.now;
    this.policy = {
      retryBaseMs: options.RELAY_RETRY_BASE_MS,
      retryMaxDelayMs: options.RELAY_RETRY_MAX_DELAY_MS,
      retryDeadlineMs: options.RELAY_RETRY_DEADLINE_MS,
    };
    this.wake.setMaxListeners(0);
  }

  /** Attempts running now. */
  get inFlight(): number {
    return this.busy.size;
  }

  async start(): Promise<void> {
    if (!this.options.RELAY_ENABLED) {
      this.logger.info('relay disabled (RELAY_ENABLED=false): outbound mail stays queued for another process');
      return;
    }
    // The outbox projector creates the view too; whoever comes first.
    await this.store.views.ensure(outbox.spec);
    this.head = await this.store.events.head();
    this.loop = this.run();
    this.logger.info({ owner: this.owner, mode: this.options.SMTP_RELAY_HOST ? `smart host ${this.options.SMTP_RELAY_HOST}` : 'direct to MX' }, 'relay started');
  }

  /** Stops scanning, gives running attempts RELAY_SHUTDOWN_GRACE_MS, then abandons them (see the class comment). */
  async stop(): Promise<void> {
    if (this.stopping.signal.aborted) {
      await this.loop;
      return;
    }
    this.stopping.abort();
    this.wake.emit('wake');
    await this.loop;
    if (this.running.size) {
      const grace = new Promise<void>((resolve) => setTimeout(resolve, this.options.RELAY_SHUTDOWN_GRACE_MS).unref());
      await Promise.race([Promise.allSettled([...this.running]), grace]);
    }
    this.abortAttempts.abort(new RelayStoppedError());
    await Promise.allSettled([...this.running]);
  }

  private async run(): Promise<void> {
    const signal = this.stopping.signal;
    let failures = 0;
    let prunedAt = 0;
    while (!signal.aborted) {
      try {
        if (this.now() - prunedAt > PRUNE_CLAIMS_EVERY_MS) {
          // Every message leaves a claim row; the free ones mean nothing any more (the mail's
          // stream, not the claim's token, is what prevents a second delivery).
          prunedAt = this.now();
          const pruned = await this.store.views.pruneLeases('relay:');
          if (pruned) this.logger.debug({ pruned }, 'relay: pruned free claims');
        }
        const { started, nextDueAt } = await this.scan();
        failures = 0;
        if (started > 0 && this.busy.size < this.options.RELAY_CONCURRENCY) continue;
        await this.idle(nextDueAt);
      } catch (error) {
        failures += 1;
        this.lastError = error instanceof Error ? error.message : String(error);
        const delay = Math.min(30_000, 100 * 2 ** Math.min(failures, 10));
        this.logger.warn({ err: error, retryInMs: delay }, 'relay scan failed');
        await sleep(delay, signal);
      }
    }
  }

  /** Lists due entries and starts attempts for as many as there are free slots. */
  private async scan(): Promise<{ started: number; nextDueAt: number | null }> {
    const now = this.now();
    for (const [id, s] of this.settled) if (s.until <= now) this.settled.delete(id);
    const entries = (await this.store.views.list(outbox.spec.name, {
      where: { status: 'pending' },
      orderBy: { field: 'nextAttemptAt', direction: 'asc' },
      limit: this.options.RELAY_BATCH_SIZE,
    })) as OutboxDoc[];
    let started = 0;
    let nextDueAt: number | null = null;
    for (const entry of entries) {
      if (this.busy.size >= this.options.RELAY_CONCURRENCY || this.stopping.signal.aborted) break;
      if (!isDue(entry, now)) {
        nextDueAt = Date.parse(entry.nextAttemptAt);
        break; // sorted by nextAttemptAt: nothing after this one is due either
      }
      if (this.busy.has(entry.messageId)) continue;
      const known = this.settled.get(entry.id);
      if (known && entry.streamVersion < known.version) continue; // the view has not caught up with what we did
      this.settled.delete(entry.id);
      this.busy.add(entry.messageId);
      const task = this.attempt(entry)
        .catch((error: unknown) => {
          // Not an SMTP outcome (those are recorded) but a store or programming error: back off this entry.
          this.remember(entry, entry.streamVersion + 1, Math.max(5000, this.options.RELAY_POLL_INTERVAL_MS));
          this.lastError = error instanceof Error ? error.message : String(error);
          this.logger.error({ err: error, mailId: entry.id, messageId: entry.messageId }, 'relay attempt failed');
        })
        .finally(() => {
          this.busy.delete(entry.messageId);
          this.running.delete(task);
          this.wake.emit('wake');
        });
      this.running.add(task);
      started += 1;
    }
    return { started, nextDueAt };
  }

  /**
   * Waits for something to do: a free slot, an append (then for the outbox view to catch up with
   * it), the next due time, or the poll interval.
   */
  private async idle(nextDueAt: number | null): Promise<void> {
    const signal = this.stopping.signal;
    const poll = this.options.RELAY_POLL_INTERVAL_MS;
    const ms = Math.max(1, Math.min(poll, nextDueAt === null ? poll : nextDueAt - this.now()));
    const done = new AbortController();
    const onStop = (): void => done.abort();
    signal.addEventListener('abort', onStop, { once: true });
    try {
      await Promise.race([
        this.store.events.waitForAppend(this.head, ms, done.signal),
        waitForWakeUp(this.wake, 'wake', ms, done.signal),
      ]);
    } finally {
      done.abort();
      signal.removeEventListener('abort', onStop);
    }
    const head = await this.store.events.head();
    if (head <= this.head) return;
    this.head = head;
    // New events: give the outbox projector (in this process or another) a moment to apply them.
    const deadline = this.now() + poll;
    while (!signal.aborted && this.now() < deadline && (await this.store.views.checkpoint(outbox.spec.name)) < head) {
      await waitForWakeUp(this.wake, 'wake', Math.min(25, poll), signal);
    }
  }

  /** Skip `entry` while the view shows it below stream version `version`, for at most `forMs`. */
  private remember(entry: OutboxDoc, version: number, forMs = Math.max(10_000, 10 * this.options.RELAY_POLL_INTERVAL_MS)): void {
    this.settled.set(entry.id, { version, until: this.now() + forMs });
  }

  /** One attempt at one message, under its claim. */
  private async attempt(entry: OutboxDoc): Promise<void> {
    const { views } = this.store;
    const lease = await views.acquireLease(claimName(entry.messageId), this.owner, this.options.RELAY_CLAIM_TTL_MS);
    if (!lease) {
      // Another relay has it: look again once the view moves, or after a while (its holder may have died).
      this.remember(entry, entry.streamVersion + 1, Math.max(this.options.RELAY_POLL_INTERVAL_MS, 1000));
      return;
    }
    try {
      await this.attemptClaimed(entry, lease);
    } finally {
      await views.releaseLease(lease).catch((error: unknown) => this.logger.warn({ err: error, messageId: entry.messageId }, 'relay: releasing a claim failed'));
    }
  }

  private async attemptClaimed(entry: OutboxDoc, lease: Lease): Promise<void> {
    const stream = mailStream(entry.id);
    let read = await this.store.events.readStream(stream);
    let doc = outboxFromStream(read);
    const now = this.now();
    if (!doc || !isDue(doc, now)) {
      this.remember(entry, doc?.streamVersion ?? entry.streamVersion + 1);
      return;
    }
    const sent = read.find((e): e is EventOf<'MailSent'> => e.type === 'MailSent')!;
    const recipients = pendingRecipients(doc);
    const attempt = doc.attempts + 1;
    const log = this.logger.child({ mailId: doc.id, messageId: doc.messageId, attempt });
    this.stats.attempts += 1;

    let raw: Buffer | null = null;
    let outcomes: RecipientOutcome[];
    try {
      raw = await this.store.blobs.get(doc.raw.sha256);
    } catch (error) {
      log.error({ err: error, sha256: doc.raw.sha256 }, 'relay: the message blob cannot be read');
    }
    if (raw) {
      const signal = AbortSignal.any([this.abortAttempts.signal, AbortSignal.timeout(this.options.RELAY_SMTP_TIMEOUT_MS)]);
      try {
        const end = headerSectionEnd(raw);
        const ignoreTlsPolicy = /^no$/i.test(headerField(raw.subarray(0, end < 0 ? raw.length : end), 'tls-required') ?? '');
        outcomes = await this.deliverer.deliver({ raw, mailFrom: doc.mailFrom, recipients, dsn: sent.data.dsn, requireTls: sent.data.requireTls, ignoreTlsPolicy, signal });
      } catch (error) {
        if (error instanceof RelayStoppedError) {
          // Abandoned on shutdown: record nothing, the next claimant tries again (possible duplicate).
          log.warn({ recipients }, 'relay: attempt abandoned on shutdown');
          return;
        }
        throw error;
      }
    } else {
      outcomes = recipients.map((recipient) => ({ recipient, kind: 'temporary', response: '451 4.3.0 message content unavailable' }));
    }
    // Keeps the claim while recording; a lost claim is only worth a warning: the append below is
    // fenced by the stream version, not by the claim.
    const kept = await this.store.views.renewLease(lease, this.options.RELAY_CLAIM_TTL_MS).catch(() => true);
    if (!kept) log.warn('relay: the claim ran out during the attempt; another relay may have sent this message too');

    // One moment for this attempt's decisions: a re-plan after a conflict must not turn a deferral
    // into a failure (past the deadline) that the notices sent below did not report.
    const decidedAt = this.now();
    let plan = planAttempt(doc, outcomes, attempt, decidedAt, this.policy);
    const meta: Meta = { correlationId: sent.meta.correlationId, causationId: sent.eventId, actor: { kind: 'relay', id: this.owner } };

    // Notices go first: if we die before the outcome is recorded, the retry has the same attempt
    // number and so the same notice ids, which are already there. A notice that cannot be stored
    // must not stop the recording (recipients accepted in this attempt would be sent again).
    // Without NOTIFY a failure gets a bounce and a success nothing (RFC 3461); NOTIFY=SUCCESS gets
    // a "relayed" notice when the next hop did not take the DSN parameters (one that did reports
    // the delivery itself, RFC 3461 5.2.2); NOTIFY=DELAY a "delayed" one at a recipient's first deferral.
    const dsn = sent.data.dsn;
    const passedOn = new Set(outcomes.filter((o) => o.dsnPassedOn).map((o) => o.recipient.toLowerCase()));
    const outcomesOf = (type: 'MailDelivered' | 'MailDeliveryFailed') =>
      plan.events.flatMap((e) => (e.type === type && !(e.type === 'MailDeliveryFailed' && e.data.permanent) ? e.data.recipients.map((recipient) => ({ recipient, response: e.data.response })) : []));
    const before = doc.recipients;
    const firstAttempt = (recipient: string): boolean => before.find((r) => r.address.toLowerCase() === recipient.toLowerCase())?.attempts === 0;
    const notices: [NoticeInput['action'], NoticeInput['recipients']][] = [
      ['failed', plan.bounced.filter((b) => noticeRequested(dsn, b.recipient, 'FAILURE'))],
      ['delayed', outcomesOf('MailDeliveryFailed').filter((d) => firstAttempt(d.recipient) && noticeRequested(dsn, d.recipient, 'DELAY'))],
      ['relayed', outcomesOf('MailDelivered').filter((d) => noticeRequested(dsn, d.recipient, 'SUCCESS') && !passedOn.has(d.recipient.toLowerCase()))],
    ];
    const willRetryUntil = new Date(Date.parse(doc.sentAt) + this.policy.retryDeadlineMs);
    for (const [action, recipients] of notices) {
      if (recipients.length === 0) continue;
      try {
        const noticeId = await deliverNotice(this.store, { action, entry: doc, sent: sent.data, recipients, attempt, willRetryUntil, raw, heloName: this.options.RELAY_HELO_NAME, now: new Date(decidedAt), meta });
        if (noticeId && action === 'failed') this.stats.bounces += 1;
      } catch (error) {
        log.error({ err: error, action, recipients }, 'relay: the delivery status notice could not be stored');
      }
    }

    let version = doc.streamVersion;
    let storeErrors = 0;
    while (plan.events.length > 0) {
      try {
        const result = await this.store.events.append(stream, plan.events, { expectedVersion: read[read.length - 1]!.version, meta });
        version = result.version;
        this.count(plan.events);
        log.info({ outcomes: outcomes.map((o) => `${o.recipient} ${o.kind}${o.dsnPassedOn ? ' (DSN request passed on)' : ''}: ${o.response}`) }, 'relay attempt recorded');
        break;
      } catch (error) {
        if (!(error instanceof WrongExpectedVersionError)) {
          // The message went out: try hard to record that, or the next claimant sends it again.
          storeErrors += 1;
          if (storeErrors > 5 || this.abortAttempts.signal.aborted) throw error;
          log.warn({ err: error, retry: storeErrors }, 'relay: recording the attempt failed, retrying');
          await sleep(100 * 2 ** storeErrors);
          continue;
        }
        // Someone else appended: record only what is still pending in the stream as it is now.
        this.stats.conflicts += 1;
        read = await this.store.events.readStream(stream);
        doc = outboxFromStream(read);
        if (!doc) return;
        version = doc.streamVersion;
        plan = planAttempt(doc, outcomes, Math.max(attempt, doc.attempts + 1), decidedAt, this.policy);
      }
    }
    this.remember(entry, version);
  }

  private count(events: NewEvent[]): void {
    for (const e of events) {
      if (e.type === 'MailDelivered') this.stats.delivered += e.data.recipients.length;
      else if (e.type === 'MailDeliveryFailed') this.stats[e.data.permanent ? 'permanentFailures' : 'temporaryFailures'] += e.data.recipients.length;
    }
  }
}
