import { Account } from './Account.js';
import { useQuery } from '@tanstack/react-query';
import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import { api, type Folder } from './api.js';
import { Compose } from './Compose.js';
import { useLiveUpdates, type LiveState } from './live.js';
import { MailList } from './MailList.js';
import { MailView } from './MailView.js';
import { Link, navigate, useLocation, visitKey } from './router.js';
import { session, type SessionUser } from './session.js';

const FOLDERS: { id: Folder; label: string }[] = [
  { id: 'inbox', label: 'Inbox' },
  { id: 'sent', label: 'Sent' },
  { id: 'drafts', label: 'Drafts' },
  { id: 'trash', label: 'Trash' },
];

export const folderLabel = (f: Folder): string => FOLDERS.find((x) => x.id === f)?.label ?? f;

/** A one-off message for the next screen ("Message sent."), shown once in a status region. */
let flash: string | null = null;
export function setFlash(message: string): void {
  flash = message;
}
export function takeFlash(): string | null {
  const m = flash;
  flash = null;
  return m;
}

function useCounts() {
  return useQuery({
    queryKey: ['mailboxes'],
    queryFn: () => api.mailboxes.list.query(),
    select: (boxes) => ({
      address: boxes[0]?.address ?? null,
      inbox: boxes.reduce((n, b) => n + b.counts.inbox, 0),
      unread: boxes.reduce((n, b) => n + b.counts.unread, 0),
      sent: boxes.reduce((n, b) => n + b.counts.sent, 0),
      drafts: boxes.reduce((n, b) => n + b.counts.drafts, 0),
      trash: boxes.reduce((n, b) => n + b.counts.trash, 0),
    }),
  });
}

const LIVE_TEXT: Record<LiveState, string> = {
  connecting: 'Connecting…',
  live: 'Live',
  polling: 'Offline: checking every 10 s',
};

export function Shell({ user }: { user: SessionUser }) {
  const { path, query } = useLocation();
  const live = useLiveUpdates(session.token() ?? '');
  const counts = useCounts();
  const [announcement, setAnnouncement] = useState('');
  const lastUnread = useRef<number | null>(null);

  // Tell screen-reader users about new mail.
  const unread = counts.data?.unread;
  useEffect(() => {
    if (unread === undefined) return;
    if (lastUnread.current !== null && unread > lastUnread.current) setAnnouncement(`New mail: ${unread} unread in Inbox.`);
    lastUnread.current = unread;
  }, [unread]);

  useEffect(() => {
    if (path === '/') navigate('/inbox', { replace: true });
  }, [path]);

  let content;
  let current: Folder | null = null;
  const folder = /^\/(inbox|sent|drafts|trash)$/.exec(path);
  const mail = /^\/mail\/([^/]+)$/.exec(path);
  const compose = /^\/compose(?:\/([^/]+))?$/.exec(path);
  if (folder) {
    current = folder[1] as Folder;
    content = <MailList key={current} folder={current} />;
  } else if (mail) {
    content = <MailView key={mail[1]} id={decodeURIComponent(mail[1]!)} />;
  } else if (compose) {
    const draftId = compose[1] ? decodeURIComponent(compose[1]) : null;
    const source = query.get('reply') ?? query.get('replyAll') ?? query.get('forward');
    const mode = query.has('reply') ? 'reply' : query.has('replyAll') ? 'replyAll' : query.has('forward') ? 'forward' : 'new';
    // A new draft's first save changes the address to /compose/<id> (so a reload reopens it) but
    // keeps the key it was opened with: the form stays as it is, mid-typing.
    const kept = (window.history.state as { composeKey?: unknown } | null)?.composeKey;
    const composeKey = typeof kept === 'string' ? kept : `${visitKey()}:${draftId ?? ''}:${mode}:${source ?? ''}`;
    content = <Compose key={composeKey} composeKey={composeKey} draftId={draftId} mode={mode} sourceId={source} />;
  } else if (path === '/account') {
    content = <Account user={user} />;
  } else if (path === '/') {
    content = null;
  } else {
    content = <NotFound />;
  }

  const count = (f: Folder): { n: number; label: string } | null => {
    if (!counts.data) return null;
    if (f === 'inbox') return { n: counts.data.unread, label: `${counts.data.unread} unread` };
    const n = counts.data[f];
    return { n, label: `${n} ${f === 'drafts' ? (n === 1 ? 'draft' : 'drafts') : n === 1 ? 'message' : 'messages'}` };
  };

  return (
    <div className="app">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/inbox" className="brand">
          mailtrail
        </Link>
        <span className={`live live-${live}`} role="status" aria-label={`Updates: ${LIVE_TEXT[live]}`} title="New mail appears without reloading">
          <span className="dot" aria-hidden="true" />
          <span className="live-text">{LIVE_TEXT[live]}</span>
        </span>
        <Link to="/account" className="who" title="Your account" aria-current={path === '/account' ? 'page' : undefined}>
          {user.name ? `${user.name} · ` : ''}
          {user.email}
        </Link>
        <button type="button" className="link-button" onClick={() => session.logout()}>
          Sign out
        </button>
      </header>
      <div className="layout">
        <nav className="sidebar" aria-label="Folders">
          <Link to="/compose" className="button primary compose-button">
            Compose
          </Link>
          <ul>
            {FOLDERS.map((f) => {
              const c = count(f.id);
              return (
                <li key={f.id}>
                  <Link to={`/${f.id}`} aria-current={current === f.id ? 'page' : undefined} className="folder-link">
                    <span>{f.label}</span>
                    {c && c.n > 0 && (
                      <span className={`count${f.id === 'inbox' ? ' unread-count' : ''}`} data-testid={`count-${f.id}`}>
                        <span aria-hidden="true">{c.n}</span>
                        <span className="sr-only">, {c.label}</span>
                      </span>
                    )}
                  </Link>
                </li>
              );
            })}
          </ul>
        </nav>
        <main id="main" className="content">
          {content}
        </main>
      </div>
      <div className="sr-only" aria-live="polite">
        {announcement}
      </div>
    </div>
  );
}

/** Focuses the page heading when a screen opens, so keyboard and screen-reader users start there. */
export function useFocusHeading(title: string) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · mailtrail`;
  }, [title]);
  // Before the first paint: a page never shows without its focus in place.
  useLayoutEffect(() => {
    ref.current?.focus({ preventScroll: true });
  }, []);
  return ref;
}

function NotFound() {
  const heading = useFocusHeading('Not found');
  return (
    <section>
      <h1 ref={heading} tabIndex={-1}>
        Not found
      </h1>
      <p>There is nothing at this address.</p>
      <p>
        <Link to="/inbox">Go to the inbox</Link>
      </p>
    </section>
  );
}
