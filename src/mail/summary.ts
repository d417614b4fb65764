import type { AddressObject, EmailAddress, HeaderLines, Headers, HeaderValue } from 'mailparser';
import type { Address, MessageSummary } from '../events/types.js';

/**
 * Pure: what mailtrail keeps about a message (`MessageSummary`), from mailparser's parsed headers
 * and text. Blob references are filled in once the blobs are durable.
 */

export type SummaryFields = Omit<MessageSummary, 'text' | 'html' | 'attachments'>;

const SNIPPET_LENGTH = 200;

function addressList(value: HeaderValue | undefined): Address[] {
  if (!value || typeof value !== 'object' || value instanceof Date) return [];
  const objects = (Array.isArray(value) ? value : [value]) as unknown[];
  const out: Address[] = [];
  const visit = (e: EmailAddress): void => {
    if (e.group) e.group.forEach(visit);
    else if (e.address) out.push({ name: e.name ?? '', address: e.address });
  };
  for (const o of objects) {
    if (o && typeof o === 'object' && Array.isArray((o as AddressObject).value)) (o as AddressObject).value.forEach(visit);
  }
  return out;
}

const stringHeader = (value: HeaderValue | undefined): string | null => (typeof value === 'string' && value.trim() ? value.trim() : null);

function referenceList(value: HeaderValue | undefined): string[] {
  const items = Array.isArray(value) ? value : [value];
  return items.flatMap((v) => (typeof v === 'string' ? v.split(/\s+/).filter(Boolean) : []));
}

/** The Date header as ISO 8601, or null when missing or unparseable (mailparser would say "now"). */
export function headerDate(lines: HeaderLines | false): string | null {
  const line = lines ? lines.find((l) => l.key === 'date')?.line : undefined;
  if (!line) return null;
  const value = line.slice(line.indexOf(':') + 1).replace(/\r?\n[ \t]/g, ' ').trim();
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

/** Rough text of an HTML body, good enough for a snippet (the full HTML is kept as a blob). */
export function htmlToSnippetText(html: string): string {
  return html
    .slice(0, 100_000)
    .replace(/<(script|style|head)\b[\s\S]*?<\/\1\s*>/gi, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
      if (e[0] === '#') {
        const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
        return code > 0 && code < 0x110000 ? String.fromCodePoint(code) : ' ';
      }
      return ENTITIES[e.toLowerCase()] ?? m;
    });
}

export function snippetOf(text: string | undefined, html: string | undefined): string {
  // An HTML-only message may come with an empty text part: the snippet then comes from the HTML.
  const source = text?.trim() ? text : html ? htmlToSnippetText(html) : '';
  return source.slice(0, SNIPPET_LENGTH * 4).replace(/\s+/g, ' ').trim().slice(0, SNIPPET_LENGTH);
}

/** The header fields (as mailparser names them) that summarize and headerBcc read; the Date comes from the raw lines. */
export const SUMMARY_FIELDS: ReadonlySet<string> = new Set(['message-id', 'subject', 'from', 'to', 'cc', 'in-reply-to', 'references', 'bcc']);

export function summarize(headers: Headers, lines: HeaderLines | false, text: { text?: string; html?: string }): SummaryFields {
  return {
    messageId: stringHeader(headers.get('message-id')),
    subject: stringHeader(headers.get('subject')) ?? '',
    from: addressList(headers.get('from')),
    to: addressList(headers.get('to')),
    cc: addressList(headers.get('cc')),
    date: headerDate(lines),
    inReplyTo: stringHeader(headers.get('in-reply-to')),
    references: referenceList(headers.get('references')),
    snippet: snippetOf(text.text, text.html),
  };
}

/** Bcc addresses written in the header (submissions strip the field before storing). */
export const headerBcc = (headers: Headers): Address[] => addressList(headers.get('bcc'));
