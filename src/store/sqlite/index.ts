import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Store } from '../port.js';
import { BLOBS_SCHEMA, fsyncDir, PackBlobStore } from './blob-store.js';
import { EVENTS_SCHEMA, SqliteEventStore } from './event-store.js';
import { GroupSync } from './group-sync.js';
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
}

/** The embedded store: `<dataDir>/mailtrail.db` (WAL) and blob packs in `<dataDir>/blobs/`. */
export async function openSqliteStore(opts: SqliteOptions): Promise<Store> {
  mkdirSync(opts.dataDir, { recursive: true });
  const file = path.join(opts.dataDir, 'mailtrail.db');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  // SQLite itself does not fsync on commit; for FULL the stores fsync the WAL and the blob packs
  // off the event loop, shared by every commit in flight (see GroupSync). Checkpoints still sync.
  db.pragma('synchronous = NORMAL');
  // Other processes (replay, audit, a second server) may hold the write lock briefly.
  db.pragma('busy_timeout = 10000');
  db.exec(EVENTS_SCHEMA + VIEWS_SCHEMA + BLOBS_SCHEMA);
  // The WAL file exists now; make its directory entry durable once.
  await fsyncDir(opts.dataDir);
  const durable = (opts.synchronous ?? 'FULL') === 'FULL';
  const walSync = durable ? new GroupSync(`${file}-wal`) : null;
  const events = new SqliteEventStore(db, opts.pollIntervalMs ?? 250, walSync);
  const blobs = new PackBlobStore(path.join(opts.dataDir, 'blobs'), db, durable);
  await blobs.init();
  return {
    kind: 'sqlite',
    events,
    blobs,
    views: new SqliteViewStore(db),
    async close() {
      await events.drain();
      await blobs.close();
      await walSync?.close();
      db.close();
    },
  };
}
