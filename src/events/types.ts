import { z } from 'zod';

/**
 * Every event mailtrail records, as zod schemas. Events are facts: they carry what happened,
 * never bodies or attachments (those are blobs referenced by sha256).
 */

export const BlobRef = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
});
export type BlobRef = z.infer<typeof BlobRef>;

export const Address = z.object({ name: z.string(), address: z.string() });
export type Address = z.infer<typeof Address>;

export const Attachment = BlobRef.extend({
  id: z.string().min(1),
  filename: z.string().nullable(),
  contentType: z.string(),
  contentId: z.string().nullable().optional(),
});
export type Attachment = z.infer<typeof Attachment>;

/** What a message looks like, derived once when it enters the system so views never re-parse MIME. */
export const MessageSummary = z.object({
  messageId: z.string().nullable(),
  subject: z.string(),
  from: z.array(Address),
  to: z.array(Address),
  cc: z.array(Address),
  date: z.string().datetime({ offset: true }).nullable(),
  inReplyTo: z.string().nullable(),
  references: z.array(z.string()),
  snippet: z.string(),
  text: BlobRef.nullable(),
  html: BlobRef.nullable(),
  attachments: z.array(Attachment),
});
export type MessageSummary = z.infer<typeof MessageSummary>;

export const Draft = z.object({
  to: z.array(Address),
  cc: z.array(Address),
  bcc: z.array(Address),
  subject: z.string(),
  text: BlobRef.nullable(),
  html: BlobRef.nullable(),
  attachments: z.array(Attachment),
  inReplyTo: z.string().nullable(),
  references: z.array(z.string()),
  /** The address it goes out from, one of the mailbox's aliases; absent: the mailbox's own. */
  from: z.string().optional(),
});
export type Draft = z.infer<typeof Draft>;

export const Envelope = z.object({
  mailFrom: z.string(),
  rcptTo: z.array(z.string()),
});

/**
 * What a submitting client asked for with the DSN extension (RFC 3461): RET and ENVID of its MAIL
 * command, NOTIFY and ORCPT of each RCPT. `notify` null: not given (failures only, by default);
 * empty: NEVER. ENVID and ORCPT are kept as given, decoded from xtext.
 */
export const DsnRequest = z.object({
  ret: z.enum(['FULL', 'HDRS']).nullable(),
  envid: z.string().max(100).nullable(),
  recipients: z.array(
    z.object({
      address: z.string(),
      notify: z.array(z.enum(['SUCCESS', 'FAILURE', 'DELAY'])).nullable(),
      orcpt: z.string().max(500).nullable(),
    }),
  ),
});

export type DsnRequest = z.infer<typeof DsnRequest>;

export const AuthResults = z.object({
  spf: z.string(),
  dkim: z.string(),
  dmarc: z.string(),
  arc: z.string(),
  header: z.string(),
});

const id = z.string().min(1);

export const eventSchemas = {
  UserRegistered: z.object({
    userId: id,
    email: z.string(),
    name: z.string(),
    /** bcrypt hash, never the password. Kept in the log so the users view can be replayed. */
    passwordHash: z.string(),
    role: z.enum(['user', 'admin']),
  }),
  UserPasswordChanged: z.object({ userId: id, passwordHash: z.string() }),
  UserDisabled: z.object({ userId: id }),
  MailboxCreated: z.object({ mailboxId: id, userId: id, address: z.string() }),
  /**
   * Mail to `address` (in a local domain) goes to the mailbox, and its owner may send as it. In the
   * address's stream, the one an account of that address would have: an address is taken once.
   */
  AliasAdded: z.object({ address: z.string(), mailboxId: id, userId: id }),
  AliasRemoved: z.object({ address: z.string(), mailboxId: id, userId: id }),
  /** A domain mailtrail receives mail for, besides DEFAULT_DOMAIN. */
  DomainAdded: z.object({ domain: z.string().min(1) }),
  DraftCreated: z.object({ mailId: id, mailboxId: id, userId: id, draft: Draft }),
  DraftUpdated: z.object({ mailId: id, draft: Draft }),
  DraftDeleted: z.object({ mailId: id, mailboxId: id }),
  MailReceived: z.object({
    mailId: id,
    mailboxId: id,
    userId: id,
    raw: BlobRef,
    envelope: Envelope.extend({
      remoteAddress: z.string(),
      helo: z.string(),
      tls: z.boolean(),
      authUser: z.string().nullable(),
    }),
    message: MessageSummary,
    authResults: AuthResults.nullable(),
  }),
  /** The user asked to send: the final MIME is fixed, the relay takes it from here. */
  MailSent: z.object({
    mailId: id,
    mailboxId: id,
    userId: id,
    messageId: z.string(),
    raw: BlobRef,
    /** Recipients the relay delivers to; local recipients get a `MailReceived` copy of their own. */
    envelope: Envelope,
    message: MessageSummary,
    bcc: z.array(Address),
    /** The mail left the drafts folder (false for SMTP submissions, which never were drafts). */
    wasDraft: z.boolean(),
    /**
     * The DSN parameters asked for, when any: an SMTP submission's, for its relayed recipients
     * (its local ones were answered before the 250); an API send's delivery receipt, for every
     * recipient (the local delivery follower answers for local copies a crash left out).
     */
    dsn: DsnRequest.optional(),
    /**
     * The submission asked with REQUIRETLS (RFC 8689) that every hop use TLS with a verified
     * certificate and pass the request on: the relay delivers it only so, and bounces it otherwise.
     */
    requireTls: z.literal(true).optional(),
    /**
     * A delivery status notice this server sends, from the null sender, to a sender elsewhere who
     * asked for one (NOTIFY=SUCCESS on mail to a local mailbox). Not mail of the mailbox it is filed
     * under (the recipient's): it is in no folder; the relay delivers it like any other.
     */
    notice: z.literal(true).optional(),
    /**
     * A send from the API: its local recipients, decided when it was sent. Each gets a
     * `MailReceived` copy, stored once per mailbox (keyed by Message-ID and content). The API
     * appends the copies right after this event; the local delivery follower appends any that a
     * crash in between left out. Absent in SMTP submissions: their copies are stored before the
     * client gets its 250, and a client without one sends again.
     */
    localCopies: z
      .object({
        /** Who sent it, as the copies' envelope names the authenticated user. */
        authUser: z.string(),
        recipients: z.array(z.object({ address: z.string(), mailboxId: id, userId: id })),
      })
      .optional(),
  }),
  /** The owner opened the mail (or marked it read); MailUnread undoes it. */
  MailRead: z.object({ mailId: id, mailboxId: id }),
  MailUnread: z.object({ mailId: id, mailboxId: id }),
  /**
   * The owner moved a received or sent mail to the trash; MailRestored puts it back into `folder`.
   * `unread` is the mail's read state then (it cannot change in the trash), so the mailbox's
   * unread count can move with it without looking the mail up.
   */
  MailTrashed: z.object({ mailId: id, mailboxId: id, folder: z.enum(['inbox', 'sent']), unread: z.boolean() }),
  MailRestored: z.object({ mailId: id, mailboxId: id, folder: z.enum(['inbox', 'sent']), unread: z.boolean() }),
  /**
   * The owner deleted a mail in the trash for good: it leaves every view. The log keeps its
   * history, and its blobs stay in the store (which never deletes; they may be shared).
   */
  MailDeleted: z.object({ mailId: id, mailboxId: id, userId: id }),
  MailDelivered: z.object({
    mailId: id,
    messageId: z.string(),
    recipients: z.array(z.string()),
    response: z.string(),
    attempt: z.number().int().positive(),
  }),
  MailDeliveryFailed: z.object({
    mailId: id,
    messageId: z.string(),
    recipients: z.array(z.string()),
    response: z.string(),
    attempt: z.number().int().positive(),
    /** A 5xx or the retry deadline passed: no more attempts. */
    permanent: z.boolean(),
    nextAttemptAt: z.string().datetime().nullable(),
  }),
  /**
   * The relay fetched a recipient domain's MTA-STS policy (RFC 8461). Kept in the log so that a
   * restarted relay still holds a domain to it for its max_age (an attacker who blocks the next
   * fetch cannot turn it off); the `mta_sts` view holds the latest per domain.
   */
  MtaStsPolicyFetched: z.object({
    domain: z.string().min(1),
    /** The id of the domain's `_mta-sts` TXT record the policy was fetched for. */
    policyId: z.string().min(1),
    mode: z.enum(['enforce', 'testing', 'none']),
    mx: z.array(z.string()),
    /** Seconds. */
    maxAge: z.number().int().nonnegative(),
  }),
} as const;

export type EventType = keyof typeof eventSchemas;
export type EventData<T extends EventType> = z.infer<(typeof eventSchemas)[T]>;
export const eventTypes = Object.keys(eventSchemas) as EventType[];

/** Current schema version per type; bump it (and add an upcaster) when a schema changes shape. */
export const SCHEMA_VERSION = 1;
