/**
 * The embedded store's files: a data folder from a release that kept the views inside
 * mailtrail.db is upgraded on open (old view tables dropped, views rebuilt into views.db).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { INLINE_MAX } from '../src/store/sqlite/blob-store.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-layout-'));
after(() => rmSync(dataDir, { recursive: true, force: true }));

test('an old data folder: view tables, checkpoints and leases leave mailtrail.db; views.db holds them from then on', async () => {
  const old = new Database(path.join(dataDir, 'mailtrail.db'));
  old.exec(`
    CREATE TABLE view_mails (id TEXT PRIMARY KEY, position INTEGER NOT NULL, doc TEXT);
    INSERT INTO view_mails VALUES ('m1', 7, '{"id":"m1"}');
    CREATE TABLE checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
    INSERT INTO checkpoints VALUES ('mails', 7);
    CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, expires_at INTEGER NOT NULL, requested_by TEXT, requested_at INTEGER);
    CREATE TABLE viewer_notes (x TEXT);`);
  old.close();

  const store = await openSqliteStore({ dataDir });
  try {
    assert.equal(await store.views.checkpoint('mails'), 0, 'the views start over, from the log');
  } finally {
    await store.close();
  }
  assert.ok(existsSync(path.join(dataDir, 'views.db')));
  const db = new Database(path.join(dataDir, 'mailtrail.db'), { readonly: true });
  const tables = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all().map((t) => t.name);
  db.close();
  assert.ok(!tables.includes('view_mails') && !tables.includes('checkpoints') && !tables.includes('leases'), tables.join(', '));
  assert.ok(tables.includes('events') && tables.includes('blobs'));
  assert.ok(tables.includes('viewer_notes'), 'only view tables are dropped (the underscore is literal)');
});

test('a new data folder: the log is made with 16 KB pages; an old views.db keeps the page size it was made with', async () => {
  const fresh = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-pages-'));
  try {
    const old = new Database(path.join(fresh, 'views.db'));
    old.pragma('page_size = 4096');
    old.exec('CREATE TABLE viewer_notes (x TEXT)');
    old.close();
    const store = await openSqliteStore({ dataDir: fresh });
    await store.close();
    const pageSize = (file: string): unknown => {
      const db = new Database(path.join(fresh, file), { readonly: true });
      try {
        return db.pragma('page_size', { simple: true });
      } finally {
        db.close();
      }
    };
    assert.equal(pageSize('mailtrail.db'), 16384);
    assert.equal(pageSize('views.db'), 4096);
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
});

test('blobs: small ones are kept in their index row (no pack written), large ones in a pack; an index from before that gets the column on open', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-inline-'));
  try {
    const large = randomBytes(INLINE_MAX + 1);
    let store = await openSqliteStore({ dataDir: dir });
    const inPack = await store.blobs.put(large);
    await store.close();
    const packs = (): string[] => readdirSync(path.join(dir, 'blobs')).filter((f) => f.startsWith('pack-'));
    assert.equal(packs().length, 1);
    // As a release before inline blobs left the index.
    const old = new Database(path.join(dir, 'mailtrail.db'));
    old.exec('ALTER TABLE blobs DROP COLUMN data');
    old.close();

    for (const writerThread of [false, true]) {
      store = await openSqliteStore({ dataDir: dir, writerThread });
      try {
        assert.ok((await store.blobs.get(inPack.sha256)).equals(large), 'a blob stored before reads as it was');
        const small = randomBytes(INLINE_MAX);
        const inRow = await store.blobs.put(small);
        assert.ok((await store.blobs.get(inRow.sha256)).equals(small));
      } finally {
        await store.close();
      }
    }
    assert.equal(packs().length, 1, 'the small blobs wrote no pack');
    const db = new Database(path.join(dir, 'mailtrail.db'), { readonly: true });
    const rows = db.prepare<[], { pack: number; bytes: number | null }>('SELECT pack, length(data) AS bytes FROM blobs ORDER BY pack').all();
    db.close();
    assert.deepEqual(rows, [{ pack: 0, bytes: INLINE_MAX }, { pack: 0, bytes: INLINE_MAX }, { pack: 1, bytes: null }]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a log transaction that fails: an inline put is refused with its error, a pack blob put before it keeps its row for the next transaction', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-inline-fail-'));
  const store = await openSqliteStore({ dataDir: dir });
  try {
    const side = new Database(path.join(dir, 'mailtrail.db'));
    side.exec("CREATE TRIGGER refuse BEFORE INSERT ON blobs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END");
    const large = randomBytes(INLINE_MAX + 1);
    const [inPack, inRow] = await Promise.allSettled([store.blobs.put(large), store.blobs.put(randomBytes(100))]);
    assert.equal(inPack.status, 'fulfilled', 'its bytes are fsync\'d in the pack');
    assert.equal(inRow.status, 'rejected');
    assert.match(String((inRow as PromiseRejectedResult).reason), /disk is full/);
    side.exec('DROP TRIGGER refuse');
    const indexed = (): boolean => side.prepare('SELECT 1 FROM blobs WHERE sha256 = ?').get((inPack as PromiseFulfilledResult<{ sha256: string }>).value.sha256) !== undefined;
    for (let waited = 0; !indexed() && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    assert.ok(indexed(), 'the pack blob\'s row is written once a transaction commits again');
    side.close();
    const small = randomBytes(100);
    assert.ok((await store.blobs.get((await store.blobs.put(small)).sha256)).equals(small), 'inline puts work again');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a log transaction that cannot even begin (the write lock held past busy_timeout): an inline put is refused, not left waiting', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-inline-busy-'));
  const store = await openSqliteStore({ dataDir: dir });
  try {
    // Fault injection: the store's own connection gives up on the lock after 100 ms instead of 10 s.
    (store.blobs as unknown as { db: Database.Database }).db.pragma('busy_timeout = 100');
    const side = new Database(path.join(dir, 'mailtrail.db'));
    side.exec('BEGIN IMMEDIATE');
    const outcome = await Promise.race([
      store.blobs.put(randomBytes(100)).then(
        () => 'stored',
        (error: Error) => `refused: ${error.message}`,
      ),
      new Promise((r) => setTimeout(r, 3000)).then(() => 'still waiting'),
    ]);
    side.exec('ROLLBACK');
    side.close();
    assert.match(String(outcome), /^refused: .*locked/);
    const small = randomBytes(100);
    assert.ok((await store.blobs.get((await store.blobs.put(small)).sha256)).equals(small), 'puts work again once the lock is free');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
