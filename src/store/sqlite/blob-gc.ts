import { closeSync, fsyncSync, ftruncateSync, openSync, readdirSync, readSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { decodeStored, type EventOf } from '../../events/envelope.js';
import { planLocalCopies } from '../../mail/commands.js';
import { outboxFromStream } from '../../../projections/outbox.js';
import { PACK_LIMIT, PACK_NAME, packFileName } from './blob-store.js';
import { openAlone } from './database.js';
import { LOG_FILE, RESTORE_STAGING_PREFIX } from './index.js';

/**
 * Reclaims the blobs of mail deleted for good (`npm run blobs:gc`): the raw message, bodies and
 * attachments that only deleted mails and drafts name. Blobs are shared by content, so a blob that
 * any other mail or draft names stays; so do the blobs of a deleted sent mail the relay has still
 * to deliver or whose local copies are not stored yet, and blobs no event names at all (an upload not yet in a draft). The events stay:
 * they are the audit trail, and their summaries (subject, addresses, snippet) are not blobs.
 *
 * It runs alone: the log's file is opened in SQLite's exclusive locking mode, refused while any
 * other connection is open (the server, its SMTP workers, a backup, another command) and keeping
 * every other one out until it ends. So no put can find a blob in the index that is about to go,
 * no pack is read while it is rewritten, and locations can change. Freed index rows are zeroed
 * (secure_delete); packs that held freed blobs are copied without them, then deleted (the
 * highest emptied instead, so that its number is never used again).
 */

export interface BlobGcOptions {
  /** Report what would be freed; change nothing. */
  dryRun?: boolean;
  /** VACUUM the log's file afterwards, returning free pages to the file system (needs room for a copy of it). */
  vacuum?: boolean;
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface BlobGcResult {
  /** Mails and drafts deleted for good. */
  deletedMails: number;
  /** Deleted sent mails whose blobs stay: the relay has not finished with them, or their local copies are not stored yet. */
  pendingDeliveries: number;
  blobs: number;
  inlineBytes: number;
  packBytes: number;
  /** Pack files before and after, with their total size. */
  packsBefore: { files: number; bytes: number };
  packsAfter: { files: number; bytes: number };
  /** Free pages in the log's file afterwards (reused by new mail; VACUUM gives them back). */
  freeBytes: number;
  dryRun: boolean;
}

/** How an event names a blob: a BlobRef serialized by JSON.stringify, whatever the event type. */
const BLOB_REF = /"sha256":"([0-9a-f]{64})"/g;
const refsIn = (json: string): string[] => Array.from(json.matchAll(BLOB_REF), (m) => m[1]!);
/** What may be a blob's name anywhere in an event: what keeps a blob errs on the side of keeping. */
const ANY_SHA256 = /[0-9a-f]{64}/g;


interface Row {
  sha256: string;
  pack: number;
  offset: number;
  size: number;
}

export function collectBlobs(dataDir: string, opts: BlobGcOptions = {}): BlobGcResult {
  const file = path.join(dataDir, LOG_FILE);
  const blobsDir = path.join(dataDir, 'blobs');
  const progress = opts.onProgress ?? (() => undefined);
  const db = openAlone(file);
  try {
    // A restore swaps the files under us: it makes this folder first, then checks that nothing has the store open.
    const restoring = readdirSync(dataDir).find((name) => name.startsWith(RESTORE_STAGING_PREFIX));
    if (restoring) throw new Error(`a restore is running into ${dataDir} (or one was cut short: then remove ${path.join(dataDir, restoring)}); run this once it has finished`);
    db.pragma('synchronous = FULL');
    // Freed index rows (an inline blob's bytes are in its row) are overwritten, not just unlinked.
    db.pragma('secure_delete = ON');
    // Mails and drafts deleted for good, and what they name.
    const deleted = db.prepare<[], { stream_id: string }>("SELECT DISTINCT stream_id FROM events WHERE type IN ('MailDeleted', 'DraftDeleted')").all().map((r) => r.stream_id);
    type EventRow = { position: number; eventId: string; streamId: string; version: number; type: string; schemaVersion: number; data: string; meta: string; recordedAt: string };
    const streamRows = db.prepare<[string], EventRow>(
      'SELECT position, event_id AS eventId, stream_id AS streamId, version, type, schema_version AS schemaVersion, data, meta, recorded_at AS recordedAt FROM events WHERE stream_id = ? ORDER BY version',
    );
    const exists = db.prepare<[string], { found: number }>('SELECT 1 AS found FROM events WHERE stream_id = ? LIMIT 1');
    const dead = new Set<string>();
    const candidates = new Set<string>();
    let pendingDeliveries = 0;
    deleted.forEach((stream, i) => {
      progress('deleted mails', i + 1, deleted.length);
      const rows = streamRows.all(stream);
      if (rows.some((r) => r.type === 'MailSent')) {
        const events = rows.map((r) => decodeStored({ ...r, data: JSON.parse(r.data), meta: JSON.parse(r.meta) }));
        const sent = events.find((e): e is EventOf<'MailSent'> => e.type === 'MailSent')!;
        // Still to be delivered: by the relay, or to local recipients whose copies a crash left
        // out (the local delivery follower stores them from this send's blobs).
        const copiesMissing = planLocalCopies(sent.data).some((copy) => exists.get(copy.streamId) === undefined);
        if (outboxFromStream(events)?.status === 'pending' || copiesMissing) {
          pendingDeliveries += 1;
          return;
        }
      }
      dead.add(stream);
      for (const r of rows) for (const sha of refsIn(r.data)) candidates.add(sha);
    });

    // Anything else that names one of them keeps it.
    const total = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM events').get()!.n;
    let scanned = 0;
    for (const r of db.prepare<[], { stream_id: string; data: string }>('SELECT stream_id, data FROM events').iterate()) {
      if (++scanned % 10_000 === 0) progress('log', scanned, total);
      if (candidates.size === 0) break;
      if (dead.has(r.stream_id)) continue;
      for (const [sha] of r.data.matchAll(ANY_SHA256)) candidates.delete(sha);
    }
    progress('log', total, total);

    const find = db.prepare<[string], Row>('SELECT sha256, pack, offset, size FROM blobs WHERE sha256 = ?');
    const freed = [...candidates].map((sha) => find.get(sha)).filter((r): r is Row => r !== undefined);
    const packsBefore = packFiles(blobsDir);
    const result: BlobGcResult = {
      deletedMails: dead.size,
      pendingDeliveries,
      blobs: freed.length,
      inlineBytes: freed.filter((r) => r.pack === 0).reduce((n, r) => n + r.size, 0),
      packBytes: freed.filter((r) => r.pack !== 0).reduce((n, r) => n + r.size, 0),
      packsBefore: summarize(packsBefore),
      packsAfter: summarize(packsBefore),
      freeBytes: 0,
      dryRun: opts.dryRun === true,
    };
    if (opts.dryRun) {
      result.freeBytes = freeBytes(db);
      return result;
    }

    // The packs that held freed blobs are copied without them into new packs (made durable before
    // the index points at them), the index changes in one transaction, and only then do the old
    // packs go. A crash in between leaves either the old packs in use and new ones no row names,
    // or the other way round; either leftover is deleted by the next run.
    const freedShas = new Set(freed.map((r) => r.sha256));
    const rewrite = [...new Set(freed.filter((r) => r.pack !== 0).map((r) => r.pack))].sort((a, b) => a - b);
    const inPack = db.prepare<[number], Row>('SELECT sha256, pack, offset, size FROM blobs WHERE pack = ? ORDER BY offset');
    const keep = rewrite.flatMap((p) => inPack.all(p).filter((r) => !freedShas.has(r.sha256)));
    const moved = copyIntoNewPacks(blobsDir, keep, packsBefore, (done) => progress('packs', done, keep.length));
    const remove = db.prepare('DELETE FROM blobs WHERE sha256 = ?');
    const relocate = db.prepare('UPDATE blobs SET pack = ?, offset = ? WHERE sha256 = ?');
    db.transaction(() => {
      for (const r of freed) remove.run(r.sha256);
      for (const m of moved) relocate.run(m.pack, m.offset, m.sha256);
    })();
    // Packs no row names any more: the rewritten ones, and leftovers of an earlier run or a crash.
    // The highest is emptied rather than deleted, so that its number is never used again.
    const named = new Set(db.prepare<[], { pack: number }>('SELECT DISTINCT pack FROM blobs WHERE pack > 0').all().map((r) => r.pack));
    const present = packFiles(blobsDir);
    const highest = present.reduce((n, p) => Math.max(n, p.number), 0);
    const unnamed = present.filter((p) => !named.has(p.number));
    for (const p of unnamed) {
      const packPath = path.join(blobsDir, packFileName(p.number));
      if (p.number < highest) unlinkSync(packPath);
      else if (p.bytes > 0) emptyFile(packPath);
    }
    if (unnamed.length > 0) syncDir(blobsDir);
    // Freed rows leave the WAL too (secure_delete zeroed them in the pages it now writes back).
    db.pragma('wal_checkpoint(TRUNCATE)');
    if (opts.vacuum) db.exec('VACUUM');
    result.packsAfter = summarize(packFiles(blobsDir));
    result.freeBytes = freeBytes(db);
    return result;
  } finally {
    db.close();
  }
}

function emptyFile(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    ftruncateSync(fd, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function packFiles(dir: string): { number: number; bytes: number }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names.flatMap((name) => {
    const m = PACK_NAME.exec(name);
    return m ? [{ number: Number(m[1]), bytes: statSync(path.join(dir, name)).size }] : [];
  });
}

const summarize = (packs: { bytes: number }[]): { files: number; bytes: number } => ({ files: packs.length, bytes: packs.reduce((n, p) => n + p.bytes, 0) });

const freeBytes = (db: Database.Database): number => (db.pragma('freelist_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number);

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Copies `rows` out of their packs into new ones after the highest pack there is; returns where each went. */
function copyIntoNewPacks(dir: string, rows: Row[], existing: { number: number }[], onCopied: (done: number) => void): Row[] {
  if (rows.length === 0) return [];
  let next = existing.reduce((n, p) => Math.max(n, p.number), 0) + 1;
  const moved: Row[] = [];
  const readers = new Map<number, number>();
  const written: number[] = [];
  let out = { number: 0, fd: -1, size: 0 };
  try {
    for (const row of rows) {
      if (out.fd < 0 || (out.size > 0 && out.size + row.size > PACK_LIMIT)) {
        if (out.fd >= 0) {
          fsyncSync(out.fd);
          closeSync(out.fd);
          out.fd = -1;
        }
        const number = next++;
        out = { number, fd: openSync(path.join(dir, packFileName(number)), 'wx'), size: 0 };
        written.push(number);
      }
      let fd = readers.get(row.pack);
      if (fd === undefined) readers.set(row.pack, (fd = openSync(path.join(dir, packFileName(row.pack)), 'r')));
      const bytes = Buffer.allocUnsafe(row.size);
      if (readSync(fd, bytes, 0, row.size, row.offset) !== row.size) throw new Error(`blob ${row.sha256} is truncated in pack ${row.pack}; nothing was changed`);
      for (let at = 0; at < bytes.length; ) at += writeSync(out.fd, bytes, at, bytes.length - at, out.size + at);
      moved.push({ ...row, pack: out.number, offset: out.size });
      out.size += row.size;
      onCopied(moved.length);
    }
    fsyncSync(out.fd);
  } catch (error) {
    // Nothing points at the new packs yet: they go (or the next run clears them), the old ones stay as they were.
    for (const n of written) rmSync(path.join(dir, packFileName(n)), { force: true });
    throw error;
  } finally {
    for (const fd of readers.values()) closeSync(fd);
    if (out.fd >= 0) closeSync(out.fd);
  }
  syncDir(dir);
  return moved;
}
