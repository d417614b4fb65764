import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import type { AliasDoc } from '../../../projections/aliases.js';
import type { MailboxDoc } from '../../../projections/mailboxes.js';
import { addAlias, removeAlias } from '../../accounts/aliases.js';
import { awaitViews } from '../consistency.js';
import { Email } from '../schemas.js';
import { adminProcedure, authedProcedure, requestMeta, router } from '../trpc.js';

/** Aliases: more addresses in local domains for a mailbox. Admins add and remove them; everyone sees their own. */
export const aliasesRouter = router({
  add: adminProcedure.input(z.object({ address: Email, mailbox: Email })).mutation(async ({ ctx, input }) => {
    const { position, alias } = await addAlias(ctx.deps.store, ctx.deps.settings.defaultDomain, input, requestMeta(ctx, ctx.user.id));
    return { ...alias, position };
  }),

  remove: adminProcedure.input(z.object({ address: Email })).mutation(async ({ ctx, input }) => ({ address: input.address, position: await removeAlias(ctx.deps.store, input.address, requestMeta(ctx, ctx.user.id)) })),

  /** The aliases of one's own mailbox; `scope: 'all'`, every alias on the server (admins only). */
  list: authedProcedure.input(z.object({ scope: z.enum(['mine', 'all']).default('mine') }).default({ scope: 'mine' })).query(async ({ ctx, input }) => {
    if (input.scope === 'all' && ctx.user.role !== 'admin') throw new TRPCError({ code: 'FORBIDDEN', message: "scope: 'all' is for admins; leave it out for your own aliases" });
    await awaitViews(ctx, ['aliases', 'mailboxes']);
    const { views } = ctx.deps.store;
    const found = (
      input.scope === 'all'
        ? await views.all('aliases')
        : await views.list('aliases', { where: { userId: ctx.user.id }, orderBy: { field: 'userId', direction: 'asc' }, limit: 1000 })
    ) as AliasDoc[];
    const mailboxOf = new Map<string, string>();
    for (const a of found) {
      if (!mailboxOf.has(a.mailboxId)) mailboxOf.set(a.mailboxId, ((await views.get('mailboxes', a.mailboxId)) as MailboxDoc | null)?.address ?? '');
    }
    return found.map((a) => ({ address: a.address, mailbox: mailboxOf.get(a.mailboxId)!, addedAt: a.addedAt })).sort((a, b) => a.address.localeCompare(b.address));
  }),
});
