import path from 'node:path';
import Database from 'better-sqlite3';

/** The file in DATA_DIR that a running server holds locked. */
export const SERVER_LOCK_FILE = 'server.lock';

export class DataDirInUseError extends Error {
  constructor(readonly dataDir: string) {
    super(`DATA_DIR=${dataDir} is in use by another mailtrail server; stop it first (systemctl stop mailtrail), or give this one a DATA_DIR of its own`);
    this.name = 'DataDirInUseError';
  }
}

/**
 * One server per data folder: the server holds an exclusive lock on DATA_DIR/server.lock for as
 * long as it runs, and a second one is refused at start. It is SQLite's lock, that is the
 * kernel's (fcntl), so it goes with the process however that ends - kill -9 included - and a
 * lock left by a crash never keeps a restart out. SMTP workers, replay, audit, backup and the
 * other commands open the store without it: they may run beside the server.
 */
export function lockDataDir(dataDir: string): { release(): void } {
  const db = new Database(path.join(dataDir, SERVER_LOCK_FILE), { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // Held until the connection closes (EXCLUSIVE locking mode keeps it past the transaction).
    db.exec('BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS server (started_at TEXT); COMMIT');
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new DataDirInUseError(dataDir);
    throw error;
  }
  return { release: () => db.close() };
}
