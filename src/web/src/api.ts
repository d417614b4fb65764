/**
 * The web client's connection to mailtrail's API: the typed tRPC client (types from the server's
 * `AppRouter`, never written by hand), read-your-writes position tracking
 * (`positionTracker` from `src/api/client.ts`), and the live `mails.changes` subscription over server-sent events.
 */
import { createTRPCClient, httpLink, httpSubscriptionLink, splitLink, TRPCClientError } from '@trpc/client';
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

export const api = createTRPCClient<AppRouter>({
  links: [
    positions.link,
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

/**
 * Downloads an attachment: the token is not a cookie, so the bytes are fetched with the Bearer
 * header and saved through a short-lived blob: URL.
 */
export async function downloadAttachment(mailId: string, attachmentId: string, filename: string): Promise<void> {
  const blob = await fetchAttachment(mailId, attachmentId);
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

export async function fetchAttachment(mailId: string, attachmentId: string): Promise<Blob> {
  const token = session.token();
  const res = await fetch(`/attachments/${encodeURIComponent(mailId)}/${encodeURIComponent(attachmentId)}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    cache: 'no-store',
    credentials: 'omit',
  });
  if (res.status === 401) {
    session.expire();
    throw new Error('Your session has ended. Sign in again.');
  }
  if (!res.ok) throw new Error(res.status === 404 ? 'This attachment was not found.' : `Download failed (HTTP ${res.status}).`);
  return res.blob();
}
