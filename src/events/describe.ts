import type { StoredEvent } from './envelope.js';
import type { Address, DsnRequest } from './types.js';

export interface EventSummary {
  position: number;
  type: StoredEvent['type'];
  at: string;
  actor: string | null;
  details: Record<string, unknown>;
}

const addresses = (list: Address[]): string => list.map((a) => a.address).join(', ');

/** The fields of an event a person needs to follow a mail's history; never secrets or bodies. */
/** A submission's DSN request on one line: `RET=FULL ENVID=x; a@b NOTIFY=SUCCESS ORCPT=rfc822;c@d`. */
function describeDsn(dsn: DsnRequest): string {
  const message = [dsn.ret ? `RET=${dsn.ret}` : '', dsn.envid ? `ENVID=${dsn.envid}` : ''].filter(Boolean).join(' ');
  const recipients = dsn.recipients.map((r) => [r.address, r.notify ? `NOTIFY=${r.notify.length ? r.notify.join(',') : 'NEVER'}` : '', r.orcpt ? `ORCPT=${r.orcpt}` : ''].filter(Boolean).join(' '));
  return [message, ...recipients].filter(Boolean).join('; ');
}

export function describeEvent(e: StoredEvent): EventSummary {
  const actor = e.meta.actor.id ? `${e.meta.actor.kind}:${e.meta.actor.id}` : e.meta.actor.kind;
  const base = { position: e.position, type: e.type, at: e.recordedAt, actor };
  switch (e.type) {
    case 'UserRegistered':
      return { ...base, details: { email: e.data.email, name: e.data.name, role: e.data.role } };
    case 'UserPasswordChanged':
    case 'UserDisabled':
      return { ...base, details: { userId: e.data.userId } };
    case 'MailboxCreated':
      return { ...base, details: { mailboxId: e.data.mailboxId, address: e.data.address } };
    case 'AliasAdded':
    case 'AliasRemoved':
      return { ...base, details: { address: e.data.address, mailboxId: e.data.mailboxId } };
    case 'DomainAdded':
      return { ...base, details: { domain: e.data.domain } };
    case 'MtaStsPolicyFetched':
      return { ...base, details: { domain: e.data.domain, policyId: e.data.policyId, mode: e.data.mode, mx: e.data.mx.join(', '), maxAge: e.data.maxAge } };
    case 'DraftCreated':
    case 'DraftUpdated':
      return { ...base, details: { subject: e.data.draft.subject, to: addresses(e.data.draft.to) } };
    case 'DraftDeleted':
    case 'MailDeleted':
    case 'MailRead':
    case 'MailUnread':
      return { ...base, details: {} };
    case 'MailTrashed':
    case 'MailRestored':
      return { ...base, details: { folder: e.data.folder } };
    case 'MailReceived':
      return {
        ...base,
        details: {
          messageId: e.data.message.messageId,
          mailFrom: e.data.envelope.mailFrom,
          rcptTo: e.data.envelope.rcptTo.join(', '),
          subject: e.data.message.subject,
          remoteAddress: e.data.envelope.remoteAddress,
          tls: e.data.envelope.tls,
          raw: e.data.raw.sha256,
          ...(e.data.authResults ? { spf: e.data.authResults.spf, dkim: e.data.authResults.dkim, dmarc: e.data.authResults.dmarc } : {}),
        },
      };
    case 'MailSent':
      return {
        ...base,
        details: {
          messageId: e.data.messageId,
          mailFrom: e.data.envelope.mailFrom,
          rcptTo: e.data.envelope.rcptTo.join(', '),
          ...(e.data.localCopies ? { localCopies: e.data.localCopies.recipients.map((r) => r.address).join(', ') } : {}),
          ...(e.data.dsn ? { dsn: describeDsn(e.data.dsn) } : {}),
          ...(e.data.requireTls ? { requireTls: 'REQUIRETLS: verified TLS on every hop' } : {}),
          ...(e.data.notice ? { notice: 'a delivery status notice this server sends to the sender' } : {}),
          subject: e.data.message.subject,
        },
      };
    case 'MailDelivered':
      return { ...base, details: { recipients: e.data.recipients.join(', '), attempt: e.data.attempt, response: e.data.response } };
    case 'MailDeliveryFailed':
      return {
        ...base,
        details: { recipients: e.data.recipients.join(', '), attempt: e.data.attempt, permanent: e.data.permanent, response: e.data.response, nextAttemptAt: e.data.nextAttemptAt },
      };
  }
}
