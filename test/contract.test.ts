/**
 * The one contract both stores implement. Every test here runs against the embedded SQLite store
 * and against MongoDB (mongo-java-server started by the harness, or MONGODB_URI when set).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, afterEach, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { allProjections, mailboxes, mails, users } from '../projections/index.js';
import { MalformedEventError, type NewEvent } from '../src/events/envelope.js';
import { applyBatch } from '../src/projection/apply.js';
import { defineProjection } from '../src/projection/projection.js';
import { rebuild } from '../src/projection/rebuild.js';
import { leaseName, ProjectionRunner } from '../src/projection/runner.js';
import { LeaseLostError, WrongExpectedVersionError, type Store } from '../src/store/port.js';
import { backends } from './support/backends.js';
import { draftSendDeliver, meta, receive, registerAccount } from './support/events.js';

const logger = pino({ level: 'silent' });

const [sqlite, sqliteWriterThread, mongoBackend] = backends('contract');

const counter = defineProjection<{ id: string; seen: string[] }>({
  spec: { name: 'seen', indexed: [], indexes: [] },
  version: 1,
  keys: () => ['all'],
  evolve: (doc, e) => ({ id: 'all', seen: [...(doc?.seen ?? []), e.eventId] }),
});

/** Any valid event, for tests about the log itself. */
const anEvent = (): NewEvent => {
  const mailboxId = uuidv7();
  return { type: 'MailboxCreated', data: { mailboxId, userId: 'u', address: `${mailboxId}@mail.test` } };
};

async function waitUntil(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const backend of [sqlite, sqliteWriterThread, mongoBackend]) {
  describe(`store contract: ${backend.name}`, () => {
    let stores: Store[] = [];
    let runners: ProjectionRunner[] = [];
    let disposers: (() => Promise<void>)[] = [];

    before(async () => backend.before?.());
    after(async () => backend.after?.());
    afterEach(async () => {
      for (const r of runners) await r.stop();
      for (const s of stores) await s.close();
      for (const d of disposers) await d();
      stores = [];
      runners = [];
      disposers = [];
    });

    /** A fresh store; `second()` opens another handle on the same data, as a second process would. */
    async function fresh(): Promise<{ store: Store; second(): Promise<Store> }> {
      const loc = backend.location();
      disposers.push(loc.dispose);
      const open = async (): Promise<Store> => {
        const s = await loc.open();
        stores.push(s);
        return s;
      };
      return { store: await open(), second: open };
    }

    function runner(store: Store, projection = counter, owner = 'node-a', leaseTtlMs = 5000): ProjectionRunner {
      const r = new ProjectionRunner(store, projection, { owner, logger, leaseTtlMs, batchSize: 50 });
      runners.push(r);
      return r;
    }

    test('a new stream gets versions 1..n and increasing positions', async () => {
      const { store } = await fresh();
      const id = uuidv7();
      const r = await store.events.append(`mailbox-${id}`, [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      assert.equal(r.version, 1);
      const r2 = await store.events.append(`mailbox-${id}`, [anEvent(), anEvent()], { expectedVersion: 1, meta: meta() });
      assert.equal(r2.version, 3);
      assert.ok(r2.firstPosition > r.lastPosition);
      const events = await store.events.readStream(`mailbox-${id}`);
      assert.deepEqual(events.map((e) => e.version), [1, 2, 3]);
      assert.deepEqual(await store.events.readStream('mailbox-missing'), []);
      const e = events[0]!;
      assert.match(e.eventId, /^[0-9a-f-]{36}$/);
      assert.equal(e.schemaVersion, 1);
      assert.equal(e.meta.actor.kind, 'system');
      assert.ok(!Number.isNaN(Date.parse(e.recordedAt)));
    });

    test('optimistic concurrency: a wrong expected version is a typed conflict and writes nothing', async () => {
      const { store } = await fresh();
      const s = 'mailbox-occ';
      await store.events.append(s, [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      await assert.rejects(store.events.append(s, [anEvent()], { expectedVersion: 'no_stream', meta: meta() }), (err: unknown) => {
        assert.ok(err instanceof WrongExpectedVersionError);
        assert.equal(err.actual, 1);
        return true;
      });
      await assert.rejects(store.events.append(s, [anEvent()], { expectedVersion: 5, meta: meta() }), WrongExpectedVersionError);
      await assert.rejects(store.events.append('mailbox-none', [anEvent()], { expectedVersion: 1, meta: meta() }), WrongExpectedVersionError);
      assert.equal((await store.events.readStream(s)).length, 1);
      await store.events.append(s, [anEvent()], { expectedVersion: 'any', meta: meta() });
      assert.equal((await store.events.readStream(s)).length, 2);
    });

    test('ten racing appends with the same expected version: exactly one wins', async () => {
      const { store } = await fresh();
      await store.events.append('mailbox-race', [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, () => store.events.append('mailbox-race', [anEvent(), anEvent()], { expectedVersion: 1, meta: meta() })),
      );
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof WrongExpectedVersionError);
      assert.deepEqual((await store.events.readStream('mailbox-race')).map((e) => e.version), [1, 2, 3]);
    });

    test('an append racing from a second process conflicts on any overlapping version', async () => {
      const { store, second } = await fresh();
      const other = await second();
      await store.events.append('mailbox-overlap', [anEvent(), anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      // Stale at version 1 while the stream is at 2: its first new version (2) overlaps the middle of a commit.
      await assert.rejects(other.events.append('mailbox-overlap', [anEvent(), anEvent()], { expectedVersion: 1, meta: meta() }), WrongExpectedVersionError);
      assert.equal((await other.events.readStream('mailbox-overlap')).length, 2);
    });

    test('a multi-event append is atomic and contiguous', async () => {
      const { store } = await fresh();
      const appends = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.events.append(`mailbox-m${i}`, [anEvent(), anEvent(), anEvent()], { expectedVersion: 'no_stream', meta: meta() }),
        ),
      );
      for (const a of appends) assert.equal(a.lastPosition - a.firstPosition, 2);
      const all = await store.events.readAll({ after: 0, limit: 1000 });
      assert.equal(all.length, 60);
      for (let i = 0; i < all.length; i += 3) {
        assert.equal(new Set(all.slice(i, i + 3).map((e) => e.streamId)).size, 1, 'a commit is never interleaved with another');
      }
    });

    test('malformed or unknown events are refused at append and nothing is written', async () => {
      const { store } = await fresh();
      const bad = { type: 'MailboxCreated', data: { mailboxId: 'm' } } as unknown as NewEvent;
      await assert.rejects(store.events.append('mailbox-bad', [bad], { expectedVersion: 'any', meta: meta() }), MalformedEventError);
      const unknown = { type: 'MailTeleported', data: {} } as unknown as NewEvent;
      await assert.rejects(store.events.append('mailbox-bad', [anEvent(), unknown], { expectedVersion: 'any', meta: meta() }), /unknown event type/);
      assert.equal(await store.events.head(), 0);
    });

    test('every reader sees one global order, even with writers in two processes', async () => {
      const { store, second } = await fresh();
      const other = await second();
      const writes = Array.from({ length: 60 }, (_, i) =>
        (i % 2 ? store : other).events.append(`mailbox-g${i % 7}`, [anEvent()], { expectedVersion: 'any', meta: meta() }),
      );
      await Promise.all(writes);
      const read = async (s: Store): Promise<string[]> => {
        const out: string[] = [];
        let after = 0;
        for (;;) {
          const batch = await s.events.readAll({ after, limit: 7 });
          if (batch.length === 0) return out;
          for (const e of batch) {
            assert.ok(e.position > after, 'positions strictly increase');
            after = e.position;
            out.push(e.eventId);
          }
        }
      };
      const a = await read(store);
      const b = await read(other);
      assert.equal(a.length, 60);
      assert.deepEqual(a, b);
      assert.equal(new Set(a).size, 60);
      assert.equal(await store.events.head(), await other.events.head());
    });

    test('catch-up then live: appends racing the subscription start are each applied once', async () => {
      const { store } = await fresh();
      const ids: Promise<unknown>[] = [];
      for (let i = 0; i < 40; i++) ids.push(store.events.append(`mailbox-c${i}`, [anEvent()], { expectedVersion: 'no_stream', meta: meta() }));
      const r = runner(store);
      const starting = r.start();
      for (let i = 40; i < 100; i++) {
        ids.push(store.events.append(`mailbox-c${i}`, [anEvent()], { expectedVersion: 'no_stream', meta: meta() }));
        if (i % 10 === 0) await new Promise((res) => setTimeout(res, 5));
      }
      await Promise.all(ids);
      await starting;
      assert.ok(await r.waitFor(await store.events.head(), 10_000), 'projector caught up');
      const doc = (await store.views.get('seen', 'all')) as { id: string; seen: string[] };
      const log = (await store.events.readAll({ after: 0, limit: 1000 })).map((e) => e.eventId);
      assert.deepEqual(doc.seen, log, 'every event once, in log order');
    });

    test('a restarted projector resumes from its checkpoint', async () => {
      const { store, second } = await fresh();
      for (let i = 0; i < 10; i++) await store.events.append(`mailbox-r${i}`, [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      const first = runner(store);
      await first.start();
      assert.ok(await first.waitFor(10, 10_000) || (await first.waitFor(await store.events.head(), 10_000)));
      await first.stop();
      const checkpoint = await store.views.checkpoint('seen');
      assert.equal(checkpoint, await store.events.head());
      for (let i = 10; i < 15; i++) await store.events.append(`mailbox-r${i}`, [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      const restarted = runner(await second());
      await restarted.start();
      assert.equal(restarted.position, checkpoint, 'starts at the stored checkpoint, not at 0');
      assert.ok(await restarted.waitFor(await store.events.head(), 10_000));
      const doc = (await store.views.get('seen', 'all')) as { id: string; seen: string[] };
      assert.equal(doc.seen.length, 15);
      assert.equal(new Set(doc.seen).size, 15);
    });

    test('applying a batch twice changes nothing (idempotent projection)', async () => {
      const { store } = await fresh();
      const account = await registerAccount(store, 'bob@mail.test');
      await receive(store, account, 'one');
      await receive(store, account, 'two');
      const events = await store.events.readAll({ after: 0, limit: 100 });
      await store.views.ensure(mailboxes.spec);
      const lease = (await store.views.acquireLease(leaseName('mailboxes'), 'test', 5000))!;
      const target = { view: 'mailboxes', checkpoint: 'mailboxes', lease };
      await applyBatch(store.views, mailboxes, events, target);
      const once = await store.views.all('mailboxes');
      await applyBatch(store.views, mailboxes, events, target);
      await applyBatch(store.views, mailboxes, events.slice(1), target);
      assert.deepEqual(await store.views.all('mailboxes'), once);
      assert.deepEqual((once[0] as { id: string; counts: unknown }).counts, { inbox: 2, unread: 2, sent: 0, drafts: 0, trash: 0 });
    });

    test('a crash between the view write and the checkpoint is repaired by the next run', async () => {
      const { store } = await fresh();
      const account = await registerAccount(store, 'bob@mail.test');
      for (let i = 0; i < 5; i++) await receive(store, account, `m${i}`);
      const events = await store.events.readAll({ after: 0, limit: 100 });
      await store.views.ensure(mailboxes.spec);
      // The "crash": the view got the first events but its own checkpoint did not move.
      const lease = (await store.views.acquireLease(leaseName('mailboxes'), 'crashed', 1))!;
      await applyBatch(store.views, mailboxes, events.slice(0, 4), { view: 'mailboxes', checkpoint: 'unrelated', lease });
      assert.equal(await store.views.checkpoint('mailboxes'), 0);
      await new Promise((r) => setTimeout(r, 5));
      const r = runner(store, mailboxes);
      await r.start();
      assert.ok(await r.waitFor(await store.events.head(), 10_000));
      const [mailbox] = (await store.views.all('mailboxes')) as { id: string; counts: { inbox: number } }[];
      assert.equal(mailbox!.counts.inbox, 5, 'each MailReceived counted once');
    });

    test('only one process runs a projector; another takes over when it dies; a stale holder cannot write', async () => {
      const { store, second } = await fresh();
      const other = await second();
      await store.events.append('mailbox-l', [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      // Process A takes the lease and dies without releasing it.
      const dead = (await store.views.acquireLease(leaseName('seen'), 'node-a', 300))!;
      assert.equal(await other.views.acquireLease(leaseName('seen'), 'node-b', 300), null, 'held by A');
      const b = runner(other, counter, 'node-b', 300);
      await b.start();
      await waitUntil('node-b takes over', async () => b.status === 'running');
      assert.ok(await b.waitFor(await store.events.head(), 10_000));
      await store.views.ensure(counter.spec);
      await assert.rejects(
        store.views.commit({ view: 'seen', docs: [{ id: 'all', doc: { id: 'all', seen: [] }, position: 999 }], checkpoint: { name: 'seen', position: 999 }, lease: dead }),
        LeaseLostError,
      );
      assert.notEqual(await store.views.checkpoint('seen'), 999);
      // A healthy holder keeps it: a second runner stays in standby.
      const c = runner(store, counter, 'node-c', 300);
      await c.start();
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(c.status, 'standby');
      assert.equal(b.status, 'running');
    });

    test('commits of several views at once are fenced each by its own lease', async () => {
      const { store } = await fresh();
      await store.views.ensure(counter.spec);
      await store.views.ensure({ ...counter.spec, name: 'seen2' });
      const held = (await store.views.acquireLease(leaseName('seen'), 'node-a', 5000))!;
      const stale = { ...(await store.views.acquireLease(leaseName('seen2'), 'node-a', 5000))!, token: 0 };
      const doc = (view: string, position: number) => ({ view, docs: [{ id: 'all', doc: { id: 'all', seen: [] }, position }], checkpoint: { name: view, position } });
      // Issued in the same tick: the SQLite store writes them in one transaction.
      const [ok, lost] = await Promise.allSettled([store.views.commit({ ...doc('seen', 3), lease: held }), store.views.commit({ ...doc('seen2', 3), lease: stale })]);
      assert.equal(ok.status, 'fulfilled');
      assert.ok(lost.status === 'rejected' && lost.reason instanceof LeaseLostError);
      assert.equal(await store.views.checkpoint('seen'), 3);
      assert.equal(await store.views.checkpoint('seen2'), 0);
      assert.deepEqual(await store.views.all('seen2'), []);
    });

    test('resetCheckpoint moves a checkpoint back, for the lease holder only', async () => {
      const { store } = await fresh();
      await store.views.ensure(counter.spec);
      const held = (await store.views.acquireLease(leaseName('seen'), 'node-a', 5000))!;
      await store.views.commit({ view: 'seen', docs: [], checkpoint: { name: 'seen', position: 40 }, lease: held });
      await store.views.commit({ view: 'seen', docs: [], checkpoint: { name: 'seen', position: 7 }, lease: held });
      assert.equal(await store.views.checkpoint('seen'), 40, 'a commit never moves it back');
      await store.views.resetCheckpoint('seen', 7, held);
      assert.equal(await store.views.checkpoint('seen'), 7);
      await assert.rejects(store.views.resetCheckpoint('seen', 0, { ...held, token: held.token + 1 }), LeaseLostError);
      assert.equal(await store.views.checkpoint('seen'), 7);
    });

    test('pruneLeases deletes free leases with the prefix and keeps held ones', async () => {
      const { store } = await fresh();
      const released = (await store.views.acquireLease('relay:<a@x>', 'n1', 60_000))!;
      await store.views.releaseLease(released);
      await store.views.acquireLease('relay:<b@x>', 'n1', 60_000);
      const freeOther = (await store.views.acquireLease('projector:x', 'n1', 60_000))!;
      await store.views.releaseLease(freeOther);
      assert.equal(await store.views.pruneLeases('relay:'), 1);
      assert.equal(await store.views.acquireLease('relay:<b@x>', 'n2', 60_000), null, 'a held claim survives');
      const again = await store.views.acquireLease('relay:<a@x>', 'n2', 60_000);
      assert.ok(again, 'a pruned name can be taken again');
      assert.equal(await store.views.pruneLeases('relay:'), 0);
      assert.ok(await store.views.acquireLease('projector:x', 'n3', 60_000), 'other prefixes untouched (and still free)');
    });

    test('replay rebuilds views deep-equal to the live ones, while the server keeps running', async () => {
      const { store, second } = await fresh();
      const live = allProjections.map((p) => runner(store, p, 'server', 1000));
      for (const r of live) await r.start();
      const bob = await registerAccount(store, 'Bob@mail.test');
      const ann = await registerAccount(store, 'ann@mail.test');
      for (let i = 0; i < 30; i++) await receive(store, i % 3 ? bob : ann, `hello ${i}`);
      await draftSendDeliver(store, bob, 'delivered');
      await draftSendDeliver(store, bob, 'failed');
      await draftSendDeliver(store, ann, 'queued');
      const head = await store.events.head();
      for (const r of live) assert.ok(await r.waitFor(head, 10_000), `${r.name} caught up`);
      const before = Object.fromEntries(await Promise.all(allProjections.map(async (p) => [p.spec.name, await store.views.all(p.spec.name)] as const)));
      const replayStore = await second();
      const result = await rebuild(replayStore, allProjections, { batchSize: 7 });
      assert.equal(result.position, head);
      assert.equal(result.events, head);
      for (const p of allProjections) assert.deepEqual(await store.views.all(p.spec.name), before[p.spec.name], `${p.spec.name} identical after replay`);
      const sent = (before.mails as { id: string; folder: string; status: string }[]).filter((m) => m.folder === 'sent').map((m) => m.status).sort();
      assert.deepEqual(sent, ['failed', 'queued', 'sent']);
      // The live projectors took their views back and keep projecting.
      await receive(store, bob, 'after replay');
      for (const r of live) assert.ok(await r.waitFor(await store.events.head(), 10_000), `${r.name} live again`);
      const inbox = await store.views.list('mails', { where: { userId: bob.userId, folder: 'inbox' }, orderBy: { field: 'sortAt', direction: 'desc' }, limit: 1 });
      assert.equal((inbox[0] as { id: string; subject: string }).subject, 'after replay');
    });

    test('a projector rides out a store outage (disk full) however long it lasts, but parks on a failure of its own', async () => {
      const { store } = await fresh();
      let failing: Error | null = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      let failed = 0;
      const views = new Proxy(store.views, {
        get(target, prop, receiver) {
          if (prop === 'commit') return async (c: Parameters<Store['views']['commit']>[0]) => {
            if (failing) {
              failed += 1;
              throw failing;
            }
            return target.commit(c);
          };
          const value = Reflect.get(target, prop, receiver) as unknown;
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
      const flaky: Store = { ...store, views };
      const r = new ProjectionRunner(flaky, counter, { owner: 'node-a', logger, leaseTtlMs: 5000, batchSize: 50, maxFailures: 2 });
      runners.push(r);
      await r.start();
      await store.events.append(uuidv7(), [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      await waitUntil('three failed commits', async () => failed >= 3);
      assert.equal(r.status, 'running', 'past maxFailures, still retrying');
      assert.match(r.lastError ?? '', /disk is full/);
      failing = null;
      assert.ok(await r.waitFor(await store.events.head(), 10_000), 'caught up once the disk has room');
      assert.equal(r.lastError, null, 'the error is history');
      failing = new Error('a bug in a projection');
      await store.events.append(uuidv7(), [anEvent()], { expectedVersion: 'no_stream', meta: meta() });
      await waitUntil('parked', async () => r.status === 'parked');
    });

    test('a replay stopped while waiting for the live views hands them back at once: no request left behind', async () => {
      const { store } = await fresh();
      await registerAccount(store, 'bob@mail.test');
      // The server's projector for users, as a lease it holds and renews (it would hand over on request).
      const held = (await store.views.acquireLease(leaseName('users'), 'server', 60_000))!;
      const stop = new AbortController();
      let caughtUp = false;
      const replay = rebuild(store, [users], { signal: stop.signal, onProgress: (p) => (caughtUp ||= p.position === p.head) });
      replay.catch(() => undefined);
      // Caught up, the replay asks for the live view and waits for the holder to hand it over.
      await waitUntil('the replay caught up', async () => caughtUp);
      await new Promise((r) => setTimeout(r, 300));
      stop.abort(new Error('stopped'));
      await assert.rejects(replay, /stopped/);
      const again = await store.views.acquireLease(leaseName('users'), 'server', 60_000);
      assert.ok(again, 'the server takes its view back');
      assert.ok(await store.views.renewLease(again, 60_000), 'and keeps it: the request was withdrawn');
    });

    test('list pages newest first with a keyset cursor; count counts', async () => {
      const { store } = await fresh();
      const r = runner(store, mails);
      await r.start();
      const bob = await registerAccount(store, 'bob@mail.test');
      for (let i = 0; i < 7; i++) await receive(store, bob, `m${i}`);
      assert.ok(await r.waitFor(await store.events.head(), 10_000));
      const subjects: string[] = [];
      let cursor: { value: string; id: string } | undefined;
      for (;;) {
        const page = (await store.views.list('mails', { where: { userId: bob.userId, folder: 'inbox' }, orderBy: { field: 'sortAt', direction: 'desc' }, after: cursor, limit: 3 })) as {
          id: string;
          sortAt: string;
          subject: string;
        }[];
        if (page.length === 0) break;
        subjects.push(...page.map((m) => m.subject));
        const last = page.at(-1)!;
        cursor = { value: last.sortAt, id: last.id };
      }
      assert.deepEqual(subjects, ['m6', 'm5', 'm4', 'm3', 'm2', 'm1', 'm0']);
      assert.equal(await store.views.count('mails', { userId: bob.userId, folder: 'inbox' }), 7);
      assert.equal(await store.views.count('mails', { userId: bob.userId, folder: 'sent' }), 0);
    });

    test('blobs: content-addressed round trip, dedupe, streams and concurrent puts', async () => {
      const { store } = await fresh();
      const bytes = randomBytes(300_000);
      const a = await store.blobs.put(bytes);
      const b = await store.blobs.put(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]));
      assert.deepEqual(a, b);
      assert.equal(a.size, bytes.length);
      assert.ok((await store.blobs.get(a.sha256)).equals(bytes));
      assert.equal(await store.blobs.has(a.sha256), true);
      assert.equal(await store.blobs.has('0'.repeat(64)), false);
      // Small enough for the embedded store to keep in the index row itself.
      const small = randomBytes(1000);
      const s1 = await store.blobs.put(small);
      assert.deepEqual(await store.blobs.put(Readable.from([small.subarray(0, 10), small.subarray(10)])), s1);
      assert.ok((await store.blobs.get(s1.sha256)).equals(small));
      assert.equal(await store.blobs.has(s1.sha256), true);
      const same = randomBytes(50_000);
      const refs = await Promise.all(Array.from({ length: 5 }, () => store.blobs.put(same)));
      assert.equal(new Set(refs.map((r) => r.sha256)).size, 1);
      const big = randomBytes(20 * 1024 * 1024);
      const ref = await store.blobs.put(big);
      assert.ok((await store.blobs.get(ref.sha256)).equals(big));
    });
  });
}
