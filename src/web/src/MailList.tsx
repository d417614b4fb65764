import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { api, errorMessage, refetchAfterChange, type Folder, type MailListItem } from './api.js';
import { formatFullDate, formatListDate, shortAddress } from './format.js';
import { PaperclipIcon } from './icons.js';
import { Link } from './router.js';
import { folderLabel, takeFlash, useFocusHeading } from './Shell.js';

export const PAGE_SIZE = 25;

const STATUS_TEXT: Record<MailListItem['status'], string> = {
  received: 'Received',
  draft: 'Draft',
  queued: 'Sending',
  sent: 'Sent',
  failed: 'Failed',
};

export function StatusBadge({ status }: { status: MailListItem['status'] }) {
  return <span className={`badge status-${status}`}>{STATUS_TEXT[status]}</span>;
}

function Row({ mail, folder }: { mail: MailListItem; folder: Folder }) {
  const who = mail.status === 'received' ? shortAddress(mail.from[0]) || '(unknown sender)' : mail.to.length ? `To: ${mail.to.map(shortAddress).join(', ')}` : '(no recipients)';
  const to = folder === 'drafts' ? `/compose/${mail.id}` : `/mail/${mail.id}`;
  const subject = mail.subject || '(no subject)';
  return (
    <li className={`row${mail.unread ? ' unread' : ''}`} data-testid="mail-row" data-mail-id={mail.id}>
      <Link to={to} className="row-link">
        <span className="row-who">
          {mail.unread && <span className="sr-only">Unread, </span>}
          {who}
        </span>
        <span className="row-subject">{subject}</span>
        <span className="row-snippet">{mail.snippet}</span>
        <span className="row-meta">
          {mail.hasAttachments && (
            <span className="attachment-mark" title="Has attachments">
              <PaperclipIcon />
              <span className="sr-only">, has attachments</span>
            </span>
          )}
          {folder === 'sent' && <StatusBadge status={mail.status} />}
          <time dateTime={mail.date} title={formatFullDate(mail.date)}>
            {formatListDate(mail.date)}
          </time>
        </span>
      </Link>
    </li>
  );
}

/** Deletes everything in the trash for good, after asking. */
function EmptyTrash({ onEmptied }: { onEmptied: (deleted: number) => void }) {
  const queryClient = useQueryClient();
  const empty = useMutation({
    mutationFn: () => api.mails.emptyTrash.mutate(),
    onSuccess: ({ deleted }) => {
      void refetchAfterChange(queryClient);
      onEmptied(deleted);
    },
  });
  return (
    <>
      <button
        type="button"
        className="danger"
        onClick={() => window.confirm('Delete every message in Trash for good? This cannot be undone.') && empty.mutate()}
        disabled={empty.isPending}
      >
        Empty trash
      </button>
      {empty.isError && (
        <p className="error" role="alert">
          {errorMessage(empty.error)}
        </p>
      )}
    </>
  );
}

export function MailList({ folder }: { folder: Folder }) {
  const heading = useFocusHeading(folderLabel(folder));
  const [flash, setFlash] = useState(() => takeFlash());
  /** Cursors of the pages above the current one; the last is the current page's. */
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors.at(-1) ?? null;
  const list = useQuery({
    queryKey: ['mails', folder, cursor],
    queryFn: () => api.mails.list.query({ folder, cursor, limit: PAGE_SIZE }),
    placeholderData: keepPreviousData,
  });
  const page = cursors.length;

  return (
    <section aria-labelledby="list-heading">
      <div className="list-head">
        <h1 id="list-heading" ref={heading} tabIndex={-1}>
          {folderLabel(folder)}
        </h1>
        {list.isFetching && !list.isPending && (
          <span className="muted small" aria-hidden="true">
            Updating…
          </span>
        )}
        {folder === 'trash' && Boolean(list.data?.items.length) && (
          <EmptyTrash
            onEmptied={(deleted) => {
              setFlash(`${deleted} ${deleted === 1 ? 'message' : 'messages'} deleted for good.`);
              setCursors([null]);
            }}
          />
        )}
      </div>
      {flash && (
        <p className="notice" role="status">
          {flash}
        </p>
      )}
      {list.isPending && <p className="muted">Loading…</p>}
      {list.isError && (
        <p className="error" role="alert">
          Could not load {folderLabel(folder).toLowerCase()}: {errorMessage(list.error)}{' '}
          <button type="button" className="link-button" onClick={() => void list.refetch()}>
            Try again
          </button>
        </p>
      )}
      {list.data && list.data.items.length === 0 && <p className="empty">{page === 1 ? `No messages in ${folderLabel(folder)}.` : 'No more messages.'}</p>}
      {list.data && list.data.items.length > 0 && (
        <ul className="mail-list" aria-label={`${folderLabel(folder)}, page ${page}`}>
          {list.data.items.map((m) => (
            <Row key={m.id} mail={m} folder={folder} />
          ))}
        </ul>
      )}
      {(page > 1 || list.data?.nextCursor) && (
        <nav className="pager" aria-label="Pages">
          <button type="button" disabled={page === 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
            ← Newer
          </button>
          <span className="muted">Page {page}</span>
          <button type="button" disabled={!list.data?.nextCursor} onClick={() => list.data?.nextCursor && setCursors((c) => [...c, list.data.nextCursor])}>
            Older →
          </button>
        </nav>
      )}
    </section>
  );
}
