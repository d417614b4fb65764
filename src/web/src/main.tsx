import { MutationCache, QueryCache, QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { errorCode } from './api.js';
import { App } from './App.js';
import { session } from './session.js';
import './styles.css';

/** Codes a retry cannot fix. */
const FINAL = new Set(['UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND', 'BAD_REQUEST', 'CONFLICT', 'PRECONDITION_FAILED', 'TOO_MANY_REQUESTS', 'PAYLOAD_TOO_LARGE']);

/** Any call the server refuses for want of a valid token ends the session (back to login, with the reason). */
const onError = (error: unknown): void => {
  if (errorCode(error) === 'UNAUTHORIZED' && session.token()) session.expire();
};

const queryClient = new QueryClient({
  queryCache: new QueryCache({ onError }),
  mutationCache: new MutationCache({ onError }),
  defaultOptions: {
    queries: {
      retry: (failures, error) => !FINAL.has(errorCode(error) ?? '') && failures < 2,
      staleTime: 5_000,
      refetchOnWindowFocus: true,
    },
    mutations: { retry: false },
  },
});

// Nothing of one user's mail stays cached for the next.
session.subscribe(() => {
  if (!session.token()) queryClient.clear();
});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <App />
    </QueryClientProvider>
  </StrictMode>,
);
