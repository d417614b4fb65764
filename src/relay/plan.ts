import type { OutboxDoc } from '../../projections/outbox.js';
import type { NewEvent } from '../events/envelope.js';

/** Pure decisions of the relay: what an attempt's SMTP outcomes become in the log. */

export type OutcomeKind = 'delivered' | 'temporary' | 'permanent';

/** What happened to one recipient in one attempt. */
export interface RecipientOutcome {
  recipient: string;
  kind: OutcomeKind;
  /** The server's reply, or what went wrong before there was one. */
  response: string;
  /** Delivered to a server that took the DSN parameters: success notices are its to send, not ours. */
  dsnPassedOn?: boolean;
}

export interface RetryPolicy {
  retryBaseMs: number;
  retryMaxDelayMs: number;
  /** Counted from MailSent (`doc.sentAt`). */
  retryDeadlineMs: number;
}

/** Delay before attempt `attempt + 1` after attempt `attempt` failed temporarily: base · 2^(attempt−1), capped. */
export function backoffDelay(attempt: number, policy: Pick<RetryPolicy, 'retryBaseMs' | 'retryMaxDelayMs'>): number {
  return Math.min(policy.retryMaxDelayMs, policy.retryBaseMs * 2 ** Math.max(0, Math.min(attempt - 1, 40)));
}

/** An entry the relay should attempt now, judged from the entry itself (the stream's version of it when it matters). */
export const isDue = (doc: OutboxDoc, now: number): boolean => doc.status === 'pending' && Date.parse(doc.nextAttemptAt) <= now;

export interface AttemptPlan {
  events: NewEvent[];
  /** Recipients that failed for good in this attempt: the sender gets a bounce for them. */
  bounced: { recipient: string; response: string }[];
}

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    out.set(k, [...(out.get(k) ?? []), item]);
  }
  return out;
}

/**
 * The events recording attempt `attempt` of `doc`: a `MailDelivered` per distinct server reply of
 * the accepted recipients, a `MailDeliveryFailed` per distinct reply of the others. 5xx is
 * permanent; a temporary failure is retried after `backoffDelay`, but never past the deadline, and
 * becomes permanent once the deadline has passed. Outcomes for recipients that are no longer
 * pending in `doc` (someone else recorded them) are dropped.
 */
export function planAttempt(doc: OutboxDoc, outcomes: RecipientOutcome[], attempt: number, now: number, policy: RetryPolicy): AttemptPlan {
  const pending = new Set(doc.recipients.filter((r) => r.state === 'pending').map((r) => r.address.toLowerCase()));
  const seen = new Set<string>();
  const relevant = outcomes.filter((o) => {
    const key = o.recipient.toLowerCase();
    if (!pending.has(key) || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  const deadline = Date.parse(doc.sentAt) + policy.retryDeadlineMs;
  const expired = now >= deadline;
  const failures = relevant
    .filter((o) => o.kind !== 'delivered')
    .map((o) =>
      o.kind === 'temporary' && expired
        ? { recipient: o.recipient, permanent: true, response: `${o.response} (giving up: retry deadline passed)` }
        : { recipient: o.recipient, permanent: o.kind === 'permanent', response: o.response },
    );
  const nextAttemptAt = new Date(Math.min(now + backoffDelay(attempt, policy), deadline)).toISOString();
  const base = { mailId: doc.id, messageId: doc.messageId, attempt };

  const events: NewEvent[] = [];
  for (const [response, group] of groupBy(
    relevant.filter((o) => o.kind === 'delivered'),
    (o) => o.response,
  )) {
    events.push({ type: 'MailDelivered', data: { ...base, recipients: group.map((o) => o.recipient), response } });
  }
  for (const group of groupBy(failures, (f) => `${f.permanent}\n${f.response}`).values()) {
    const { permanent, response } = group[0]!;
    events.push({
      type: 'MailDeliveryFailed',
      data: { ...base, recipients: group.map((f) => f.recipient), response, permanent, nextAttemptAt: permanent ? null : nextAttemptAt },
    });
  }
  return { events, bounced: failures.filter((f) => f.permanent).map(({ recipient, response }) => ({ recipient, response })) };
}
