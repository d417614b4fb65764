import type { MailboxDoc } from '../../../projections/mailboxes.js';
import { awaitViews } from '../consistency.js';
import { authedProcedure, router } from '../trpc.js';

export const mailboxesRouter = router({
  list: authedProcedure.query(async ({ ctx }) => {
    await awaitViews(ctx, ['mailboxes']);
    const docs = (await ctx.deps.store.views.list('mailboxes', { where: { userId: ctx.user.id }, orderBy: { field: 'addressKey', direction: 'asc' }, limit: 100 })) as MailboxDoc[];
    return docs.map((m) => ({ id: m.id, address: m.address, counts: m.counts }));
  }),
});
