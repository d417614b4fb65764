import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Store } from '../port.js';
import { FileBlobStore } from './blob-store.js';
import { EVENTS_SCHEMA, SqliteEventStore } from './event-store.js';
import { SqliteViewStore, VIEWS_SCHEMA } from './view-store.js';

export interface SqliteOptions {
  dataDir: string;
  /** FULL (default) fsyncs the WAL on every commit; NORMAL may lose the last commits on power loss. */
  synchronous?: 'FULL' | 'NORMAL';
  /** How often a waiting reader looks for appends made by other processes. */
  pollIntervalMs?: number;
}

/** The embedded store: `<dataDir>/mailtrail.db` (WAL) and `<dataDir>/blobs/`. */
export async function openSqliteStore(opts: SqliteOptions): Promise<Store> {
  mkdirSync(opts.dataDir, { recursive: true });
  const db = new Database(path.join(opts.dataDir, 'mailtrail.db'));
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`);
  // Other processes (replay, audit, a second server) may hold the write lock briefly.
  db.pragma('busy_timeout = 10000');
  db.exec(EVENTS_SCHEMA + VIEWS_SCHEMA);
  const blobs = new FileBlobStore(path.join(opts.dataDir, 'blobs'));
  await blobs.init();
  return {
    kind: 'sqlite',
    events: new SqliteEventStore(db, opts.pollIntervalMs ?? 250),
    blobs,
    views: new SqliteViewStore(db),
    async close() {
      db.close();
    },
  };
}
