import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useRef, useState } from 'react';
import { api, downloadAttachment, downloadOriginal, errorCode, errorMessage, fetchAttachment, refetchAfterChange, type HistoryEntry, type Mail } from './api.js';
import { addressList, formatBytes, formatFullDate } from './format.js';
import { StatusBadge } from './MailList.js';
import { PaperclipIcon } from './icons.js';
import { Link, navigate } from './router.js';
import { cidKey, mailDocument } from './sanitize.js';
import { folderLabel, setFlash, useFocusHeading } from './Shell.js';

export function MailView({ id }: { id: string }) {
  // Asked again on every open: a cached copy may predate a change (a mail trashed since still
  // looks unread in the inbox), and opening acts on what it shows (see MailDetail's auto-read).
  const mail = useQuery({ queryKey: ['mail', id], queryFn: () => api.mails.get.query({ id }), refetchOnMount: 'always' });
  const code = errorCode(mail.error);
  if (mail.isPending) return <p className="muted">Loading…</p>;
  // Another user's mail, a deleted draft, or not a mail id at all: the same answer, nothing leaks.
  if (code === 'NOT_FOUND' || code === 'BAD_REQUEST') return <MailNotFound />;
  if (mail.isError)
    return (
      <p className="error" role="alert">
        Could not load this message: {errorMessage(mail.error)}{' '}
        <button type="button" className="link-button" onClick={() => void mail.refetch()}>
          Try again
        </button>
      </p>
    );
  return <MailDetail mail={mail.data} current={mail.isFetchedAfterMount} />;
}

function MailNotFound() {
  const heading = useFocusHeading('Not found');
  return (
    <section>
      <h1 ref={heading} tabIndex={-1}>
        Message not found
      </h1>
      <p>There is no such message in your mailbox. It may have been deleted, or the link is wrong.</p>
      <p>
        <Link to="/inbox">Back to the inbox</Link>
      </p>
    </section>
  );
}

/**
 * The changes of one mail run one after another: opening an unread mail marks it read, and a
 * "Move to trash" clicked at once must not overtake that (a mail in the trash cannot be marked read).
 */
const oneMail = (mail: Mail) => ({ id: `mail-${mail.id}` });

function useMarkRead(mail: Mail) {
  const queryClient = useQueryClient();
  return useMutation({
    scope: oneMail(mail),
    mutationFn: (read: boolean) => api.mails.setRead.mutate({ id: mail.id, read }),
    onSuccess: () => {
      for (const queryKey of [['mail', mail.id], ['mails'], ['mailboxes'], ['history', mail.id]]) void refetchAfterChange(queryClient, { queryKey });
    },
  });
}

/** Moves the mail to the trash (then back to the list it was in) or restores it from there. */
function useTrash(mail: Mail) {
  const queryClient = useQueryClient();
  return useMutation({
    scope: oneMail(mail),
    mutationFn: (trash: boolean) => (trash ? api.mails.trash.mutate({ id: mail.id }) : api.mails.restore.mutate({ id: mail.id })),
    onSuccess: (_, trash) => {
      void refetchAfterChange(queryClient);
      if (!trash) return;
      setFlash('Message moved to Trash.');
      navigate(`/${mail.folder}`);
    },
  });
}

/** Deletes a mail in the trash for good, after asking; then back to the trash. */
function useDeleteForGood(mail: Mail) {
  const queryClient = useQueryClient();
  return useMutation({
    scope: oneMail(mail),
    mutationFn: () => api.mails.delete.mutate({ id: mail.id }),
    onSuccess: () => {
      setFlash('Message deleted for good.');
      navigate('/trash');
      // Dropped, not refetched: the mail is gone.
      queryClient.removeQueries({ queryKey: ['mail', mail.id] });
      for (const queryKey of [['mails'], ['mailboxes']]) void refetchAfterChange(queryClient, { queryKey });
    },
  });
}

/** `current`: `mail` was fetched since this screen opened (not a cached copy). */
function MailDetail({ mail, current }: { mail: Mail; current: boolean }) {
  const heading = useFocusHeading(mail.subject || '(no subject)');
  const markRead = useMarkRead(mail);
  const trash = useTrash(mail);
  const deleteForGood = useDeleteForGood(mail);
  const original = useMutation({ mutationFn: () => downloadOriginal(mail.id) });
  const autoMarked = useRef(false);
  const received = mail.folder === 'inbox';

  // Opening an unread mail marks it read, once, judged on its current state; "Mark as unread" then sticks.
  useEffect(() => {
    if (current && received && mail.unread && !autoMarked.current) {
      autoMarked.current = true;
      markRead.mutate(true);
    }
  }, [current, received, mail.unread, markRead]);

  return (
    <article className="mail" aria-labelledby="mail-subject">
      <div className="toolbar" role="toolbar" aria-label="Message actions">
        <Link to={`/${mail.folder}`} className="button">
          ← {folderLabel(mail.folder)}
        </Link>
        {mail.folder === 'drafts' ? (
          <Link to={`/compose/${mail.id}`} className="button primary">
            Edit draft
          </Link>
        ) : (
          <>
            <Link to={`/compose?reply=${mail.id}`} className="button">
              Reply
            </Link>
            <Link to={`/compose?replyAll=${mail.id}`} className="button">
              Reply all
            </Link>
            <Link to={`/compose?forward=${mail.id}`} className="button">
              Forward
            </Link>
          </>
        )}
        {received && (
          <button type="button" onClick={() => markRead.mutate(mail.unread)} disabled={markRead.isPending}>
            {mail.unread ? 'Mark as read' : 'Mark as unread'}
          </button>
        )}
        {mail.trashedFrom ? (
          <>
            <button type="button" onClick={() => trash.mutate(false)} disabled={trash.isPending}>
              Restore to {folderLabel(mail.trashedFrom)}
            </button>
            <button
              type="button"
              className="danger"
              onClick={() => window.confirm('Delete this message for good? This cannot be undone.') && deleteForGood.mutate()}
              disabled={deleteForGood.isPending}
            >
              Delete for good
            </button>
          </>
        ) : (
          mail.folder !== 'drafts' && (
            <button type="button" className="danger" onClick={() => trash.mutate(true)} disabled={trash.isPending}>
              Move to trash
            </button>
          )
        )}
        {mail.folder !== 'drafts' && (
          <button type="button" onClick={() => original.mutate()} disabled={original.isPending} title="The message as received, with this server's checks on top (.eml)">
            Download original
          </button>
        )}
      </div>
      {[markRead, trash, deleteForGood, original].map(
        (action, i) =>
          action.isError && (
            <p key={i} className="error" role="alert">
              {errorMessage(action.error)}
            </p>
          ),
      )}
      <header className="mail-header">
        <h1 id="mail-subject" ref={heading} tabIndex={-1}>
          {mail.subject || '(no subject)'}
        </h1>
        <dl className="headers">
          <dt>From</dt>
          <dd>{addressList(mail.from) || '(unknown)'}</dd>
          <dt>To</dt>
          <dd>{addressList(mail.to) || '(none)'}</dd>
          {mail.cc.length > 0 && (
            <>
              <dt>Cc</dt>
              <dd>{addressList(mail.cc)}</dd>
            </>
          )}
          {mail.bcc.length > 0 && (
            <>
              <dt>Bcc</dt>
              <dd>{addressList(mail.bcc)}</dd>
            </>
          )}
          <dt>Date</dt>
          <dd>
            <time dateTime={mail.date}>{formatFullDate(mail.date)}</time>
          </dd>
          {(mail.trashedFrom ?? mail.folder) === 'sent' && (
            <>
              <dt>Delivery</dt>
              <dd>
                <StatusBadge status={mail.status} /> <DeliveryDetails recipients={mail.recipients} />
              </dd>
            </>
          )}
        </dl>
        {mail.authResults && <AuthResults results={mail.authResults} />}
      </header>
      <MailBody mail={mail} />
      {mail.attachments.length > 0 && <Attachments mail={mail} />}
      <History id={mail.id} />
    </article>
  );
}

function DeliveryDetails({ recipients }: { recipients: Mail['recipients'] }) {
  const entries = Object.entries(recipients);
  if (entries.length === 0) return null;
  return (
    <ul className="delivery">
      {entries.map(([rcpt, r]) => (
        <li key={rcpt}>
          {rcpt}: <strong>{r.state === 'queued' ? (r.attempts ? `waiting to retry (${r.attempts} attempts)` : 'queued') : r.state}</strong>
          {r.response ? <span className="muted"> — {r.response}</span> : null}
        </li>
      ))}
    </ul>
  );
}

type Results = NonNullable<Mail['authResults']>;

const EXPLAIN: Record<'spf' | 'dkim' | 'dmarc', Record<string, string>> = {
  spf: {
    pass: 'the sending server may send mail for the sender’s domain',
    fail: 'the sending server is NOT allowed to send for the sender’s domain',
    softfail: 'the sender’s domain does not vouch for the sending server',
    neutral: 'the sender’s domain makes no claim about the sending server',
    none: 'the sender’s domain publishes no SPF policy',
  },
  dkim: {
    pass: 'signed by the sender’s domain and unchanged on the way',
    fail: 'the signature does not match: the message may have been altered',
    neutral: 'the signature could not be used',
    none: 'the message is not signed',
    policy: 'the signature is not acceptable by policy',
  },
  dmarc: {
    pass: 'the From address’s domain is confirmed',
    fail: 'the From address’s domain is NOT confirmed: the sender may be forged',
    none: 'the From address’s domain publishes no DMARC policy',
  },
};

function verdictClass(result: string): string {
  if (result === 'pass') return 'good';
  if (result === 'fail' || result === 'softfail' || result === 'permerror') return 'bad';
  return 'neutral';
}

function explain(kind: 'spf' | 'dkim' | 'dmarc', result: string): string {
  return EXPLAIN[kind][result] ?? (result.endsWith('error') ? 'could not be checked' : result);
}

function AuthResults({ results }: { results: Results }) {
  const rows = [
    { kind: 'spf' as const, name: 'SPF', result: results.spf },
    { kind: 'dkim' as const, name: 'DKIM', result: results.dkim },
    { kind: 'dmarc' as const, name: 'DMARC', result: results.dmarc },
  ];
  const forged = results.dmarc === 'fail';
  return (
    <section className="auth-results" aria-labelledby="auth-heading">
      <h2 id="auth-heading" className="small-heading">
        Sender checks
      </h2>
      {forged && (
        <p className="warning" role="note">
          Be careful: this message failed DMARC. It may not come from who it says.
        </p>
      )}
      <ul>
        {rows.map((r) => (
          <li key={r.kind} className={`verdict ${verdictClass(r.result)}`}>
            <strong>
              {r.name}: {r.result}
            </strong>{' '}
            — {explain(r.kind, r.result)}
          </li>
        ))}
      </ul>
      <details>
        <summary>Authentication-Results header</summary>
        <pre className="raw">{results.header}</pre>
      </details>
    </section>
  );
}

/** Image types the mail document shows inline (its CSP allows them as data: URLs). */
const INLINE_IMAGE = /^image\/(?:png|gif|jpe?g|webp|bmp|avif)$/i;
/** Larger inline parts stay attachments: a data: URL holds the whole image in the page. */
const MAX_INLINE_BYTES = 5 * 1024 * 1024;

const dataUrl = (blob: Blob, type: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error('could not read an inline image'));
    reader.readAsDataURL(new Blob([blob], { type }));
  });

/** The images an HTML mail refers to by `cid:`, fetched from its attachments, by cidKey. */
function useInlineImages(mail: Mail) {
  const parts = mail.html && /cid:/i.test(mail.html) ? mail.attachments.filter((a) => a.contentId && INLINE_IMAGE.test(a.contentType) && a.size <= MAX_INLINE_BYTES) : [];
  return useQuery({
    queryKey: ['inline', mail.id],
    enabled: parts.length > 0,
    staleTime: Infinity,
    queryFn: async () => new Map(await Promise.all(parts.map(async (a) => [cidKey(a.contentId!), await dataUrl(await fetchAttachment(mail.id, a.id), a.contentType)] as const))),
  });
}

function MailBody({ mail }: { mail: Mail }) {
  const [allowRemote, setAllowRemote] = useState(false);
  const [showText, setShowText] = useState(!mail.html);
  const inline = useInlineImages(mail);
  const doc = useMemo(() => (mail.html ? mailDocument(mail.html, { allowRemote, inline: inline.data }) : null), [mail.html, allowRemote, inline.data]);
  const text = mail.text ?? '';
  return (
    <section className="body" aria-label="Message body">
      {mail.html && mail.text && (
        <p className="body-switch">
          <button type="button" className="link-button" onClick={() => setShowText((s) => !s)} aria-pressed={showText}>
            {showText ? 'Show formatted (HTML) version' : 'Show plain text version'}
          </button>
        </p>
      )}
      {!showText && doc && (
        <>
          {doc.blocked > 0 && !allowRemote && (
            <p className="remote-banner" role="note">
              <span>
                {doc.blocked === 1 ? '1 remote image was' : `${doc.blocked} remote images were`} blocked: loading them tells the sender when and where you read this.
              </span>{' '}
              <button type="button" onClick={() => setAllowRemote(true)}>
                Show remote images
              </button>
            </p>
          )}
          {/* No allow-scripts, allow-same-origin, allow-forms, allow-top-navigation: see sanitize.ts. */}
          <iframe
            className="mail-frame"
            title={`Message: ${mail.subject || '(no subject)'}`}
            sandbox="allow-popups allow-popups-to-escape-sandbox"
            referrerPolicy="no-referrer"
            srcDoc={doc.srcdoc}
            style={{ height: `${doc.height}px` }}
          />
        </>
      )}
      {(showText || !doc) && (text ? <div className="text-body">{text}</div> : <p className="muted">(This message has no text.)</p>)}
    </section>
  );
}

function Attachments({ mail }: { mail: Mail }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const download = async (a: Mail['attachments'][number]): Promise<void> => {
    setError(null);
    setBusy(a.id);
    try {
      await downloadAttachment(mail.id, a.id, a.filename ?? 'attachment');
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(null);
    }
  };
  return (
    <section className="attachments" aria-labelledby="att-heading">
      <h2 id="att-heading" className="small-heading">
        Attachments ({mail.attachments.length})
      </h2>
      <ul>
        {mail.attachments.map((a) => (
          <li key={a.id}>
            <button type="button" className="attachment" onClick={() => void download(a)} disabled={busy === a.id} aria-label={`Download ${a.filename ?? 'attachment'}, ${formatBytes(a.size)}`}>
              <PaperclipIcon /> {a.filename ?? 'attachment'} <span className="muted">({formatBytes(a.size)}, {a.contentType})</span>
            </button>
          </li>
        ))}
      </ul>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

const EVENT_TEXT: Record<string, string> = {
  DraftCreated: 'Draft created',
  DraftUpdated: 'Draft saved',
  DraftDeleted: 'Draft deleted',
  MailReceived: 'Received',
  MailSent: 'Sent: handed to the relay',
  MailDelivered: 'Delivered',
  MailDeliveryFailed: 'Delivery failed',
  MailRead: 'Marked as read',
  MailUnread: 'Marked as unread',
  MailTrashed: 'Moved to Trash',
  MailRestored: 'Restored from Trash',
  MailDeleted: 'Deleted for good',
};

/** Detail fields worth a label in the timeline, in this order. */
const DETAIL_LABELS: [string, string][] = [
  ['mailFrom', 'Envelope from'],
  ['rcptTo', 'Envelope to'],
  ['recipients', 'Recipients'],
  ['remoteAddress', 'From IP'],
  ['tls', 'TLS'],
  ['spf', 'SPF'],
  ['dkim', 'DKIM'],
  ['dmarc', 'DMARC'],
  ['folder', 'Folder'],
  ['attempt', 'Attempt'],
  ['permanent', 'Permanent'],
  ['response', 'Server said'],
  ['nextAttemptAt', 'Next attempt'],
  ['messageId', 'Message-ID'],
];

function detailValue(key: string, value: unknown): string {
  if (value === null || value === undefined || value === '') return '';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (key === 'nextAttemptAt' && typeof value === 'string') return formatFullDate(value);
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function History({ id }: { id: string }) {
  const history = useQuery({ queryKey: ['history', id], queryFn: () => api.mails.history.query({ id }) });
  return (
    <section className="history" aria-labelledby="history-heading">
      <h2 id="history-heading" className="small-heading">
        History
      </h2>
      <p className="muted small">Every change to this message, from the event log.</p>
      {history.isPending && <p className="muted">Loading…</p>}
      {history.isError && (
        <p className="error" role="alert">
          Could not load the history: {errorMessage(history.error)}
        </p>
      )}
      {history.data && (
        <ol className="timeline">
          {history.data.map((e) => (
            <HistoryItem key={e.position} entry={e} />
          ))}
        </ol>
      )}
    </section>
  );
}

function HistoryItem({ entry }: { entry: HistoryEntry }) {
  const fields = entry as unknown as Record<string, unknown>;
  const details = DETAIL_LABELS.map(([key, label]) => [label, detailValue(key, fields[key])] as const).filter(([, v]) => v !== '');
  const failed = entry.type === 'MailDeliveryFailed';
  return (
    <li className={`event event-${entry.type}${failed ? ' bad' : ''}`} data-event-type={entry.type}>
      <div className="event-head">
        <strong>{EVENT_TEXT[entry.type] ?? entry.type}</strong>{' '}
        <time dateTime={entry.at} className="muted">
          {formatFullDate(entry.at)}
        </time>{' '}
        <span className="muted small">
          #{entry.position}
          {entry.actor ? ` · by ${entry.actor}` : ''}
        </span>
      </div>
      {details.length > 0 && (
        <dl className="event-details">
          {details.map(([label, value]) => (
            <div key={label}>
              <dt>{label}</dt>
              <dd>{value}</dd>
            </div>
          ))}
        </dl>
      )}
    </li>
  );
}

