import { rfc5322Date } from '../mail/headers.js';

/** What the trace line records of one SMTP transaction (RFC 5321 4.4). */
export interface TraceFacts {
  /** The name the client gave in HELO/EHLO ('' if none). */
  helo: string;
  remoteAddress: string;
  /** This server's name (SMTP_HOSTNAME). */
  by: string;
  /** smtp-server's transmission type: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848). */
  protocol: string;
  /** The transaction id, also the queue id of the 250 reply. */
  id: string;
  /** Named only when the message has a single envelope recipient: more would reveal Bcc recipients to each other. */
  recipient: string | null;
  at: Date;
}

/** Printable ASCII only, so a client's HELO can never break or extend the header. */
const printable = (s: string, max: number): string => s.replace(/[^\x21-\x7e]/g, '?').slice(0, max);

/**
 * The `Received:` field an SMTP server must put on top of every message it accepts (RFC 5321
 * 4.4), folded over lines joined by "\n" (rewriteHeaderSection turns them into the message's own
 * line ending).
 */
export function receivedHeader(t: TraceFacts): string {
  const ip = t.remoteAddress.replace(/^::ffff:/, '');
  const literal = ip.includes(':') ? `[IPv6:${ip}]` : `[${ip}]`;
  const from = `from ${t.helo ? printable(t.helo, 255) : literal} (${literal})`;
  const id = `by ${printable(t.by, 255)} (mailtrail) with ${t.protocol} id ${printable(t.id, 64)}`;
  const recipient = t.recipient ? `\n\tfor <${printable(t.recipient, 254)}>` : '';
  return `Received: ${from}\n\t${id}${recipient};\n\t${rfc5322Date(t.at)}`;
}
