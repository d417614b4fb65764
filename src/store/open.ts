import type { Config } from '../config.js';
import type { Store } from './port.js';
import { openSqliteStore } from './sqlite/index.js';

/**
 * MongoDB when MONGODB_URI is set, else the embedded store in DATA_DIR. The driver is loaded only
 * when used. `writerThread`: the embedded store writes in a thread of its own (the server does);
 * `onWriterFailure` is told if that thread dies.
 */
export async function openStore(config: Config, opts: { writerThread?: boolean; onWriterFailure?: (error: Error) => void } = {}): Promise<Store> {
  if (config.MONGODB_URI) {
    const { openMongoStore } = await import('./mongo/index.js');
    return openMongoStore({ uri: config.MONGODB_URI, dbName: config.MONGODB_DB });
  }
  return openSqliteStore({ dataDir: config.DATA_DIR, synchronous: config.SQLITE_SYNCHRONOUS, ...opts });
}
