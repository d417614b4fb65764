import { TRPCError } from '@trpc/server';
import { v7 as uuidv7 } from 'uuid';
import { z } from 'zod';
import type { MailboxDoc } from '../../../projections/mailboxes.js';
import type { MailDoc } from '../../../projections/mails.js';
import type { UserDoc } from '../../../projections/users.js';
import { sendsAs } from '../../accounts/aliases.js';
import { CommandError, decideDelete, decideSetRead, decideTrash, mailState, ownDraft, type MailState } from '../../compose/decide.js';
import { storeDraft } from '../../compose/drafts.js';
import { sendDraft } from '../../compose/send.js';
import { describeEvent } from '../../events/describe.js';
import type { NewEvent, StoredEvent } from '../../events/envelope.js';
import { mailStream } from '../../mail/ids.js';
import { WrongExpectedVersionError } from '../../store/port.js';
import { awaitViews } from '../consistency.js';
import { decodeCursor, DraftInput, encodeCursor, Folder, Id } from '../schemas.js';
import { authedProcedure, requestMeta, router, type Context } from '../trpc.js';

type Authed = Context & { user: NonNullable<Context['user']> };

/** The caller's mail from the view; another user's mail is "not found", never its content. */
export async function ownMail(ctx: Authed, id: string): Promise<MailDoc> {
  await awaitViews(ctx, ['mails']);
  const mail = (await ctx.deps.store.views.get('mails', id)) as MailDoc | null;
  if (!mail || mail.userId !== ctx.user.id) throw new TRPCError({ code: 'NOT_FOUND', message: `no mail ${id}` });
  return mail;
}

async function userMailbox(ctx: Authed): Promise<MailboxDoc> {
  await awaitViews(ctx, ['mailboxes']);
  const [mailbox] = (await ctx.deps.store.views.list('mailboxes', { where: { userId: ctx.user.id }, orderBy: { field: 'addressKey', direction: 'asc' }, limit: 1 })) as MailboxDoc[];
  if (!mailbox) throw new TRPCError({ code: 'PRECONDITION_FAILED', message: 'this account has no mailbox' });
  return mailbox;
}

/** A draft's `from`, when it names one, must be an address the user's mailbox sends as. */
async function checkFrom(ctx: Authed, mailbox: MailboxDoc, from: string | undefined): Promise<void> {
  if (from === undefined) return;
  if (!(await sendsAs(ctx.deps.store, mailbox, from, ctx.deps.settings.recipientDelimiter))) throw new TRPCError({ code: 'BAD_REQUEST', message: `from: ${from} is not an address of yours (your mailbox's or one of its aliases)` });
}

/**
 * Appends what `decide` makes of the mail's stream, if anything; the position to wait for either
 * way (the last event when nothing changed), for read-your-writes.
 */
async function command(ctx: Authed, id: string, decide: (state: MailState) => NewEvent | null) {
  const events = await ctx.deps.store.events.readStream(mailStream(id));
  const state = mailState(events);
  const change = decide(state);
  if (!change) return { id, position: events.at(-1)!.position };
  const r = await ctx.deps.store.events.append(mailStream(id), [change], { expectedVersion: state.status === 'none' ? 0 : state.version, meta: requestMeta(ctx, ctx.user.id) });
  return { id, position: r.lastPosition };
}

const blobText = async (ctx: Authed, ref: { sha256: string } | null): Promise<string | null> => (ref ? (await ctx.deps.store.blobs.get(ref.sha256)).toString('utf8') : null);

export const mailsRouter = router({
  list: authedProcedure
    .input(z.object({ folder: Folder.default('inbox'), cursor: z.string().max(500).nullish(), limit: z.number().int().min(1).max(100).default(50) }).default({ folder: 'inbox', limit: 50 }))
    .query(async ({ ctx, input }) => {
      const after = input.cursor ? decodeCursor(input.cursor) : undefined;
      if (after === null) throw new TRPCError({ code: 'BAD_REQUEST', message: 'cursor: not a cursor from a previous mails.list page' });
      await awaitViews(ctx, ['mails']);
      const docs = (await ctx.deps.store.views.list('mails', {
        where: { userId: ctx.user.id, folder: input.folder },
        orderBy: { field: 'sortAt', direction: 'desc' },
        after: after ? { value: after.v, id: after.id } : undefined,
        limit: input.limit + 1,
      })) as MailDoc[];
      const page = docs.slice(0, input.limit);
      const last = page.at(-1);
      return {
        items: page.map((m) => ({
          id: m.id,
          messageId: m.messageId,
          from: m.from,
          to: m.to,
          subject: m.subject,
          snippet: m.snippet,
          status: m.status,
          date: m.date,
          unread: m.unread,
          hasAttachments: m.hasAttachments,
        })),
        nextCursor: docs.length > input.limit && last ? encodeCursor({ v: last.sortAt, id: last.id }) : null,
      };
    }),

  get: authedProcedure.input(z.object({ id: Id })).query(async ({ ctx, input }) => {
    const m = await ownMail(ctx, input.id);
    return {
      id: m.id,
      messageId: m.messageId,
      from: m.from,
      to: m.to,
      cc: m.cc,
      bcc: m.bcc,
      subject: m.subject,
      text: await blobText(ctx, m.text),
      html: await blobText(ctx, m.html),
      attachments: m.attachments.map((a) => ({ id: a.id, filename: a.filename, contentType: a.contentType, size: a.size, contentId: a.contentId ?? null })),
      status: m.status,
      folder: m.folder,
      // Absent in views built before the trash existed.
      trashedFrom: m.trashedFrom ?? null,
      date: m.date,
      unread: m.unread,
      inReplyTo: m.inReplyTo,
      references: m.references,
      recipients: m.recipients,
      authResults: m.authResults,
    };
  }),

  /** The audit trail of one mail, from the log itself. */
  history: authedProcedure.input(z.object({ id: Id })).query(async ({ ctx, input }) => {
    const events = await ctx.deps.store.events.readStream(mailStream(input.id));
    const first = events[0];
    if (!first || !('userId' in first.data) || first.data.userId !== ctx.user.id) throw new TRPCError({ code: 'NOT_FOUND', message: `no mail ${input.id}` });
    return events.map((e) => {
      const { type, at, actor, details } = describeEvent(e);
      return { ...details, type, at, actor, position: e.position };
    });
  }),

  createDraft: authedProcedure.input(DraftInput).mutation(async ({ ctx, input }) => {
    const mailbox = await userMailbox(ctx);
    await checkFrom(ctx, mailbox, input.from);
    const draft = await storeDraft(ctx.deps.store.blobs, input, ctx.deps.settings.maxAttachmentBytes);
    const id = uuidv7();
    const r = await ctx.deps.store.events.append(mailStream(id), [{ type: 'DraftCreated', data: { mailId: id, mailboxId: mailbox.id, userId: ctx.user.id, draft } }], {
      expectedVersion: 'no_stream',
      meta: requestMeta(ctx, ctx.user.id),
    });
    return { id, position: r.lastPosition };
  }),

  updateDraft: authedProcedure.input(DraftInput.extend({ id: Id })).mutation(async ({ ctx, input }) => {
    const state = ownDraft(mailState(await ctx.deps.store.events.readStream(mailStream(input.id))), ctx.user.id, input.id);
    await checkFrom(ctx, await userMailbox(ctx), input.from);
    const draft = await storeDraft(ctx.deps.store.blobs, input, ctx.deps.settings.maxAttachmentBytes);
    const r = await ctx.deps.store.events.append(mailStream(input.id), [{ type: 'DraftUpdated', data: { mailId: input.id, draft } }], {
      expectedVersion: state.version,
      meta: requestMeta(ctx, ctx.user.id),
    });
    return { id: input.id, position: r.lastPosition };
  }),

  deleteDraft: authedProcedure.input(z.object({ id: Id })).mutation(async ({ ctx, input }) => {
    const state = ownDraft(mailState(await ctx.deps.store.events.readStream(mailStream(input.id))), ctx.user.id, input.id);
    const r = await ctx.deps.store.events.append(mailStream(input.id), [{ type: 'DraftDeleted', data: { mailId: input.id, mailboxId: state.mailboxId } }], {
      expectedVersion: state.version,
      meta: requestMeta(ctx, ctx.user.id),
    });
    return { id: input.id, position: r.lastPosition };
  }),

  /** Marks a received mail read or unread; a no-op when it already is. */
  setRead: authedProcedure
    .input(z.object({ id: Id, read: z.boolean() }))
    .mutation(({ ctx, input }) => command(ctx, input.id, (state) => decideSetRead(state, ctx.user.id, input.id, input.read))),

  /** Moves a received or sent mail to the trash; a no-op when it already is there. */
  trash: authedProcedure.input(z.object({ id: Id })).mutation(({ ctx, input }) => command(ctx, input.id, (state) => decideTrash(state, ctx.user.id, input.id, true))),

  /** Puts a mail in the trash back into the folder it came from; a no-op when it is not in the trash. */
  restore: authedProcedure.input(z.object({ id: Id })).mutation(({ ctx, input }) => command(ctx, input.id, (state) => decideTrash(state, ctx.user.id, input.id, false))),

  /** Deletes a mail in the trash for good (its history stays in the log); NOT_FOUND once deleted. */
  delete: authedProcedure.input(z.object({ id: Id })).mutation(({ ctx, input }) => command(ctx, input.id, (state) => decideDelete(state, ctx.user.id, input.id))),

  /** Deletes every mail in the caller's trash for good; a mail that changes meanwhile (restored, say) is left alone. */
  emptyTrash: authedProcedure.mutation(async ({ ctx }) => {
    await awaitViews(ctx, ['mails']);
    let deleted = 0;
    let position = await ctx.deps.store.events.head();
    let after: { value: string; id: string } | undefined;
    for (;;) {
      // Paged by cursor, not re-listed: the view may not show the deletions yet.
      const page = (await ctx.deps.store.views.list('mails', {
        where: { userId: ctx.user.id, folder: 'trash' },
        orderBy: { field: 'sortAt', direction: 'desc' },
        after,
        limit: 100,
      })) as MailDoc[];
      if (page.length === 0) break;
      const results = await Promise.all(
        page.map((m) =>
          command(ctx, m.id, (state) => decideDelete(state, ctx.user.id, m.id)).catch((error: unknown) => {
            if (error instanceof CommandError || error instanceof WrongExpectedVersionError) return null;
            throw error;
          }),
        ),
      );
      for (const r of results) {
        if (!r) continue;
        deleted += 1;
        position = Math.max(position, r.position);
      }
      const last = page.at(-1)!;
      after = { value: last.sortAt, id: last.id };
    }
    return { deleted, position };
  }),

  /**
   * Server-sent events: `{ position }` whenever the signed-in user's mail changes (new mail,
   * delivery progress, drafts, read state). Clients re-fetch what they show. EventSource cannot
   * send headers: give the token as tRPC connection params (`httpSubscriptionLink({
   * connectionParams: { token } })`), which arrive as `?connectionParams={"token":"…"}`.
   */
  changes: authedProcedure.subscription(async function* ({ ctx, signal }) {
    const { store } = ctx.deps;
    let position = await store.events.head();
    // The token was checked when the stream began; a password change or a disabled account since
    // ends the stream (checked at least every 15 s), and the client's reconnect is refused.
    const credentials = async (): Promise<string | null> => {
      const user = (await store.views.get('users', ctx.user.id)) as UserDoc | null;
      return user && !user.disabled ? user.passwordHash : null;
    };
    const signedInWith = await credentials();
    const mine = async (e: StoredEvent): Promise<boolean> => {
      if ('userId' in e.data) return e.data.userId === ctx.user.id;
      if (!('mailId' in e.data)) return false;
      const mail = (await store.views.get('mails', e.data.mailId)) as MailDoc | null;
      return mail?.userId === ctx.user.id;
    };
    while (!signal?.aborted) {
      await store.events.waitForAppend(position, 15_000, signal);
      if (signedInWith === null || (await credentials()) !== signedInWith) return;
      const batch = await store.events.readAll({ after: position, limit: 1000 });
      if (batch.length === 0) continue;
      // Seen in the log at once, before the users view has it.
      if (batch.some((e) => (e.type === 'UserPasswordChanged' || e.type === 'UserDisabled') && e.data.userId === ctx.user.id)) return;
      position = batch.at(-1)!.position;
      let changed = false;
      for (const e of batch) if (!changed && (await mine(e))) changed = true;
      if (changed) yield { position };
    }
  }),

  /** `deliveryReceipt`: notices of each recipient's delivery (or failure) in the sender's inbox (DSN NOTIFY=SUCCESS,FAILURE). */
  send: authedProcedure.input(z.object({ id: Id, deliveryReceipt: z.boolean().optional() })).mutation(async ({ ctx, input }) => {
    const mailbox = await userMailbox(ctx);
    return sendDraft(
      ctx.deps.store,
      ctx.deps.settings,
      { mailId: input.id, user: ctx.user, mailbox, meta: requestMeta(ctx, ctx.user.id), deliveryReceipt: input.deliveryReceipt === true },
      (err) => ctx.deps.logger.warn({ err, mailId: input.id, correlationId: ctx.correlationId }, 'mail sent, its local copies were not stored yet; the local delivery follower stores them'),
      (err) => ctx.deps.logger.warn({ err, mailId: input.id, correlationId: ctx.correlationId }, 'mail sent, the delivery receipt for its local recipients could not be stored'),
    );
  }),
});
