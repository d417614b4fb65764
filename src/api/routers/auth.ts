import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import type { UserDoc } from '../../../projections/users.js';
import { AddressTakenError, changePassword, registerAccount, verifyPassword } from '../../accounts/accounts.js';
import { isLocalDomain } from '../../accounts/domains.js';
import { countAttempt, isLoopback } from '../../security/limits.js';
import { WrongExpectedVersionError } from '../../store/port.js';
import { awaitViews } from '../consistency.js';
import { Email } from '../schemas.js';
import { effectiveRole, signToken } from '../tokens.js';
import { authedProcedure, publicProcedure, requestMeta, router, type Context } from '../trpc.js';

/** Addresses people write to about the server itself: only an admin (npm run user:add) creates them. */
export const RESERVED_LOCAL_PARTS = new Set(['postmaster', 'abuse', 'admin', 'administrator', 'root', 'hostmaster', 'webmaster', 'mailer-daemon', 'security', 'noreply', 'no-reply', 'support']);

const Password = z
  .string()
  .min(8, 'must be at least 8 characters')
  .refine((p) => Buffer.byteLength(p) <= 72, 'must be at most 72 bytes (bcrypt ignores the rest)');

/**
 * A password check, counted against the client's address and the account before it runs (see
 * countAttempt); null when either has failed too often lately. Loopback is exempt unless
 * RATE_LIMIT_LOOPBACK.
 */
function passwordAttempt(ctx: Context, email: string): ReturnType<typeof countAttempt> {
  const { settings, loginFailures } = ctx.deps;
  const limited = settings.rateLimitLoopback || !isLoopback(ctx.ip);
  return countAttempt(
    limited
      ? [
          { limiter: loginFailures, key: `ip:${ctx.ip}`, resetOnSuccess: false },
          { limiter: loginFailures, key: `account:${email.toLowerCase()}`, resetOnSuccess: true },
        ]
      : [],
  );
}

export const authRouter = router({
  register: publicProcedure
    .input(z.object({ email: Email, password: Password, name: z.string().trim().min(1).max(100) }))
    .mutation(async ({ ctx, input }) => {
      const { settings, store } = ctx.deps;
      if (!settings.allowRegistration) throw new TRPCError({ code: 'FORBIDDEN', message: 'registration is closed; ask an admin to create your account' });
      const [local, domain] = input.email.split('@') as [string, string];
      if (!(await isLocalDomain(store, settings.defaultDomain, domain))) {
        throw new TRPCError({ code: 'BAD_REQUEST', message: `email: ${domain} is not a domain this server receives mail for` });
      }
      const delimiter = settings.recipientDelimiter;
      // bob+x@ reaches bob@: an account of that address would take bob's tagged mail.
      if (delimiter && local.includes(delimiter)) {
        throw new TRPCError({ code: 'BAD_REQUEST', message: `email: the local part may not contain "${delimiter}": mail to name${delimiter}anything@ goes to name@` });
      }
      if (RESERVED_LOCAL_PARTS.has(local.toLowerCase())) {
        throw new TRPCError({ code: 'FORBIDDEN', message: `email: ${local}@ is reserved; an admin creates it with npm run user:add` });
      }
      try {
        const role = settings.adminEmails.includes(input.email.toLowerCase()) ? 'admin' : 'user';
        const account = await registerAccount(store, { ...input, role }, { bcryptCost: settings.bcryptCost, meta: requestMeta(ctx, null) });
        return { user: { id: account.user.id, email: account.user.email, name: account.user.name }, position: account.position };
      } catch (error) {
        if (error instanceof AddressTakenError) throw new TRPCError({ code: 'CONFLICT', message: `email: ${input.email} is already registered` });
        throw error;
      }
    }),

  login: publicProcedure.input(z.object({ email: Email, password: z.string().max(1024) })).mutation(async ({ ctx, input }) => {
    const { settings, store } = ctx.deps;
    const attempt = passwordAttempt(ctx, input.email);
    if (!attempt) throw new TRPCError({ code: 'TOO_MANY_REQUESTS', message: 'too many failed logins; wait a few minutes and try again' });
    let user: Awaited<ReturnType<typeof verifyPassword>>;
    try {
      await awaitViews(ctx, ['users']);
      user = await verifyPassword(store, input.email, input.password, settings.bcryptCost);
    } catch (error) {
      attempt.abandoned();
      throw error;
    }
    if (!user) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'wrong email or password' });
    attempt.succeeded();
    const authUser = { id: user.id, email: user.email, name: user.name, role: effectiveRole(user, settings.adminEmails) };
    return { token: await signToken({ ...authUser, passwordHash: user.passwordHash }, settings.jwtSecret, settings.jwtExpiresIn), user: authUser };
  }),

  /**
   * Changes the signed-in user's password, given the current one. Every session signed in with the
   * old password ends (see tokens.ts); the answer carries a new token for this one.
   */
  changePassword: authedProcedure.input(z.object({ currentPassword: z.string().max(1024), newPassword: Password })).mutation(async ({ ctx, input }) => {
    const { settings, store } = ctx.deps;
    const attempt = passwordAttempt(ctx, ctx.user.email);
    if (!attempt) throw new TRPCError({ code: 'TOO_MANY_REQUESTS', message: 'too many failed password checks; wait a few minutes and try again' });
    let ok: boolean;
    try {
      ok = (await verifyPassword(store, ctx.user.email, input.currentPassword, settings.bcryptCost)) !== null;
    } catch (error) {
      attempt.abandoned();
      throw error;
    }
    // Not UNAUTHORIZED: the session is fine, the field is wrong.
    if (!ok) throw new TRPCError({ code: 'BAD_REQUEST', message: 'currentPassword: that is not your current password' });
    attempt.succeeded();
    const changed = await changePassword(store, ctx.user.email, input.newPassword, { bcryptCost: settings.bcryptCost, meta: requestMeta(ctx, ctx.user.id) }).catch((error: unknown) => {
      if (error instanceof WrongExpectedVersionError) throw new TRPCError({ code: 'CONFLICT', message: 'the account changed meanwhile (another password change?); sign in again and retry' });
      throw error;
    });
    // The new token is checked against the users view: it must hold the new password first.
    const users = ctx.deps.projectors.get('users');
    if (users && !(await users.waitFor(changed.position, 10_000))) throw new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: 'the password was changed, but the server is catching up; sign in again with the new password' });
    // A change made after this one (an admin's reset) ends this session too: no token for it.
    const user = (await store.views.get('users', ctx.user.id)) as UserDoc | null;
    if (user?.passwordHash !== changed.passwordHash) throw new TRPCError({ code: 'CONFLICT', message: 'the password was changed again meanwhile; sign in with the current one' });
    return { token: await signToken({ ...ctx.user, passwordHash: changed.passwordHash }, settings.jwtSecret, settings.jwtExpiresIn) };
  }),

  /** The signed-in user, and the limits a client should check before uploading. */
  me: authedProcedure.query(({ ctx }) => ({ ...ctx.user, limits: { maxAttachmentBytes: ctx.deps.settings.maxAttachmentBytes } })),
});
