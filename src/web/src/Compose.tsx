import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useCallback, useEffect, useId, useLayoutEffect, useRef, useState, type ChangeEvent, type ClipboardEvent, type DragEvent, type FormEvent, type KeyboardEvent, type RefObject } from 'react';
import { api, errorCode, errorMessage, fetchAttachment, refetchAfterChange, type DraftInput, type Mail } from './api.js';
import { addressList, bracketId, displayAddress, fileToBase64, formatBytes, formatFullDate, parseAddresses, prefixSubject, quote, type Address } from './format.js';
import { useMaxAttachmentBytes } from './limits.js';
import { PaperclipIcon } from './icons.js';
import { MESSAGE_ID } from '../../mail/message-id.js';
import { navigate } from './router.js';
import { editableHtml, htmlToText, textToHtml } from './sanitize.js';
import { session } from './session.js';
import { setFlash, useFocusHeading } from './Shell.js';

export type ComposeMode = 'new' | 'reply' | 'replyAll' | 'forward';

interface UploadedFile {
  key: string;
  filename: string;
  contentType: string;
  size: number;
  /** base64 */
  content: string;
}

interface Fields {
  /** The address to send from: '' for the mailbox's own, else one of its aliases. */
  from: string;
  to: string;
  cc: string;
  bcc: string;
  subject: string;
  text: string;
  /** The formatted body, as the editor holds it (sanitised); null: plain text (`text`). */
  html: string | null;
  attachments: UploadedFile[];
  inReplyTo: string | null;
  references: string[];
}

const EMPTY: Fields = { from: '', to: '', cc: '', bcc: '', subject: '', text: '', html: null, attachments: [], inReplyTo: null, references: [] };

/** How long typing must pause before the draft is saved. */
const AUTOSAVE_MS = 1500;

let fileKeys = 0;

async function attachmentsOf(mail: Mail): Promise<UploadedFile[]> {
  return Promise.all(
    mail.attachments.map(async (a) => ({
      key: `f${++fileKeys}`,
      filename: a.filename ?? 'attachment',
      contentType: a.contentType,
      size: a.size,
      content: await fileToBase64(await fetchAttachment(mail.id, a.id)),
    })),
  );
}

const bodyText = (m: Mail): string => m.text ?? (m.html ? htmlToText(m.html) : '');
const notMe = (a: Address): boolean => a.address.toLowerCase() !== session.user()?.email.toLowerCase();
const uniq = (list: Address[]): Address[] => list.filter((a, i) => list.findIndex((b) => b.address.toLowerCase() === a.address.toLowerCase()) === i);

/** References as the API takes them: well-formed ids, each once, the last 100 (the API's limit; the oldest matter least). */
const threadIds = (ids: string[]): string[] => ids.filter((r, i, all) => MESSAGE_ID.test(r) && all.indexOf(r) === i).slice(-100);

/** The fields of a reply or forward of `m`, with the quoted original and the threading headers. */
export function answerFields(m: Mail, mode: Exclude<ComposeMode, 'new'>): Fields {
  // Only ids the API takes: a received mail may carry malformed ones, which threading can do without.
  const references = threadIds([...m.references.map(bracketId), ...(m.messageId ? [bracketId(m.messageId)] : [])]);
  const inReplyTo = m.messageId && MESSAGE_ID.test(bracketId(m.messageId)) ? bracketId(m.messageId) : null;
  const sender = m.from[0];
  if (mode === 'forward') {
    const header = [
      '---------- Forwarded message ----------',
      `From: ${addressList(m.from)}`,
      `Date: ${formatFullDate(m.date)}`,
      `Subject: ${m.subject}`,
      `To: ${addressList(m.to)}`,
      ...(m.cc.length ? [`Cc: ${addressList(m.cc)}`] : []),
    ].join('\n');
    // An HTML original is forwarded formatted (as far as the editor keeps formatting).
    const html = m.html ? `<div><br></div>${textToHtml(header)}<div><br></div><div>${editableHtml(m.html)}</div>` : null;
    return { ...EMPTY, subject: prefixSubject('Fwd', m.subject), text: `\n\n${header}\n\n${bodyText(m)}`, html, references };
  }
  // Answering one's own sent mail goes to its recipients again.
  const mine = m.folder === 'sent';
  const primary = mine ? m.to : m.from;
  const to = mode === 'replyAll' && !mine ? uniq([...m.from, ...m.to].filter(notMe)) : primary;
  const cc = mode === 'replyAll' ? uniq(m.cc.filter(notMe)).filter((c) => !to.some((t) => t.address.toLowerCase() === c.address.toLowerCase())) : [];
  const intro = `On ${formatFullDate(m.date)}, ${sender ? displayAddress(sender) : 'someone'} wrote:`;
  return {
    ...EMPTY,
    to: to.map(displayAddress).join(', '),
    cc: cc.map(displayAddress).join(', '),
    subject: prefixSubject('Re', m.subject),
    text: `\n\n${intro}\n${quote(bodyText(m))}`,
    // An HTML original is quoted formatted, in a blockquote.
    html: m.html ? `<div><br></div><div><br></div>${textToHtml(intro)}<blockquote>${editableHtml(m.html)}</blockquote>` : null,
    inReplyTo,
    references,
  };
}

/** The alias an answer goes out from: the one the mail was sent to (or, for one's own sent mail, sent from); '' for none. */
async function aliasAnswering(m: Mail): Promise<string> {
  const aliases = await api.aliases.list.query();
  if (aliases.length === 0) return '';
  const addressed = (m.folder === 'sent' ? m.from : [...m.to, ...m.cc]).map((a) => a.address.toLowerCase());
  return aliases.find((a) => addressed.includes(a.address.toLowerCase()))?.address ?? '';
}

export function Compose({ composeKey, draftId, mode, sourceId }: { composeKey: string; draftId: string | null; mode: ComposeMode; sourceId: string | null }) {
  const [initial, setInitial] = useState<Fields | null>(draftId || (mode !== 'new' && sourceId) ? null : EMPTY);
  const [error, setError] = useState<{ message: string; notFound: boolean } | null>(null);

  useEffect(() => {
    if (initial) return;
    let cancelled = false;
    void (async () => {
      try {
        if (draftId) {
          const d = await api.mails.get.query({ id: draftId });
          if (d.folder !== 'drafts') {
            navigate(`/mail/${d.id}`, { replace: true });
            return;
          }
          const fields: Fields = {
            from: d.from[0]?.address ?? '',
            to: d.to.map(displayAddress).join(', '),
            cc: d.cc.map(displayAddress).join(', '),
            bcc: d.bcc.map(displayAddress).join(', '),
            subject: d.subject,
            text: d.text ?? (d.html ? htmlToText(d.html) : ''),
            html: d.html ? editableHtml(d.html) : null,
            attachments: await attachmentsOf(d),
            // A draft saved before the API checked them may hold ids it now refuses: it must still save.
            inReplyTo: d.inReplyTo && MESSAGE_ID.test(d.inReplyTo) ? d.inReplyTo : null,
            references: threadIds(d.references),
          };
          if (!cancelled) setInitial(fields);
        } else if (sourceId && mode !== 'new') {
          const m = await api.mails.get.query({ id: sourceId });
          const fields = { ...answerFields(m, mode), from: await aliasAnswering(m) };
          if (mode === 'forward') fields.attachments = await attachmentsOf(m);
          if (!cancelled) setInitial(fields);
        }
      } catch (err) {
        const code = errorCode(err);
        if (code === 'UNAUTHORIZED') session.expire();
        if (!cancelled) setError({ message: errorMessage(err), notFound: code === 'NOT_FOUND' || code === 'BAD_REQUEST' });
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [draftId, mode, sourceId, initial]);

  if (error) return <ComposeError {...error} />;
  if (!initial) return <p className="muted">Loading…</p>;
  return <ComposeForm initial={initial} initialDraftId={draftId} mode={mode} composeKey={composeKey} />;
}

function ComposeError({ message, notFound }: { message: string; notFound: boolean }) {
  const heading = useFocusHeading(notFound ? 'Not found' : 'Compose');
  return (
    <section>
      <h1 ref={heading} tabIndex={-1}>
        {notFound ? 'Message not found' : 'Cannot open this draft'}
      </h1>
      <p>{notFound ? 'There is no such message in your mailbox.' : message}</p>
    </section>
  );
}

type SaveState = { kind: 'idle' } | { kind: 'saving' } | { kind: 'saved'; at: Date } | { kind: 'error'; message: string };

function toInput(f: Fields): DraftInput {
  const recipients = (s: string): Address[] => parseAddresses(s).valid;
  return {
    ...(f.from ? { from: f.from } : {}),
    // Autosave keeps what is an address already; the rest stays in the field until Send says what is wrong.
    to: recipients(f.to),
    cc: recipients(f.cc),
    bcc: recipients(f.bcc),
    subject: f.subject,
    // A formatted message goes as HTML with its plain-text rendering beside it.
    ...(f.html === null ? { text: f.text } : { text: htmlToText(f.html), html: f.html }),
    attachments: f.attachments.map((a) => ({ filename: a.filename, contentType: a.contentType, content: a.content })),
    ...(f.inReplyTo ? { inReplyTo: f.inReplyTo } : {}),
    references: f.references,
  };
}

function ComposeForm({ initial, initialDraftId, mode, composeKey }: { initial: Fields; initialDraftId: string | null; mode: ComposeMode; composeKey: string }) {
  const [title] = useState(() => (initialDraftId ? 'Edit draft' : mode === 'forward' ? 'Forward' : mode === 'new' ? 'New message' : 'Reply'));
  const heading = useFocusHeading(title);
  const queryClient = useQueryClient();
  const maxAttachmentBytes = useMaxAttachmentBytes();
  // Asked again on every compose: an alias an admin just added is offered at once.
  const aliases = useQuery({ queryKey: ['aliases'], queryFn: () => api.aliases.list.query(), refetchOnMount: 'always' });
  const formId = useId();
  const [fields, setFields] = useState<Fields>(initial);
  const [showCc, setShowCc] = useState(!!(initial.cc || initial.bcc));
  const [save, setSave] = useState<SaveState>({ kind: 'idle' });
  const [problems, setProblems] = useState<string[]>([]);
  const [sending, setSending] = useState(false);
  const [deliveryReceipt, setDeliveryReceipt] = useState(false);
  const draftId = useRef<string | null>(initialDraftId);
  const dirty = useRef(false);
  const chain = useRef<Promise<unknown>>(Promise.resolve());
  const latest = useRef(fields);
  latest.current = fields;
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const toRef = useRef<HTMLInputElement>(null);
  const bodyRef = useRef<HTMLTextAreaElement>(null);
  const editorRef = useRef<HTMLDivElement>(null);

  // Replies start in the body (above the quote); new mail in To. Before the first paint, like the heading's.
  useLayoutEffect(() => {
    if ((mode === 'reply' || mode === 'replyAll') && editorRef.current) {
      // Above the quote: the caret at the start of the editor (filled by its own layout effect, which runs first).
      editorRef.current.focus();
      const start = document.createRange();
      start.setStart(editorRef.current.firstChild ?? editorRef.current, 0);
      window.getSelection()?.removeAllRanges();
      window.getSelection()?.addRange(start);
    } else if (mode === 'reply' || mode === 'replyAll') {
      bodyRef.current?.focus();
      bodyRef.current?.setSelectionRange(0, 0);
    } else if (!initial.to) toRef.current?.focus();
    else heading.current?.focus();
  }, [mode, initial.to, heading]);

  /** Saves the current fields (one save at a time, in order); resolves with the draft's id. */
  const saveNow = useCallback((): Promise<string> => {
    clearTimeout(timer.current);
    const run = chain.current.then(async () => {
      if (!dirty.current && draftId.current) return draftId.current;
      dirty.current = false;
      setSave({ kind: 'saving' });
      const input = toInput(latest.current);
      try {
        if (draftId.current) await api.mails.updateDraft.mutate({ ...input, id: draftId.current });
        else {
          const r = await api.mails.createDraft.mutate(input);
          draftId.current = r.id;
          // The address now names the draft: a reload reopens it.
          window.history.replaceState({ composeKey }, '', `/compose/${r.id}`);
        }
        setSave({ kind: 'saved', at: new Date() });
        void refetchAfterChange(queryClient, { queryKey: ['mailboxes'] });
        void refetchAfterChange(queryClient, { queryKey: ['mails', 'drafts'] });
        return draftId.current;
      } catch (err) {
        dirty.current = true;
        if (errorCode(err) === 'UNAUTHORIZED') session.expire();
        setSave({ kind: 'error', message: errorMessage(err) });
        throw err;
      }
    });
    chain.current = run.catch(() => undefined);
    return run;
  }, [queryClient, composeKey]);

  const update = (patch: Partial<Fields>): void => {
    dirty.current = true;
    setFields((f) => ({ ...f, ...patch }));
    setProblems([]);
    clearTimeout(timer.current);
    timer.current = setTimeout(() => void saveNow().catch(() => undefined), AUTOSAVE_MS);
  };

  // Leaving the screen saves what was typed since the last save.
  useEffect(
    () => () => {
      clearTimeout(timer.current);
      if (dirty.current && session.token()) void saveNow().catch(() => undefined);
    },
    [saveNow],
  );

  useEffect(() => {
    const warn = (e: BeforeUnloadEvent): void => {
      if (dirty.current) e.preventDefault();
    };
    window.addEventListener('beforeunload', warn);
    return () => window.removeEventListener('beforeunload', warn);
  }, []);

  const addFiles = async (e: ChangeEvent<HTMLInputElement>): Promise<void> => {
    const files = [...(e.target.files ?? [])];
    e.target.value = '';
    const tooBig = files.filter((f) => f.size > maxAttachmentBytes);
    const ok = files.filter((f) => f.size <= maxAttachmentBytes);
    setProblems(tooBig.map((f) => `${f.name} is ${formatBytes(f.size)}; the limit is ${formatBytes(maxAttachmentBytes)} per file.`));
    const added = await Promise.all(
      ok.map(async (f) => ({ key: `f${++fileKeys}`, filename: f.name, contentType: /^[\w.+-]+\/[\w.+-]+$/.test(f.type) ? f.type : 'application/octet-stream', size: f.size, content: await fileToBase64(f) })),
    );
    if (added.length) update({ attachments: [...latest.current.attachments, ...added] });
  };

  const send = async (e?: FormEvent): Promise<void> => {
    e?.preventDefault();
    const parsed = [parseAddresses(fields.to), parseAddresses(fields.cc), parseAddresses(fields.bcc)];
    const bad = parsed.flatMap((p) => p.invalid);
    const found: string[] = [];
    if (bad.length) found.push(`Not an email address: ${bad.join(', ')}`);
    if (parsed.every((p) => p.valid.length === 0)) found.push('Add at least one recipient.');
    setProblems(found);
    if (found.length) return;
    setSending(true);
    try {
      const id = await saveNow();
      await api.mails.send.mutate({ id, deliveryReceipt });
      dirty.current = false;
      setFlash('Message sent.');
      void refetchAfterChange(queryClient);
      navigate('/sent');
    } catch (err) {
      setProblems([`Not sent: ${errorMessage(err)}`]);
      setSending(false);
    }
  };

  const discard = async (): Promise<void> => {
    if (!window.confirm('Discard this draft?')) return;
    clearTimeout(timer.current);
    dirty.current = false;
    try {
      await chain.current;
      if (draftId.current) await api.mails.deleteDraft.mutate({ id: draftId.current });
      void refetchAfterChange(queryClient);
      setFlash('Draft discarded.');
      navigate('/drafts');
    } catch (err) {
      setProblems([errorMessage(err)]);
    }
  };

  const onKeyDown = (e: KeyboardEvent): void => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void send();
  };

  const totalSize = fields.attachments.reduce((n, a) => n + a.size, 0);
  // The mailbox's own address (''), its aliases, and the draft's own From if it is none of those
  // (an alias removed since, or a +tag set through the API): shown, so that another can be chosen.
  const fromChoices = ['', ...(aliases.data ?? []).map((a) => a.address)];
  if (fields.from && !fromChoices.some((a) => a.toLowerCase() === fields.from.toLowerCase())) fromChoices.push(fields.from);

  /** Plain text becomes formatted (line by line); formatted becomes plain text, after asking, since formatting is lost. */
  const toggleFormatting = (): void => {
    if (fields.html === null) update({ html: textToHtml(fields.text) });
    else if (window.confirm('Remove the formatting? The message becomes plain text.')) update({ text: htmlToText(fields.html), html: null });
  };

  return (
    <section aria-labelledby={`${formId}-title`} className="compose">
      <h1 id={`${formId}-title`} ref={heading} tabIndex={-1}>
        {title}
      </h1>
      <form onSubmit={send} onKeyDown={onKeyDown} noValidate>
        {fromChoices.length > 1 && (
          <div className="field row-field">
            <label htmlFor={`${formId}-from`}>From</label>
            <select id={`${formId}-from`} value={fields.from} onChange={(e) => update({ from: e.target.value })}>
              <option value="">{session.user()?.email}</option>
              {fromChoices.slice(1).map((address) => (
                <option key={address} value={address}>
                  {address}
                </option>
              ))}
            </select>
          </div>
        )}
        <div className="field row-field">
          <label htmlFor={`${formId}-to`}>To</label>
          <input id={`${formId}-to`} ref={toRef} type="text" inputMode="email" autoComplete="off" value={fields.to} onChange={(e) => update({ to: e.target.value })} aria-describedby={`${formId}-addr-hint`} />
          {!showCc && (
            <button type="button" className="link-button" onClick={() => setShowCc(true)}>
              Cc/Bcc
            </button>
          )}
        </div>
        <p id={`${formId}-addr-hint`} className="hint sr-only">
          Separate addresses with commas.
        </p>
        {showCc && (
          <>
            <div className="field row-field">
              <label htmlFor={`${formId}-cc`}>Cc</label>
              <input id={`${formId}-cc`} type="text" inputMode="email" autoComplete="off" value={fields.cc} onChange={(e) => update({ cc: e.target.value })} aria-describedby={`${formId}-addr-hint`} />
            </div>
            <div className="field row-field">
              <label htmlFor={`${formId}-bcc`}>Bcc</label>
              <input id={`${formId}-bcc`} type="text" inputMode="email" autoComplete="off" value={fields.bcc} onChange={(e) => update({ bcc: e.target.value })} aria-describedby={`${formId}-addr-hint`} />
            </div>
          </>
        )}
        <div className="field row-field">
          <label htmlFor={`${formId}-subject`}>Subject</label>
          <input id={`${formId}-subject`} type="text" value={fields.subject} maxLength={998} onChange={(e) => update({ subject: e.target.value })} />
        </div>
        <div className="field">
          <div className="body-head">
            <label htmlFor={`${formId}-body`} id={`${formId}-body-label`} className="sr-only">
              Message
            </label>
            {fields.html !== null && <FormatToolbar editor={editorRef} onChange={(html) => update({ html })} onProblem={(p) => setProblems([p])} />}
            <button type="button" className="link-button" aria-pressed={fields.html !== null} onClick={toggleFormatting}>
              Formatting
            </button>
          </div>
          {fields.html === null ? (
            <textarea id={`${formId}-body`} ref={bodyRef} value={fields.text} rows={14} onChange={(e) => update({ text: e.target.value })} />
          ) : (
            <RichEditor id={`${formId}-body`} labelledBy={`${formId}-body-label`} editor={editorRef} initialHtml={fields.html} onChange={(html) => update({ html })} />
          )}
        </div>
        <div className="field attach">
          <label htmlFor={`${formId}-files`} className="button">
            <PaperclipIcon /> Attach files
          </label>
          <input id={`${formId}-files`} type="file" multiple className="file-input" onChange={(e) => void addFiles(e)} aria-describedby={`${formId}-limit`} />
          <span id={`${formId}-limit`} className="muted small">
            Up to {formatBytes(maxAttachmentBytes)} per file.
          </span>
        </div>
        {fields.attachments.length > 0 && (
          <ul className="uploads" aria-label={`Attachments, ${formatBytes(totalSize)} in all`}>
            {fields.attachments.map((a) => (
              <li key={a.key}>
                <span>
                  {a.filename} <span className="muted">({formatBytes(a.size)})</span>
                </span>
                <button type="button" className="link-button" onClick={() => update({ attachments: fields.attachments.filter((x) => x.key !== a.key) })} aria-label={`Remove ${a.filename}`}>
                  Remove
                </button>
              </li>
            ))}
          </ul>
        )}
        {problems.length > 0 && (
          <div className="error" role="alert">
            {problems.map((p) => (
              <p key={p}>{p}</p>
            ))}
          </div>
        )}
        <div className="compose-actions">
          <button type="submit" className="primary" disabled={sending}>
            {sending ? 'Sending…' : 'Send'}
          </button>
          <button type="button" onClick={() => void saveNow().catch(() => undefined)} disabled={sending}>
            Save draft
          </button>
          <button type="button" className="danger" onClick={() => void discard()} disabled={sending}>
            Discard
          </button>
          <label className="small" title="A report in your inbox when each recipient's server has the mail, or could not deliver it">
            <input type="checkbox" checked={deliveryReceipt} onChange={(e) => setDeliveryReceipt(e.target.checked)} disabled={sending} /> Delivery receipt
          </label>
          <span className="save-state muted small" role="status" aria-live="polite">
            {save.kind === 'saving' && 'Saving draft…'}
            {save.kind === 'saved' && `Draft saved at ${save.at.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })}`}
            {save.kind === 'error' && `Draft not saved: ${save.message}`}
          </span>
        </div>
        <p className="muted small">Ctrl+Enter sends.</p>
      </form>
    </section>
  );
}

/** Inserts HTML from the clipboard or a drop, cleaned first: the editor runs in the app's own page. */
function insertCleaned(data: DataTransfer): void {
  const html = data.getData('text/html');
  if (html) document.execCommand('insertHTML', false, editableHtml(html));
  else document.execCommand('insertText', false, data.getData('text/plain'));
}

/**
 * The formatted body: a contenteditable element, not controlled by React (re-rendering it would
 * move the caret); it reports its sanitised HTML on every change.
 */
function RichEditor({ id, labelledBy, editor, initialHtml, onChange }: { id: string; labelledBy: string; editor: RefObject<HTMLDivElement | null>; initialHtml: string; onChange: (html: string) => void }) {
  useLayoutEffect(() => {
    // Set once, from sanitised HTML (a draft's, or plain text made into lines).
    if (editor.current) editor.current.innerHTML = editableHtml(initialHtml);
  }, []);
  const report = (): void => {
    if (editor.current) onChange(editableHtml(editor.current.innerHTML));
  };
  const onPaste = (e: ClipboardEvent<HTMLDivElement>): void => {
    e.preventDefault();
    insertCleaned(e.clipboardData);
    report();
  };
  const onDrop = (e: DragEvent<HTMLDivElement>): void => {
    // Files are attached with the button; text and HTML go in cleaned.
    e.preventDefault();
    if (e.dataTransfer.files.length === 0) insertCleaned(e.dataTransfer);
    report();
  };
  return <div id={id} ref={editor} className="editor" contentEditable role="textbox" aria-multiline="true" aria-labelledby={labelledBy} onInput={report} onPaste={onPaste} onDrop={onDrop} suppressContentEditableWarning />;
}

const FORMATS: { label: string; command: string; text: string }[] = [
  { label: 'Bold', command: 'bold', text: 'B' },
  { label: 'Italic', command: 'italic', text: 'I' },
  { label: 'Bulleted list', command: 'insertUnorderedList', text: '•' },
  { label: 'Numbered list', command: 'insertOrderedList', text: '1.' },
  { label: 'Quote', command: 'formatBlock', text: '❝' },
];

/** The editor's toolbar. Buttons keep the editor's selection (no focus on mouse down) and act on it. */
function FormatToolbar({ editor, onChange, onProblem }: { editor: RefObject<HTMLDivElement | null>; onChange: (html: string) => void; onProblem: (message: string) => void }) {
  const apply = (command: string, value?: string): void => {
    editor.current?.focus();
    document.execCommand(command, false, value);
    if (editor.current) onChange(editableHtml(editor.current.innerHTML));
  };
  const link = (): void => {
    const url = window.prompt('Link address (https://…, mailto:…)')?.trim();
    if (!url) return;
    if (!/^(?:https?:\/\/|mailto:)\S+$/i.test(url)) return onProblem(`Not a link address: ${url}. Use one that starts with https://, http:// or mailto:.`);
    apply('createLink', url);
  };
  return (
    <div role="toolbar" aria-label="Formatting" className="format-toolbar">
      {FORMATS.map((f) => (
        <button key={f.label} type="button" className={`format-${f.command}`} aria-label={f.label} title={f.label} onMouseDown={(e) => e.preventDefault()} onClick={() => apply(f.command, f.command === 'formatBlock' ? 'blockquote' : undefined)}>
          {f.text}
        </button>
      ))}
      <button type="button" aria-label="Link" title="Link" onMouseDown={(e) => e.preventDefault()} onClick={link}>
        Link
      </button>
    </div>
  );
}
