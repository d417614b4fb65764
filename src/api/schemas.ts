import { z } from 'zod';
import { PLAIN_ADDRESS } from '../accounts/accounts.js';
import { MESSAGE_ID } from '../mail/message-id.js';

/** Input schemas shared by procedures. Plain strings and numbers only: no operator objects get through. */

export const Email = z
  .string()
  .trim()
  .max(254)
  .regex(PLAIN_ADDRESS, 'must be a plain address such as name@example.com');

/** A recipient as "addr@x" or { name, address }. */
export const Recipient = z.union([Email, z.object({ name: z.string().max(200).default(''), address: Email })]).transform((r) => (typeof r === 'string' ? { name: '', address: r } : r));

export const Id = z.string().uuid('must be a mail id as returned by mails.list');

export const Folder = z.enum(['inbox', 'sent', 'drafts', 'trash']);

export const AttachmentUpload = z.object({
  filename: z.string().min(1).max(255),
  contentType: z
    .string()
    .max(255)
    .regex(/^[\w.+-]+\/[\w.+-]+$/, 'must be a MIME type such as application/pdf')
    .default('application/octet-stream'),
  /** The file's bytes, base64. */
  content: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64'),
});

const MessageIdRef = z.string().regex(MESSAGE_ID, 'must be a Message-ID such as <id@example.com>: printable ASCII, no spaces or line breaks');

export const DraftInput = z.object({
  to: z.array(Recipient).max(100).default([]),
  cc: z.array(Recipient).max(100).default([]),
  bcc: z.array(Recipient).max(100).default([]),
  subject: z.string().max(998).default(''),
  text: z.string().max(1_000_000).optional(),
  html: z.string().max(2_000_000).optional(),
  attachments: z.array(AttachmentUpload).max(20).default([]),
  /** Message-ID of the mail this one answers (reply), with or without angle brackets. */
  inReplyTo: MessageIdRef.optional(),
  references: z.array(MessageIdRef).max(100).default([]),
  /** The address to send from: the mailbox's own (the default) or one of its aliases. */
  from: Email.optional(),
});
export type DraftInput = z.infer<typeof DraftInput>;

export const Cursor = z.object({ v: z.string(), id: z.string() });

export function encodeCursor(c: z.infer<typeof Cursor>): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

export function decodeCursor(s: string): z.infer<typeof Cursor> | null {
  try {
    const parsed = Cursor.safeParse(JSON.parse(Buffer.from(s, 'base64url').toString()));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
