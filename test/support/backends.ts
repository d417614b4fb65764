/**
 * The stores as test backends: the same test body runs against the embedded SQLite store (writing
 * in the caller's thread, and through its log writer thread as the server runs it) and MongoDB
 * (mongo-java-server started by the harness, or MONGODB_URI when set).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openMongoStore } from '../../src/store/mongo/index.js';
import type { Store } from '../../src/store/port.js';
import { openSqliteStore } from '../../src/store/sqlite/index.js';
import { startMongo, uniqueDbName, type MongoHandle } from './mongo-java-server.js';

export interface Backend {
  name: 'sqlite' | 'sqlite, writer thread' | 'mongo';
  before?(): Promise<void>;
  after?(): Promise<void>;
  /** A new, empty location; `open` may be called several times (several processes on one store). */
  location(): { open(): Promise<Store>; dispose(): Promise<void> };
}

const sqliteBackend = (prefix: string, writerThread: boolean): Backend => ({
  name: writerThread ? 'sqlite, writer thread' : 'sqlite',
  location() {
    const dir = mkdtempSync(path.join(os.tmpdir(), `mailtrail-${prefix}-`));
    return { open: () => openSqliteStore({ dataDir: dir, pollIntervalMs: 50, writerThread }), dispose: async () => rmSync(dir, { recursive: true, force: true }) };
  },
});

/** Every backend; `prefix` names the temporary folders and databases. */
export function backends(prefix: string): [Backend, Backend, Backend] {
  let mongo: MongoHandle | null = null;
  return [
    sqliteBackend(prefix, false),
    sqliteBackend(`${prefix}-writer`, true),
    {
      name: 'mongo',
      async before() {
        mongo = await startMongo();
      },
      async after() {
        await mongo?.stop();
      },
      location() {
        const dbName = uniqueDbName(prefix);
        return { open: () => openMongoStore({ uri: mongo!.uri, dbName, gapTimeoutMs: 300, pollIntervalMs: 50 }), dispose: async () => {} };
      },
    },
  ];
}
