import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import type { DomainDoc } from '../../../projections/domains.js';
import { addDomain, DomainExistsError } from '../../accounts/domains.js';
import { checkDomain } from '../../dns/records.js';
import { awaitViews } from '../consistency.js';
import { adminProcedure, requestMeta, router } from '../trpc.js';

const Domain = z
  .string()
  .trim()
  .toLowerCase()
  .max(253)
  .regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'must be a domain name such as example.com');

export const domainsRouter = router({
  add: adminProcedure.input(z.object({ domain: Domain })).mutation(async ({ ctx, input }) => {
    const exists = (): TRPCError => new TRPCError({ code: 'CONFLICT', message: `domain: ${input.domain} is already a local domain` });
    if (input.domain === ctx.deps.settings.defaultDomain.toLowerCase()) throw exists();
    try {
      const position = await addDomain(ctx.deps.store, input.domain, requestMeta(ctx, ctx.user.id));
      return { domain: input.domain, position };
    } catch (error) {
      if (error instanceof DomainExistsError) throw exists();
      throw error;
    }
  }),

  /** Each record this server needs in DNS: found, missing or wrong, and the exact record to publish. */
  verify: adminProcedure.input(z.object({ domain: Domain })).query(async ({ ctx, input }) => {
    const { settings, resolver } = ctx.deps;
    const checks = await checkDomain(resolver, { domain: input.domain, host: settings.smtpHostname, ...(settings.dkim ? { dkim: settings.dkim } : {}) });
    return { domain: input.domain, ok: checks.every((c) => c.status === 'found'), records: checks };
  }),

  list: adminProcedure.query(async ({ ctx }) => {
    await awaitViews(ctx, ['domains']);
    const added = (await ctx.deps.store.views.all('domains')) as DomainDoc[];
    return [{ domain: ctx.deps.settings.defaultDomain, default: true, addedAt: null }, ...added.map((d) => ({ domain: d.domain, default: false, addedAt: d.addedAt }))];
  }),
});
