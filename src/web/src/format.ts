/** Formatting and parsing helpers of the web client (no API calls). */

export interface Address {
  name: string;
  address: string;
}

export const displayAddress = (a: Address): string => (a.name ? `${a.name} <${a.address}>` : a.address);
export const shortAddress = (a: Address | undefined): string => (a ? a.name || a.address : '');
export const addressList = (list: Address[]): string => list.map(displayAddress).join(', ');

const PLAIN = /^[^\s@<>(),;:"[\]\\]+@[^\s@<>(),;:"[\]\\]+$/;

/** Splits "Ann <ann@x.org>, bob@y.org" into addresses; what is not an address comes back in `invalid`. */
export function parseAddresses(input: string): { valid: Address[]; invalid: string[] } {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  let angle = false;
  for (const ch of input) {
    if (ch === '"') quoted = !quoted;
    if (!quoted && ch === '<') angle = true;
    if (!quoted && ch === '>') angle = false;
    if (!quoted && !angle && (ch === ',' || ch === ';' || ch === '\n')) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  parts.push(current);
  const valid: Address[] = [];
  const invalid: string[] = [];
  for (const raw of parts.map((p) => p.trim()).filter(Boolean)) {
    const m = /^(.*)<([^<>]+)>$/.exec(raw);
    const address = (m ? m[2]! : raw).trim();
    const name = m ? m[1]!.trim().replace(/^"|"$/g, '').trim() : '';
    if (PLAIN.test(address) && address.length <= 254) valid.push({ name: name.slice(0, 200), address });
    else invalid.push(raw);
  }
  return { valid, invalid };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

/** Today: the time; this year: day and month; else the full date. */
export function formatListDate(iso: string, now = new Date()): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (d.getFullYear() === now.getFullYear()) return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
  return d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

export function formatFullDate(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** "Re: x" once, whatever prefixes the subject had. */
export function prefixSubject(prefix: 'Re' | 'Fwd', subject: string): string {
  const re = prefix === 'Re' ? /^\s*(re|aw|sv)\s*:\s*/i : /^\s*(fwd?|wg)\s*:\s*/i;
  return re.test(subject) ? subject : `${prefix}: ${subject}`;
}

export const quote = (text: string): string =>
  text
    .replace(/\r\n/g, '\n')
    .split('\n')
    .map((l) => (l.startsWith('>') ? `>${l}` : `> ${l}`))
    .join('\n');

export const bracketId = (id: string): string => (id.startsWith('<') ? id : `<${id}>`);

/** Base64 of a file's bytes, for createDraft's attachments. */
export async function fileToBase64(blob: Blob): Promise<string> {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
