import Database from 'better-sqlite3';

export class StoreInUseError extends Error {
  constructor(file: string) {
    super(`${file} is in use by another process (a running mailtrail?); stop it first (systemctl stop mailtrail), and any backup or other command, then run this again`);
    this.name = 'StoreInUseError';
  }
}

/**
 * Opens `file` for this connection alone, in SQLite's exclusive locking mode: refused while any
 * other connection has it open, even an idle one, and keeping every other one out until closed.
 */
export function openAlone(file: string): Database.Database {
  const db = new Database(file, { fileMustExist: true, timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // The lock is taken here and, in exclusive locking mode, kept after the transaction.
    db.exec('BEGIN EXCLUSIVE; COMMIT');
    return db;
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new StoreInUseError(file);
    throw error;
  }
}

/** Opens one of the embedded store's files with the settings every connection to it shares. */
export function openDatabase(file: string): Database.Database {
  const db = new Database(file);
  // Takes effect only on a new file. A mail's view row or received event (~1.3 KB) fits twice in a
  // 4 KB page with a third of it left empty; 16 KB pages hold eleven: a third less to write and
  // read, and fewer pages to split.
  db.pragma('page_size = 16384');
  db.pragma('journal_mode = WAL');
  // SQLite itself does not fsync on commit; for FULL the stores fsync the log's WAL and the blob
  // packs off the event loop, shared by every commit in flight (see GroupSync). Views need no
  // fsync: they are rebuilt from the log, and a view row commits with its checkpoint, so a view
  // that lost its last commits in a power cut just applies those events again.
  db.pragma('synchronous = NORMAL');
  // Other processes (replay, audit, SMTP workers, a second server) may hold the write lock briefly.
  db.pragma('busy_timeout = 10000');
  // Reads through a memory map of the file (up to SQLite's compiled limit, 2 GiB) instead of a
  // read() per page: a replay reading the whole log spends far less time in the kernel. The map
  // shares the OS page cache; it is not extra memory.
  db.pragma('mmap_size = 2147418112');
  return db;
}
