import { createTRPCClient, httpLink, type TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import type { AppRouter } from './router.js';

export type { AppRouter };

export interface ClientOptions {
  /** Bearer token from auth.login, or a function returning the current one. */
  token?: string | (() => string | null | undefined);
}

/**
 * The typed client for mailtrail's API, used by the tests, the scripts and the web client. It
 * remembers the highest log position its mutations returned and sends it with every request, so
 * a query served by another instance still waits until that instance's views include the
 * caller's own writes.
 */
export function createClient(baseUrl: string, opts: ClientOptions = {}) {
  let seen = 0;
  const trackPositions: TRPCLink<AppRouter> = () => ({ next, op }) =>
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
  return createTRPCClient<AppRouter>({
    links: [
      trackPositions,
      httpLink({
        url: `${baseUrl.replace(/\/$/, '')}/trpc`,
        headers() {
          const token = typeof opts.token === 'function' ? opts.token() : opts.token;
          return { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(seen ? { 'x-mailtrail-position': String(seen) } : {}) };
        },
      }),
    ],
  });
}

export type MailtrailClient = ReturnType<typeof createClient>;
