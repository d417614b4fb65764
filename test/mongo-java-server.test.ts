// Smoke test for the mongo-java-server harness (or a real MongoDB when MONGODB_URI is set).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, MongoServerError, type ChangeStreamInsertDocument, type Db } from 'mongodb';
import { startMongo, uniqueDbName, type MongoHandle } from './support/mongo-java-server.js';

interface Doc {
  _id: string;
  n: number;
}

let server: MongoHandle;
let client: MongoClient;
let db: Db;

before(async () => {
  server = await startMongo();
  client = await MongoClient.connect(server.uri, { serverSelectionTimeoutMS: 10_000 });
  db = client.db(uniqueDbName('smoke'));
});

after(async () => {
  if (db && server?.real) await db.dropDatabase().catch(() => {});
  await client?.close();
  await server?.stop();
});

test('insert and read back', async () => {
  const coll = db.collection<Doc>('docs');
  await coll.insertOne({ _id: 'a', n: 1 });
  assert.deepEqual(await coll.findOne({ _id: 'a' }), { _id: 'a', n: 1 });
});

test('collection-level change stream sees a new insert', async () => {
  const coll = db.collection<Doc>('events');
  await coll.insertOne({ _id: 'before', n: 0 });
  const stream = coll.watch<Doc, ChangeStreamInsertDocument<Doc>>([{ $match: { operationType: 'insert' } }]);
  try {
    // Start the cursor so the stream's position is fixed before the insert we want to see.
    assert.equal(await stream.tryNext(), null);
    await coll.insertOne({ _id: 'after', n: 1 });

    // mongo-java-server ignores maxAwaitTimeMS, so poll with tryNext() and sleep between polls.
    let change: ChangeStreamInsertDocument<Doc> | null = null;
    const deadline = Date.now() + 10_000;
    while (!change && Date.now() < deadline) {
      change = await stream.tryNext();
      if (!change) await sleep(50);
    }
    assert.ok(change, 'no change event within 10 s');
    assert.equal(change.operationType, 'insert');
    assert.deepEqual(change.documentKey, { _id: 'after' });
    assert.deepEqual(change.fullDocument, { _id: 'after', n: 1 });
  } finally {
    await stream.close();
  }
});

test('unique index violation has code 11000', async () => {
  const coll = db.collection<{ streamId: string; version: number }>('streams');
  await coll.createIndex({ streamId: 1, version: 1 }, { unique: true });
  await coll.insertOne({ streamId: 's1', version: 1 });
  await assert.rejects(coll.insertOne({ streamId: 's1', version: 1 }), (err: unknown) => {
    assert.ok(err instanceof MongoServerError);
    assert.equal(err.code, 11000);
    return true;
  });
});
