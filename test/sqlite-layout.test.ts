/**
 * The embedded store's files: a data folder from a release that kept the views inside
 * mailtrail.db is upgraded on open (old view tables dropped, views rebuilt into views.db).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
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
