import type { Attachment, Draft } from '../events/types.js';
import type { BlobStore } from '../store/port.js';
import { CommandError } from './decide.js';

export interface DraftContent {
  to: { name: string; address: string }[];
  cc: { name: string; address: string }[];
  bcc: { name: string; address: string }[];
  subject: string;
  text?: string | undefined;
  html?: string | undefined;
  attachments: { filename: string; contentType: string; content: string }[];
  inReplyTo?: string | undefined;
  references: string[];
  /** Checked by the caller: the mailbox's own address or one of its aliases. */
  from?: string | undefined;
}

const bracket = (id: string): string => (id.startsWith('<') ? id : `<${id}>`);

/** Stores a draft's bodies and attachments as blobs and returns the `Draft` its events carry. */
export async function storeDraft(blobs: BlobStore, input: DraftContent, maxAttachmentBytes: number): Promise<Draft> {
  const attachments: Attachment[] = [];
  for (const [i, a] of input.attachments.entries()) {
    const bytes = Buffer.from(a.content, 'base64');
    if (bytes.length > maxAttachmentBytes) {
      throw new CommandError('BAD_REQUEST', `attachments.${i}: ${a.filename} is ${bytes.length} bytes, the limit is ${maxAttachmentBytes}`);
    }
    const ref = await blobs.put(bytes);
    attachments.push({ ...ref, id: `att${i + 1}`, filename: a.filename, contentType: a.contentType, contentId: null });
  }
  return {
    to: input.to,
    cc: input.cc,
    bcc: input.bcc,
    subject: input.subject,
    text: input.text === undefined ? null : await blobs.put(Buffer.from(input.text)),
    html: input.html === undefined ? null : await blobs.put(Buffer.from(input.html)),
    attachments,
    inReplyTo: input.inReplyTo ? bracket(input.inReplyTo) : null,
    references: input.references.map(bracket),
    ...(input.from ? { from: input.from } : {}),
  };
}
