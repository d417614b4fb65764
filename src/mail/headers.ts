/**
 * Pure functions over a message's raw header section (the bytes up to and including the blank
 * line). Used to fix up submissions (add Message-ID / Date, drop Bcc) without parsing the body.
 */

/** Largest header section we hold back to rewrite; mailparser refuses larger ones anyway. */
export const MAX_HEADER_SECTION = 1024 * 1024;

/**
 * Index just past the blank line that ends the header section (CRLF or bare LF line endings),
 * or -1 when `buf` does not contain it yet. A message that starts with a blank line has no headers.
 */
export function headerSectionEnd(buf: Buffer, from = 0): number {
  if (from === 0) {
    if (buf[0] === 0x0a) return 1;
    if (buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  }
  let i = buf.indexOf(0x0a, Math.max(0, from));
  while (i !== -1) {
    if (buf[i + 1] === 0x0a) return i + 2;
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i + 3;
    i = buf.indexOf(0x0a, i + 1);
  }
  return -1;
}

/**
 * True when a message starts with its body: its first line is neither a header field
 * (`name:`, blanks before the colon allowed) nor the blank line of an empty header section.
 * Without a blank line put in front, its first lines would be read as (broken) header fields.
 */
export function startsWithBody(start: Buffer): boolean {
  if (start.length === 0 || start[0] === 0x0d || start[0] === 0x0a) return false;
  return !/^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(start.subarray(0, 1000).toString('latin1'));
}

export interface HeaderField {
  /** Lower-case field name ('' for a line that is not a field, e.g. the final blank line). */
  name: string;
  /** The field's bytes (latin1), folded continuation lines and line endings included. */
  text: string;
}

/**
 * A header section split into its fields. The questions below take it split or as bytes: a caller
 * asking several of them splits the section once (a real message's section has dozens of lines).
 */
export function headerFields(head: Buffer): HeaderField[] {
  const text = head.toString('latin1');
  const out: HeaderField[] = [];
  let last: HeaderField | undefined;
  for (let from = 0; from < text.length; ) {
    const lf = text.indexOf('\n', from);
    const end = lf === -1 ? text.length : lf + 1;
    const line = text.slice(from, end);
    from = end;
    const first = line.charCodeAt(0);
    if ((first === 0x20 || first === 0x09) && last?.name) {
      last.text += line;
      continue;
    }
    const colon = line.indexOf(':');
    // Blanks before the colon are the obsolete syntax of RFC 5322 4.5; readers still take it as the field.
    const given = colon > 0 ? line.slice(0, colon).replace(/[ \t]+$/, '') : '';
    last = { name: given && !/\s/.test(given) ? given.toLowerCase() : '', text: line };
    out.push(last);
  }
  return out;
}

const split = (head: Buffer | HeaderField[]): HeaderField[] => (Buffer.isBuffer(head) ? headerFields(head) : head);

/** The unfolded value of the first field called `name` (lower case), or null. */
export function headerField(head: Buffer | HeaderField[], name: string): string | null {
  const f = split(head).find((x) => x.name === name);
  return f ? f.text.slice(f.text.indexOf(':') + 1).replace(/\r?\n/g, '').trim() : null;
}

/** How many fields called `name` (lower case) the section has. */
export function headerFieldCount(head: Buffer | HeaderField[], name: string): number {
  return split(head).filter((f) => f.name === name).length;
}

/**
 * True when the message is one plain-text part that mailparser would only decode as UTF-8 with
 * CRLF turned into LF: no Content-Type or `text/plain` with at most a UTF-8/ASCII charset, no
 * transfer encoding beyond 7bit/8bit/binary, no Content-Disposition, nothing unusual (comments,
 * encoded words, format=flowed, repeated fields). Anything else gets the full MIME parse.
 */
export function isSimpleTextMessage(head: Buffer | HeaderField[]): boolean {
  const fields = split(head);
  const names = headerNames(fields);
  for (const n of ['content-type', 'content-transfer-encoding', 'content-disposition']) {
    if (names.has(n) && headerFieldCount(fields, n) > 1) return false;
  }
  if (names.has('content-disposition')) return false;
  const cte = headerField(fields, 'content-transfer-encoding');
  if (cte !== null && !['7bit', '8bit', 'binary'].includes(cte.toLowerCase())) return false;
  const ct = headerField(fields, 'content-type');
  if (ct === null) return true;
  if (/[()"\\]|=\?/.test(ct.replace(/charset\s*=\s*"[^"]*"/i, ''))) return false;
  const [type, ...params] = ct.split(';').map((p) => p.trim()).filter(Boolean);
  if (type?.toLowerCase() !== 'text/plain') return false;
  return params.every((p) => {
    const m = /^charset\s*=\s*"?([^"]*)"?$/i.exec(p);
    return m !== null && ['utf-8', 'utf8', 'us-ascii', 'ascii'].includes(m[1]!.trim().toLowerCase());
  });
}

/** Lower-case names of the fields in a header section. */
export function headerNames(head: Buffer | HeaderField[]): Set<string> {
  return new Set(split(head).map((f) => f.name));
}

export interface HeaderFacts {
  hasMessageId: boolean;
  hasDate: boolean;
  hasBcc: boolean;
  hasFrom: boolean;
  fromFields: number;
}

export function headerFacts(head: Buffer | HeaderField[]): HeaderFacts {
  const fields = split(head);
  const names = headerNames(fields);
  return {
    hasMessageId: names.has('message-id'),
    hasDate: names.has('date'),
    hasBcc: names.has('bcc'),
    hasFrom: names.has('from'),
    fromFields: headerFieldCount(fields, 'from'),
  };
}

/** CRLF unless the section uses bare LF line endings. */
function lineEnding(head: Buffer): '\r\n' | '\n' {
  const firstLf = head.indexOf(0x0a);
  return firstLf > 0 && head[firstLf - 1] !== 0x0d ? '\n' : '\r\n';
}

/**
 * The header section with `prepend` fields added on top and Bcc fields removed. A prepended field
 * has no line ending; "\n" inside it folds it and becomes the section's own line ending.
 */
export function rewriteHeaderSection(head: Buffer, change: { prepend: string[]; dropBcc: boolean }): Buffer {
  const eol = lineEnding(head);
  const added = Buffer.from(change.prepend.map((l) => `${l.replaceAll('\n', eol)}${eol}`).join(''), 'latin1');
  // A message without any header section still needs the blank line that ends the new one.
  if (head.length === 0) return Buffer.concat([added, Buffer.from(eol)]);
  if (!change.dropBcc) return Buffer.concat([added, head]);
  const kept = headerFields(head)
    .filter((f) => f.name !== 'bcc')
    .map((f) => f.text)
    .join('');
  return Buffer.concat([added, Buffer.from(kept, 'latin1')]);
}

/** RFC 5322 date-time for a Date header. */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/** The whole message with `fields` on top of its header section, in the message's own line ending. */
export function prependFields(message: Buffer, fields: string[]): Buffer {
  if (fields.length === 0) return message;
  const end = headerSectionEnd(message);
  if (end < 0) return rewriteHeaderSection(message, { prepend: fields, dropBcc: false });
  return Buffer.concat([rewriteHeaderSection(message.subarray(0, end), { prepend: fields, dropBcc: false }), message.subarray(end)]);
}
