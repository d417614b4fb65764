import type { StoredEvent } from '../events/envelope.js';
import type { Draft } from '../events/types.js';

/** What one mail stream says about a mail, folded from its events. Pure: the core of draft commands. */
export type MailState =
  | { status: 'none' }
  | { status: 'draft'; userId: string; mailboxId: string; draft: Draft; version: number }
  | { status: 'deleted'; userId: string; version: number }
  | { status: 'received'; userId: string; mailboxId: string; unread: boolean; trashed: boolean; version: number }
  | { status: 'sent'; userId: string; mailboxId: string; messageId: string; trashed: boolean; version: number };

function evolve(state: MailState, e: StoredEvent): MailState {
  const version = e.version;
  switch (e.type) {
    case 'DraftCreated':
      return { status: 'draft', userId: e.data.userId, mailboxId: e.data.mailboxId, draft: e.data.draft, version };
    case 'DraftUpdated':
      return state.status === 'draft' ? { ...state, draft: e.data.draft, version } : state;
    case 'DraftDeleted':
      return state.status === 'draft' ? { status: 'deleted', userId: state.userId, version } : state;
    case 'MailReceived':
      return { status: 'received', userId: e.data.userId, mailboxId: e.data.mailboxId, unread: true, trashed: false, version };
    case 'MailRead':
    case 'MailUnread':
      return state.status === 'received' ? { ...state, unread: e.type === 'MailUnread', version } : state;
    case 'MailSent':
      // A notice this server sends is no mail of the mailbox it is filed under: no command touches it.
      if (e.data.notice) return state;
      return { status: 'sent', userId: e.data.userId, mailboxId: e.data.mailboxId, messageId: e.data.messageId, trashed: false, version };
    case 'MailTrashed':
    case 'MailRestored':
      return state.status === 'received' || state.status === 'sent' ? { ...state, trashed: e.type === 'MailTrashed', version } : state;
    case 'MailDeleted':
      return state.status === 'received' || state.status === 'sent' ? { status: 'deleted', userId: state.userId, version } : state;
    default:
      return state.status === 'none' ? state : { ...state, version };
  }
}

export const mailState = (events: StoredEvent[]): MailState => events.reduce(evolve, { status: 'none' } as MailState);

/**
 * MailRead / MailUnread for a received mail of `userId`, or nothing when it already is in that
 * state (so the unread count never moves twice).
 */
export function decideSetRead(state: MailState, userId: string, mailId: string, read: boolean): { type: 'MailRead' | 'MailUnread'; data: { mailId: string; mailboxId: string } } | null {
  if (state.status === 'none' || state.status === 'deleted' || state.userId !== userId) throw new CommandError('NOT_FOUND', `no mail ${mailId}`);
  if (state.status !== 'received') throw new CommandError('BAD_REQUEST', `id: mail ${mailId} is not a received mail`);
  // The inbox's unread count only follows mail in the inbox (MailTrashed carries the read state).
  if (state.trashed) throw new CommandError('BAD_REQUEST', `id: mail ${mailId} is in the trash; restore it first`);
  if (state.unread === !read) return null;
  return { type: read ? 'MailRead' : 'MailUnread', data: { mailId, mailboxId: state.mailboxId } };
}

/**
 * MailTrashed / MailRestored for a received or sent mail of `userId`, or nothing when it already is
 * where it would go (a retried click or request changes nothing).
 */
export function decideTrash(state: MailState, userId: string, mailId: string, trash: boolean): { type: 'MailTrashed' | 'MailRestored'; data: { mailId: string; mailboxId: string; folder: 'inbox' | 'sent'; unread: boolean } } | null {
  if (state.status === 'none' || state.status === 'deleted' || state.userId !== userId) throw new CommandError('NOT_FOUND', `no mail ${mailId}`);
  if (state.status === 'draft') throw new CommandError('BAD_REQUEST', `id: mail ${mailId} is a draft; delete it instead`);
  if (state.trashed === trash) return null;
  const data = { mailId, mailboxId: state.mailboxId, ...(state.status === 'received' ? { folder: 'inbox' as const, unread: state.unread } : { folder: 'sent' as const, unread: false }) };
  return { type: trash ? 'MailTrashed' : 'MailRestored', data };
}

/** MailDeleted for a mail of `userId` in the trash: deleting for good takes two steps, never one click. */
export function decideDelete(state: MailState, userId: string, mailId: string): { type: 'MailDeleted'; data: { mailId: string; mailboxId: string; userId: string } } {
  if (state.status === 'none' || state.status === 'deleted' || state.userId !== userId) throw new CommandError('NOT_FOUND', `no mail ${mailId}`);
  if (state.status === 'draft') throw new CommandError('BAD_REQUEST', `id: mail ${mailId} is a draft; delete it as a draft`);
  if (!state.trashed) throw new CommandError('BAD_REQUEST', `id: mail ${mailId} is not in the trash; move it there first`);
  return { type: 'MailDeleted', data: { mailId, mailboxId: state.mailboxId, userId } };
}

export class CommandError extends Error {
  constructor(
    readonly code: 'NOT_FOUND' | 'CONFLICT' | 'BAD_REQUEST',
    message: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/** The draft `userId` may change, or why not. Another user's mail is "not found", never "forbidden": ids leak nothing. */
export function ownDraft(state: MailState, userId: string, mailId: string): Extract<MailState, { status: 'draft' }> {
  if (state.status === 'none' || state.userId !== userId) throw new CommandError('NOT_FOUND', `no mail ${mailId}`);
  if (state.status === 'deleted') throw new CommandError('NOT_FOUND', `draft ${mailId} was deleted`);
  if (state.status === 'sent') throw new CommandError('CONFLICT', `mail ${mailId} was already sent`);
  if (state.status === 'received') throw new CommandError('CONFLICT', `mail ${mailId} is a received mail, not a draft`);
  return state;
}
