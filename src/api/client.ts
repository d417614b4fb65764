import { createTRPCClient, httpLink, type TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import type { AppRouter } from './router.js';

export type { AppRouter };

export interface ClientOptions {
  /** Bearer token from auth.login, or a function returning the current one. */
  token?: string | (() => string | null | undefined);
}

/**
 * Remembers the highest log position the responses carried (a mutation's own writes) and gives it
 * back as the `x-mailtrail-position` header, so a query served by another instance still waits
 * until that instance's views include the caller's writes.
 */
export function positionTracker(): { link: TRPCLink<AppRouter>; headers(): Record<string, string> } {
  let seen = 0;
  const link: TRPCLink<AppRouter> = () => ({ next, op }) =>
    observable((observer) =>
      next(op).subscribe({
        next(value) {
          const data = (value.result as { data?: unknown }).data;
          if (data && typeof data === 'object' && 'position' in data && typeof data.position === 'number') seen = Math.max(seen, data.position);
          observer.next(value);
        },
        error: (err) => observer.error(err),
        complete: () => observer.complete(),
      }),
    );
  return { link, headers: (): Record<string, string> => (seen ? { 'x-mailtrail-position': String(seen) } : {}) };
}

/** The typed client for mailtrail's API, used by the tests and the scripts (the web client builds its own on `positionTracker`). */
export function createClient(baseUrl: string, opts: ClientOptions = {}) {
  const positions = positionTracker();
  return createTRPCClient<AppRouter>({
    links: [
      positions.link,
      httpLink({
        url: `${baseUrl.replace(/\/$/, '')}/trpc`,
        headers() {
          const token = typeof opts.token === 'function' ? opts.token() : opts.token;
          return { ...(token ? { authorization: `Bearer ${token}` } : {}), ...positions.headers() };
        },
      }),
    ],
  });
}

export type MailtrailClient = ReturnType<typeof createClient>;
