/**
 * The web client's connection to mailtrail's API: the typed tRPC client (types from the server's
 * `AppRouter`, never written by hand), read-your-writes position tracking
 * (`positionTracker` from `src/api/client.ts`), and the live `mails.changes` subscription over server-sent events.
 */
import type { InvalidateQueryFilters, QueryClient } from '@tanstack/react-query';
import { createTRPCClient, httpLink, httpSubscriptionLink, splitLink, TRPCClientError, type TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import { positionTracker } from '../../api/client.js';
import type { AppRouter } from '../../api/router.js';
import { session } from './session.js';

export type RouterOutputs = inferRouterOutputs<AppRouter>;
export type RouterInputs = inferRouterInputs<AppRouter>;
export type MailListItem = RouterOutputs['mails']['list']['items'][number];
export type Mail = RouterOutputs['mails']['get'];
export type HistoryEntry = RouterOutputs['mails']['history'][number];
export type Mailbox = RouterOutputs['mailboxes']['list'][number];
export type Folder = Mail['folder'];
export type DraftInput = RouterInputs['mails']['createDraft'];
export type User = RouterOutputs['auth']['me'];

const positions = positionTracker();

const url = `${window.location.origin}/trpc`;

/**
 * A call refused as unauthorized while the session got a new token for the same user (a password
 * change ends the old one) is sent once more with the new token, instead of ending the session.
 * Outside `auth.*` the server refuses a bad token before it runs anything, so sending it again is
 * safe; never as another user (a sign-in in another tab meanwhile).
 */
const newTokenRetry: TRPCLink<AppRouter> =
  () =>
  ({ op, next }) =>
    observable((observer) => {
      const sent = session.token();
      const user = session.user()?.id;
      let sub = next(op).subscribe({
        next: (value) => observer.next(value),
        error: (err) => {
          const now = session.token();
          const renewed = now !== null && now !== sent && session.user()?.id === user;
          if (op.type !== 'subscription' && !op.path.startsWith('auth.') && errorCode(err) === 'UNAUTHORIZED' && renewed) sub = next(op).subscribe(observer);
          else observer.error(err);
        },
        complete: () => observer.complete(),
      });
      return () => sub.unsubscribe();
    });

export const api = createTRPCClient<AppRouter>({
  links: [
    positions.link,
    newTokenRetry,
    splitLink({
      condition: (op) => op.type === 'subscription',
      // EventSource sends no headers: the token goes as a connection param (see mails.changes).
      true: httpSubscriptionLink({
        url,
        connectionParams: () => ({ token: session.token() ?? '' }),
      }),
      false: httpLink({
        url,
        headers() {
          const token = session.token();
          return { ...(token ? { authorization: `Bearer ${token}` } : {}), ...positions.headers() };
        },
      }),
    }),
  ],
});

/** The tRPC error code of a failed call (`NOT_FOUND`, `UNAUTHORIZED`, …), or null. */
export function errorCode(error: unknown): string | null {
  return error instanceof TRPCClientError ? ((error.data as { code?: string } | undefined)?.code ?? null) : null;
}

/** A message for a person: the server's own words for API errors, a plain one for the network. */
export function errorMessage(error: unknown): string {
  if (error instanceof TRPCClientError) {
    if (!error.data && /fetch|network/i.test(error.message)) return 'The server cannot be reached. Check your connection and try again.';
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

/** Saves downloaded bytes as a file through a short-lived blob: URL. */
function save(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  try {
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    a.rel = 'noopener';
    document.body.append(a);
    a.click();
    a.remove();
  } finally {
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }
}

/** Fetches a download: the token is not a cookie, so it goes in the Bearer header. */
async function fetchDownload(path: string, notFound: string): Promise<Blob> {
  const token = session.token();
  const res = await fetch(path, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    cache: 'no-store',
    credentials: 'omit',
  });
  if (res.status === 401) {
    session.expire();
    throw new Error('Your session has ended. Sign in again.');
  }
  if (!res.ok) throw new Error(res.status === 404 ? notFound : `Download failed (HTTP ${res.status}).`);
  return res.blob();
}

export const fetchAttachment = (mailId: string, attachmentId: string): Promise<Blob> =>
  fetchDownload(`/attachments/${encodeURIComponent(mailId)}/${encodeURIComponent(attachmentId)}`, 'This attachment was not found.');

export async function downloadAttachment(mailId: string, attachmentId: string, filename: string): Promise<void> {
  save(await fetchAttachment(mailId, attachmentId), filename);
}

/** The message as the server stored it (with its Authentication-Results field), as `<id>.eml`. */
export async function downloadOriginal(mailId: string): Promise<void> {
  save(await fetchDownload(`/original/${encodeURIComponent(mailId)}`, 'The original message was not found.'), `${mailId}.eml`);
}

/**
 * Fetches matching active queries again after a change. Fetches in flight are cancelled first: one
 * that started before the change may have read the state before it, and a plain invalidate joins
 * a query's first fetch instead of starting another.
 */
export async function refetchAfterChange(queryClient: QueryClient, filters: InvalidateQueryFilters = {}): Promise<void> {
  await queryClient.cancelQueries(filters);
  await queryClient.invalidateQueries(filters);
}
