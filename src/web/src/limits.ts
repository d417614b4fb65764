import { useQuery } from '@tanstack/react-query';
import { api } from './api.js';

/** MAX_ATTACHMENT_SIZE's default, used until the server's own limit (auth.me) has arrived. */
const DEFAULT_MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024;

/** The largest attachment the server takes, per file; the server checks it anyway. */
export function useMaxAttachmentBytes(): number {
  const me = useQuery({ queryKey: ['auth.me'], queryFn: () => api.auth.me.query(), staleTime: 5 * 60_000 });
  return me.data?.limits.maxAttachmentBytes ?? DEFAULT_MAX_ATTACHMENT_BYTES;
}
