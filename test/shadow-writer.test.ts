/**
 * The embedded store's shadow writer (replay writes shadow rows on a worker thread): loads see
 * every commit before it is written, commits land in order with their checkpoint, and a lease
 * lost meanwhile fails the rebuild instead of writing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LeaseLostError, type Store } from '../src/store/port.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-shadow-'));
let store: Store;
before(async () => {
  store = await openSqliteStore({ dataDir, synchronous: 'NORMAL' });
});
after(async () => {
  await store.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const spec = (name: string) => ({ name, indexed: ['owner'], indexes: [['owner']] });

test('loads see the newest commit before the thread has written it; flush leaves rows, indexed columns and checkpoint in place', async () => {
  await store.views.ensure(spec('notes'));
  const lease = (await store.views.acquireLease('shadow-test:notes', 'replay', 60_000))!;
  const writer = store.views.shadowWriter!();
  try {
    for (let n = 1; n <= 200; n++) {
      // One document rewritten by every batch, one new document per batch, and one deleted.
      await writer.commit({
        view: 'notes',
        docs: [
          { id: 'counter', doc: { id: 'counter', owner: 'ann', count: n }, position: n },
          { id: `note-${n}`, doc: { id: `note-${n}`, owner: n % 2 ? 'ann' : 'bob', count: 0 }, position: n },
          ...(n === 100 ? [{ id: 'note-50', doc: null, position: n }] : []),
        ],
        checkpoint: { name: 'rebuild:notes', position: n },
        lease,
      });
      const loaded = await writer.load('notes', ['counter', `note-${n}`, 'note-50']);
      assert.deepEqual(loaded.get('counter'), { doc: { id: 'counter', owner: 'ann', count: n }, position: n }, `counter after batch ${n}`);
      assert.equal(loaded.get(`note-${n}`)?.position, n);
      if (n >= 100) assert.deepEqual(loaded.get('note-50'), { doc: null, position: 100 }, 'the tombstone is seen too');
    }
    await writer.flush();
  } finally {
    await writer.close();
  }
  assert.deepEqual(await store.views.get('notes', 'counter'), { id: 'counter', owner: 'ann', count: 200 });
  assert.equal(await store.views.get('notes', 'note-50'), null);
  assert.equal(await store.views.checkpoint('rebuild:notes'), 200);
  // Indexed columns are written: bob has the even notes but note-50 (deleted); ann the odd ones and the counter.
  assert.equal(await store.views.count('notes', { owner: 'bob' }), 99);
  assert.equal(await store.views.count('notes', { owner: 'ann' }), 101);
});

test('a lease taken over by another owner: the next commit is not written and flush throws LeaseLostError', async () => {
  await store.views.ensure(spec('fenced'));
  const lease = (await store.views.acquireLease('shadow-test:fenced', 'replay', 60_000))!;
  const writer = store.views.shadowWriter!();
  try {
    const commit = (n: number) => writer.commit({ view: 'fenced', docs: [{ id: `d${n}`, doc: { id: `d${n}`, owner: 'ann' }, position: n }], checkpoint: { name: 'rebuild:fenced', position: n }, lease });
    await commit(1);
    await writer.flush();
    await store.views.releaseLease(lease);
    assert.ok(await store.views.acquireLease('shadow-test:fenced', 'someone-else', 60_000));
    await commit(2).catch(() => undefined);
    await assert.rejects(writer.flush(), LeaseLostError);
    await assert.rejects(commit(3), LeaseLostError, 'a failed writer refuses further commits');
  } finally {
    await writer.close();
  }
  assert.ok(await store.views.get('fenced', 'd1'));
  assert.equal(await store.views.get('fenced', 'd2'), null);
  assert.equal(await store.views.checkpoint('rebuild:fenced'), 1);
});
