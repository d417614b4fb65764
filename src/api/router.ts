import { aliasesRouter } from './routers/aliases.js';
import { authRouter } from './routers/auth.js';
import { domainsRouter } from './routers/domains.js';
import { mailboxesRouter } from './routers/mailboxes.js';
import { mailsRouter } from './routers/mails.js';
import { router } from './trpc.js';

export const appRouter = router({
  auth: authRouter,
  mailboxes: mailboxesRouter,
  mails: mailsRouter,
  domains: domainsRouter,
  aliases: aliasesRouter,
});

/** The API's type: clients import this (type only) for end-to-end type safety. */
export type AppRouter = typeof appRouter;
