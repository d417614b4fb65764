import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type { MailboxDoc } from '../../projections/mailboxes.js';
import type { MailDoc } from '../../projections/mails.js';
import type { Store } from '../store/port.js';
import { requireOutputFolder } from './paths.js';

/**
 * A mailbox's mails as raw MIME, the bytes mailtrail received or sent, for leaving or migrating:
 * one mbox file, or one .eml file per mail in a folder. Drafts have no MIME until they are sent
 * and are left out.
 */

export type ExportFormat = 'mbox' | 'eml';

export interface ExportResult {
  mails: number;
  drafts: number;
  bytes: number;
}

const PAGE = 500;

/** The mailbox's mails in the order they entered their folders, oldest first. */
async function* mailsOf(store: Store, mailboxId: string): AsyncGenerator<MailDoc> {
  let after: { value: string; id: string } | undefined;
  for (;;) {
    const page = (await store.views.list('mails', {
      where: { mailboxId },
      orderBy: { field: 'sortAt', direction: 'asc' },
      limit: PAGE,
      ...(after ? { after } : {}),
    })) as MailDoc[];
    yield* page;
    if (page.length < PAGE) return;
    const last = page.at(-1)!;
    after = { value: last.sortAt, id: last.id };
  }
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** The `From ` separator line: sender and asctime() date in UTC, e.g. `From a@b.org Mon Nov  3 09:05:01 2025`. */
export function mboxFromLine(sender: string, date: Date): string {
  const pad = (n: number): string => String(n).padStart(2, '0');
  const time = `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`;
  const when = `${DAYS[date.getUTCDay()]} ${MONTHS[date.getUTCMonth()]} ${String(date.getUTCDate()).padStart(2)} ${time} ${date.getUTCFullYear()}`;
  return `From ${sender.replace(/\s/g, '_') || 'MAILER-DAEMON'} ${when}\n`;
}

/**
 * One message in mboxrd form: LF line ends, and every line that starts with any number of `>`
 * followed by `From ` gets one more `>`, so a reader can undo it exactly and no line of the
 * message can pass for a separator. Worked on as latin1 so that any byte passes through unchanged.
 */
export function mboxrdMessage(raw: Buffer): Buffer {
  let text = raw.toString('latin1').replace(/\r\n/g, '\n').replace(/^(>*From )/gm, '>$1');
  if (!text.endsWith('\n')) text += '\n';
  // The blank line that ends every message in an mbox.
  return Buffer.from(`${text}\n`, 'latin1');
}

async function rawOf(store: Store, mail: MailDoc): Promise<Buffer> {
  const raw = mail.raw!;
  const bytes = await store.blobs.get(raw.sha256);
  if (createHash('sha256').update(bytes).digest('hex') !== raw.sha256) {
    throw new Error(`the stored message of mail ${mail.id} is damaged (sha256 mismatch); restore the data from a backup (npm run restore) and export again`);
  }
  return bytes;
}

/**
 * Writes the mailbox's mails to `out`: an mbox file, or a folder of .eml files; `out` must not
 * exist (an empty folder is fine for eml). Written under `<out>.partial` and renamed when
 * complete, so a failed export leaves nothing half-written behind. `onProgress` counts mails
 * against the mailbox's folder counts.
 */
export async function exportMailbox(
  store: Store,
  mailbox: MailboxDoc,
  format: ExportFormat,
  out: string,
  onProgress?: (done: number, total: number) => void,
): Promise<ExportResult> {
  const isEmptyDir = format === 'eml' && existsSync(out) && statSync(out).isDirectory() && readdirSync(out).length === 0;
  if (existsSync(out) && !isEmptyDir) throw new Error(`${out} exists; give --out a new ${format === 'mbox' ? 'file' : 'folder'} name (an export never overwrites)`);
  requireOutputFolder(out);
  const partial = `${out}.partial`;
  await rm(partial, { recursive: true, force: true });
  const total = mailbox.counts.inbox + mailbox.counts.sent;
  const result: ExportResult = { mails: 0, drafts: 0, bytes: 0 };
  // Owner-only: it is someone's mail.
  const mbox = format === 'mbox' ? createWriteStream(partial, { flags: 'wx', mode: 0o600 }) : null;
  if (!mbox) await mkdir(partial, { mode: 0o700 });
  try {
    for await (const mail of mailsOf(store, mailbox.id)) {
      if (!mail.raw) {
        result.drafts++;
        continue;
      }
      const raw = await rawOf(store, mail);
      result.mails++;
      if (mbox) {
        const sender = mail.folder === 'sent' ? mailbox.address : (mail.from[0]?.address ?? '');
        const chunk = Buffer.concat([Buffer.from(mboxFromLine(sender, new Date(mail.sortAt))), mboxrdMessage(raw)]);
        result.bytes += chunk.length;
        if (!mbox.write(chunk)) await once(mbox, 'drain');
      } else {
        // Numbered in mailbox order, so a directory listing keeps it; the id makes each name unique.
        await writeFile(path.join(partial, `${String(result.mails).padStart(6, '0')}-${mail.folder}-${mail.id}.eml`), raw, { flag: 'wx', mode: 0o600 });
        result.bytes += raw.length;
      }
      onProgress?.(result.mails, Math.max(total, result.mails));
    }
    if (mbox) await finished(mbox.end());
    await rename(partial, out);
    return result;
  } catch (error) {
    mbox?.destroy();
    await rm(partial, { recursive: true, force: true });
    throw error;
  }
}
