import type { StoredEvent } from '../events/envelope.js';
import type { Draft } from '../events/types.js';

/** What one mail stream says about a mail, folded from its events. Pure: the core of draft commands. */
export type MailState =
  | { status: 'none' }
  | { status: 'draft'; userId: string; mailboxId: string; draft: Draft; version: number }
  | { status: 'deleted'; userId: string; version: number }
  | { status: 'received'; userId: string; version: number }
  | { status: 'sent'; userId: string; messageId: string; version: number };

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
      return { status: 'received', userId: e.data.userId, version };
    case 'MailSent':
      return { status: 'sent', userId: e.data.userId, messageId: e.data.messageId, version };
    default:
      return state.status === 'none' ? state : { ...state, version };
  }
}

export const mailState = (events: StoredEvent[]): MailState => events.reduce(evolve, { status: 'none' } as MailState);

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
