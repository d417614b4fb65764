import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import type { Store } from '../port.js';
import { BLOBS_SCHEMA, ensureInlineBlobs, fsyncDir } from './blob-store.js';
import { EVENTS_SCHEMA } from './event-store.js';
import { openDatabase } from './database.js';
import { openLog } from './log.js';
import { LogWriter, WriterBlobStore, WriterEventStore } from './log-writer.js';
import { SqliteViewStore, VIEWS_SCHEMA } from './view-store.js';

export interface SqliteOptions {
  dataDir: string;
  /**
   * FULL (default): nothing is acknowledged before it is fsync'd. NORMAL: no fsync before the
   * acknowledgement; a process crash loses nothing, a power loss may lose the last commits.
   */
  synchronous?: 'FULL' | 'NORMAL';
  /** How often a waiting reader looks for appends made by other processes. */
  pollIntervalMs?: number;
  /**
   * Appends and blob puts in a worker thread of their own (LogWriter), off the caller's event
   * loop: the server's choice. Default: in the caller's thread (scripts, tests of the store).
   */
  writerThread?: boolean;
  /** With writerThread: told once if the thread dies (every later write fails; restart the process). */
  onWriterFailure?: (error: Error) => void;
}

/** Files of the embedded store in DATA_DIR: the log (with the blob index) and the views. */
export const LOG_FILE = 'mailtrail.db';
export const VIEWS_FILE = 'views.db';
/** A restore unpacks into a folder named so inside DATA_DIR while it runs (blobs:gc will not start then). */
export const RESTORE_STAGING_PREFIX = '.restore-';

/**
 * The embedded store: `<dataDir>/mailtrail.db` (the log and the blob index, WAL),
 * `<dataDir>/views.db` (views, checkpoints, leases) and blob packs in `<dataDir>/blobs/`. The views
 * have a file of their own so that projector commits and log appends never wait for each other,
 * and appends from other processes (SMTP workers) do not throw away the projectors' page cache.
 */
export async function openSqliteStore(opts: SqliteOptions): Promise<Store> {
  mkdirSync(opts.dataDir, { recursive: true });
  const file = path.join(opts.dataDir, LOG_FILE);
  const db = openDatabase(file);
  db.exec(EVENTS_SCHEMA + BLOBS_SCHEMA);
  ensureInlineBlobs(db);
  dropLegacyViews(db);
  const viewsDb = openDatabase(path.join(opts.dataDir, VIEWS_FILE));
  viewsDb.exec(VIEWS_SCHEMA);
  // The WAL files exist now; make their directory entries durable once.
  await fsyncDir(opts.dataDir);
  const durable = (opts.synchronous ?? 'FULL') === 'FULL';
  const blobsDir = path.join(opts.dataDir, 'blobs');
  // With a writer thread this connection only reads: nothing of its own to fsync.
  const log = await openLog(db, { file, blobsDir, durable: durable && !opts.writerThread, pollIntervalMs: opts.pollIntervalMs ?? 250 });
  const { events, blobs } = log;
  let writer: LogWriter | null = null;
  try {
    if (opts.writerThread) writer = await LogWriter.start({ file, blobsDir, durable }, opts.onWriterFailure);
  } catch (error) {
    db.close();
    viewsDb.close();
    throw error;
  }
  return {
    kind: 'sqlite',
    events: writer ? new WriterEventStore(events, writer) : events,
    blobs: writer ? new WriterBlobStore(blobs, writer) : blobs,
    views: new SqliteViewStore(viewsDb),
    async close() {
      await writer?.close();
      await log.close();
      db.close();
      viewsDb.close();
    },
  };
}

/**
 * Views, checkpoints and leases lived in the log's file before they moved to views.db. They are
 * dropped from it (a restored old backup has them too); the projectors rebuild the views from the
 * log into views.db.
 */
export function dropLegacyViews(db: Database.Database): void {
  const legacy = db
    .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE 'view\\_%' ESCAPE '\\' OR name IN ('checkpoints', 'leases'))")
    .all();
  if (legacy.length === 0) return;
  db.transaction(() => {
    for (const { name } of legacy) db.exec(`DROP TABLE "${name.replaceAll('"', '""')}"`);
  }).immediate();
}
