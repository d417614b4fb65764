/**
 * New mail without a reload: the `mails.changes` subscription (server-sent events) says when the
 * signed-in user's mail changed, and the lists, counts and the open mail are fetched again. While
 * the event stream is down (connection lost, server restarting, a proxy that buffers), the same
 * refresh runs on a timer until the stream is back.
 */
import { useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { api, errorCode, refetchAfterChange } from './api.js';
import { session } from './session.js';

export type LiveState = 'connecting' | 'live' | 'polling';

export const POLL_MS = 10_000;
/** After the subscription failed outright, try it again this often (polling meanwhile). */
const RESUBSCRIBE_MS = 30_000;

const LIVE_KEYS = new Set(['mailboxes', 'mails', 'mail', 'history']);

export function useLiveUpdates(token: string): LiveState {
  const queryClient = useQueryClient();
  const [state, setState] = useState<LiveState>('connecting');
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let poll: ReturnType<typeof setInterval> | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let startedOnce = false;
    let closing = false;
    const resubscribeLater = (): void => {
      startPolling();
      clearTimeout(retry);
      retry = setTimeout(() => setAttempt((n) => n + 1), RESUBSCRIBE_MS);
    };
    const refresh = (): void => {
      void refetchAfterChange(queryClient, { predicate: (q) => LIVE_KEYS.has(String(q.queryKey[0])) });
    };
    const startPolling = (): void => {
      setState('polling');
      poll ??= setInterval(refresh, POLL_MS);
    };
    const stopPolling = (): void => {
      clearInterval(poll);
      poll = undefined;
    };
    const sub = api.mails.changes.subscribe(undefined, {
      onStarted() {
        stopPolling();
        setState('live');
        // After a reconnect, catch up on what happened while the stream was down.
        if (startedOnce) refresh();
        startedOnce = true;
      },
      onData() {
        refresh();
      },
      onConnectionStateChange(s) {
        if (s.state === 'connecting' && s.error) {
          startPolling();
        } else if (s.state === 'pending' && startedOnce) {
          if (poll) refresh();
          stopPolling();
          setState('live');
        }
      },
      onError(err) {
        if (errorCode(err) === 'UNAUTHORIZED') {
          // Refused for a token the session has since replaced (a password change): the effect starts again with the new one.
          if (session.token() === token) session.expire();
          return;
        }
        resubscribeLater();
      },
      onComplete() {
        // The server ended the stream (shutdown, deploy): poll until a new one is up.
        if (!closing && session.token()) resubscribeLater();
      },
    });
    return () => {
      closing = true;
      sub.unsubscribe();
      stopPolling();
      clearTimeout(retry);
    };
  }, [queryClient, token, attempt]);

  return state;
}
