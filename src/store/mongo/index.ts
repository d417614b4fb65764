import { MongoClient } from 'mongodb';
import type { Store } from '../port.js';
import { MongoBlobStore } from './blob-store.js';
import { MongoEventStore } from './event-store.js';
import { MongoViewStore } from './view-store.js';

export interface MongoOptions {
  uri: string;
  /** Default `mailtrail`. */
  dbName?: string;
  /** How long a hole in the log may stay open before readers seal it (its writer is presumed gone). */
  gapTimeoutMs?: number;
  /** Idle sleep between change-stream polls (or head polls where there is no change stream). */
  pollIntervalMs?: number;
}

/**
 * The MongoDB store. Uses no transactions or sessions (mongo-java-server, which the tests use, has
 * none); several processes may share one database. Needs a replica set for change streams, else it
 * polls.
 */
export async function openMongoStore(opts: MongoOptions): Promise<Store> {
  const client = new MongoClient(opts.uri, {
    // An acknowledged append survives a failover, and readers only see what cannot be rolled back.
    writeConcern: { w: 'majority' },
    readConcern: { level: 'majority' },
    useBigInt64: false,
    // Like JSON (and the SQLite store): undefined fields are left out, not stored as null.
    ignoreUndefined: true,
  });
  await client.connect();
  try {
    const db = client.db(opts.dbName ?? 'mailtrail');
    const events = await MongoEventStore.open(db, { gapTimeoutMs: opts.gapTimeoutMs ?? 3000, pollIntervalMs: opts.pollIntervalMs ?? 100 });
    const blobs = await MongoBlobStore.open(db);
    return {
      kind: 'mongo',
      events,
      blobs,
      views: new MongoViewStore(db),
      async close() {
        await events.close();
        await client.close();
      },
    };
  } catch (err) {
    await client.close();
    throw err;
  }
}
