import type Database from 'better-sqlite3';
import { PackBlobStore } from './blob-store.js';
import { SqliteEventStore } from './event-store.js';
import { GroupSync } from './group-sync.js';

export interface Log {
  events: SqliteEventStore;
  blobs: PackBlobStore;
  /** Writes what is queued and staged (the last blob index rows go with the last batch), makes it durable. */
  close(): Promise<void>;
}

/**
 * The log's file on one connection: its events and its blobs, whose index rows commit with the
 * appends. `durable`: fsync the WAL and the packs before a write is answered (SQLITE_SYNCHRONOUS=FULL).
 * Used by the caller's thread (reads, and writes where there is no writer thread) and by the log
 * writer thread.
 */
export async function openLog(db: Database.Database, opts: { file: string; blobsDir: string; durable: boolean; pollIntervalMs: number }): Promise<Log> {
  const walSync = opts.durable ? new GroupSync(`${opts.file}-wal`) : null;
  const events = new SqliteEventStore(db, opts.pollIntervalMs, walSync);
  const blobs = new PackBlobStore(opts.blobsDir, db, opts.durable, events);
  await blobs.init();
  return {
    events,
    blobs,
    async close() {
      await blobs.close();
      // After the blobs: their last index rows are written with the last batch.
      await events.drain();
      await walSync?.close();
    },
  };
}
