/**
 * npm run backup while mail keeps arriving, npm run restore into a new folder with a replay of the
 * views: every mail acknowledged before the backup is there, the log is an exact prefix of the
 * source's, every blob is intact, and the views are the ones the live server has for those events.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { allProjections } from '../projections/index.js';
import type { StoredEvent } from '../src/events/envelope.js';
import { ProjectionRunner } from '../src/projection/runner.js';
import type { Store, ViewDoc } from '../src/store/port.js';
import { readTar, tarHeader } from '../src/ops/tar.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { mailReceived, meta, registerAccount, type Account } from './support/events.js';
import { runScript, startServer } from './support/process.js';

/** A message with an attachment of `size` random bytes, so blobs span many pack pages. */
function rawMessage(mailId: string, size: number): Buffer {
  const body = randomBytes(size).toString('base64').replace(/.{76}/g, '$&\r\n');
  return Buffer.from(
    `From: alice@example.org\r\nTo: bob@mail.test\r\nSubject: ${mailId}\r\nMessage-ID: <${mailId}@example.org>\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${body}\r\n`,
  );
}

async function readLog(store: Store, upTo = Number.MAX_SAFE_INTEGER): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for (let after = 0; after < upTo; ) {
    const batch = (await store.events.readAll({ after, limit: 1000 })).filter((e) => e.position <= upTo);
    if (batch.length === 0) break;
    out.push(...batch);
    after = batch.at(-1)!.position;
  }
  return out;
}

const byId = (docs: ViewDoc[]): Map<string, ViewDoc> => new Map(docs.map((d) => [d.id, d]));

describe('backup and restore of the embedded store', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-backup-'));
  const source = path.join(dir, 'source');
  const backup = path.join(dir, 'backup.tar.gz');
  const restored = path.join(dir, 'restored');
  let store: Store;
  let runners: ProjectionRunner[];
  let bob: Account;
  /** sha256 of each acknowledged mail's raw message, by mail id, in order of acknowledgement. */
  const acked = new Map<string, string>();

  async function deliver(size: number): Promise<void> {
    const mailId = uuidv7();
    const ref = await store.blobs.put(rawMessage(mailId, size));
    const event = mailReceived(bob, mailId, mailId);
    if (event.type !== 'MailReceived') throw new Error('unreachable');
    await store.events.append(`mail-${mailId}`, [{ ...event, data: { ...event.data, raw: ref } }], { expectedVersion: 'no_stream', meta: meta() });
    acked.set(mailId, ref.sha256);
  }

  before(async () => {
    // The "server": this process appends and runs the projectors, as src/app.ts does.
    store = await openSqliteStore({ dataDir: source });
    runners = allProjections.map((p) => new ProjectionRunner(store, p, { owner: 'live-server', logger: pino({ level: 'silent' }) }));
    for (const r of runners) await r.start();
    bob = await registerAccount(store, 'bob@mail.test');
    for (let i = 0; i < 150; i++) await deliver(1000 + ((i * 7919) % 120_000));
  });
  after(async () => {
    for (const r of runners) await r.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('backup during appends, restore into a new folder: every mail, exact log prefix, intact blobs, identical views', async (t) => {
    const ackedBefore = new Set(acked.keys());
    const headBefore = await store.events.head();
    let stop = false;
    const writer = async (seed: number): Promise<void> => {
      for (let i = 0; !stop; i++) await deliver(500 + ((seed * 1_000_003 + i * 7919) % 80_000));
    };
    const writers = Promise.all([1, 2, 3, 4].map(writer));
    const b = await runScript('scripts/backup.ts', ['--out', backup], { DATA_DIR: source });
    const ackedDuringBackup = acked.size - ackedBefore.size;
    stop = true;
    await writers;
    assert.equal(b.code, 0, b.stderr);
    assert.ok(ackedDuringBackup > 0, 'mail kept arriving while the backup ran');
    t.diagnostic(`${ackedDuringBackup} mails acknowledged while the backup ran`);
    assert.match(b.stdout, /^events: +\d+ \(up to position \d+\)$/m);
    assert.match(b.stderr, /backup: 100%/);

    const r = await runScript('scripts/restore.ts', ['--from', backup, '--data-dir', restored], {});
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^views: +users, mailboxes, mails, domains/m);
    assert.deepEqual(readdirSync(restored).sort(), ['blobs', 'mailtrail.db', 'views.db'], 'no staging folder left behind');

    const copy = await openSqliteStore({ dataDir: restored });
    try {
      const head = await copy.events.head();
      assert.ok(head >= headBefore, `the backup holds everything acknowledged before it started (${head} >= ${headBefore})`);
      assert.ok(head <= (await store.events.head()));
      assert.match(b.stdout, new RegExp(`up to position ${head}\\)`));
      const log = await readLog(copy);
      assert.deepEqual(log, await readLog(store, head), 'the restored log is the source log up to the snapshot, event for event');

      const mailIds = log.filter((e) => e.type === 'MailReceived').map((e) => (e.data as { mailId: string }).mailId);
      for (const id of ackedBefore) assert.ok(mailIds.includes(id), `mail ${id} acknowledged before the backup is restored`);
      for (const e of log) {
        if (e.type !== 'MailReceived') continue;
        const bytes = await copy.blobs.get(e.data.raw.sha256);
        assert.equal(createHash('sha256').update(bytes).digest('hex'), e.data.raw.sha256, `blob of ${e.data.mailId} intact`);
        assert.equal(acked.get(e.data.mailId), e.data.raw.sha256);
      }

      // The live server's views at its (later) head, against the replayed views of the restored log.
      const liveHead = await store.events.head();
      for (const runner of runners) assert.ok(await runner.waitFor(liveHead, 30_000), `${runner.name} caught up`);
      for (const p of allProjections) {
        const view = p.spec.name;
        const live = byId(await store.views.all(view));
        const replayed = await copy.views.all(view);
        if (view === 'mailboxes') {
          // Later mail moved the live counts on; everything else is the same.
          const received = mailIds.length;
          assert.deepEqual(replayed, [{ ...live.get(bob.mailboxId)!, counts: { inbox: received, unread: received, sent: 0, drafts: 0, trash: 0 } }]);
          continue;
        }
        for (const doc of replayed) assert.deepEqual(doc, live.get(doc.id), `${view}/${doc.id} as the live server has it`);
        if (view === 'mails') assert.deepEqual(replayed.map((d) => d.id).sort(), [...mailIds].sort(), 'one mail document per restored mail');
        else assert.equal(replayed.length, live.size, `${view}: the same documents`);
      }
    } finally {
      await copy.close();
    }
  });

  test('the backup is a plain .tar.gz: the tar binary lists it', (t) => {
    if (spawnSync('tar', ['--version']).error) return t.skip('no tar binary on this machine');
    const names = execFileSync('tar', ['-tzf', backup]).toString().trim().split('\n');
    assert.equal(names[0], 'mailtrail.db');
    assert.ok(names.slice(1, -1).every((n) => /^blobs\/pack-\d{6}$/.test(n)));
    assert.equal(names.at(-1), 'manifest.json');
  });

  test('a database over 8 GiB gets the base-256 size field, read back exactly', async () => {
    const size = 9 * 1024 ** 3;
    const header = tarHeader('mailtrail.db', size);
    assert.equal(header[124], 0x80, 'GNU base-256 marker');
    const seen: number[] = [];
    const input = (async function* () {
      yield header;
    })();
    await assert.rejects(
      readTar(input, async (_name, entrySize, body) => {
        seen.push(entrySize);
        for await (const _chunk of body);
      }),
      /the archive ends inside mailtrail\.db/,
    );
    assert.deepEqual(seen, [size]);
  });

  test('the restored folder runs: the server starts on it and reports the restored head', async () => {
    const copy = await openSqliteStore({ dataDir: restored });
    const head = await copy.events.head();
    await copy.close();
    const server = await startServer({ DATA_DIR: restored, PORT: '0', SMTP_PORT: '0', HOST: '127.0.0.1' });
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/health`);
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { head: number }).head, head);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  test('restore refuses a non-empty folder, and with --force one that a process has open', async () => {
    const refused = await runScript('scripts/restore.ts', ['--from', backup, '--data-dir', restored], {});
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /restored is not empty \([^)]*mailtrail\.db[^)]*\); restore into a new folder, or add --force true/);
    const others = readdirSync(restored).filter((f) => !/^(blobs|(mailtrail|views)\.db(-wal|-shm)?)$/.test(f));
    const open = await openSqliteStore({ dataDir: restored });
    try {
      const busy = await runScript('scripts/restore.ts', ['--from', backup, '--data-dir', restored, '--force', 'true'], {});
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, /is in use by another process \(a running mailtrail\?\); stop it first/);
    } finally {
      await open.close();
    }
    const forced = await runScript('scripts/restore.ts', ['--from', backup, '--data-dir', restored, '--force', 'true'], {});
    assert.equal(forced.code, 0, forced.stderr);
    for (const f of others) assert.ok(existsSync(path.join(restored, f)), `--force keeps ${f} (only the log and the blobs are replaced)`);
  });

  test('a damaged or foreign file is refused and leaves the target folder empty', async () => {
    const bytes = readFileSync(backup);
    const damaged = path.join(dir, 'damaged.tar.gz');
    // A flipped byte in the compressed data: gzip's CRC (or the manifest's sha256) catches it.
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    writeFileSync(damaged, bytes);
    const target = path.join(dir, 'from-damaged');
    const r = await runScript('scripts/restore.ts', ['--from', damaged, '--data-dir', target], {});
    assert.equal(r.code, 1);
    assert.match(r.stderr, /damaged/);
    assert.deepEqual(readdirSync(target), []);

    const foreign = path.join(dir, 'notes.txt');
    writeFileSync(foreign, 'not a backup\n');
    const other = path.join(dir, 'from-foreign');
    const f = await runScript('scripts/restore.ts', ['--from', foreign, '--data-dir', other], {});
    assert.equal(f.code, 1);
    assert.match(f.stderr, /notes\.txt is not a mailtrail backup, or it is damaged .*use a file written by npm run backup/);
  });

  test('backup refuses to overwrite, to back up a folder without a log, and points MongoDB users to mongodump', async () => {
    const again = await runScript('scripts/backup.ts', ['--out', backup], { DATA_DIR: source });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists; a backup never overwrites a file: give --out a new name/);
    const empty = path.join(dir, 'empty');
    mkdirSync(empty);
    const none = await runScript('scripts/backup.ts', ['--out', path.join(dir, 'none.tar.gz')], { DATA_DIR: empty });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no event log at .*mailtrail\.db; set DATA_DIR to the server's data folder/);
    assert.ok(!existsSync(path.join(dir, 'none.tar.gz')));
    const mongo = await runScript('scripts/backup.ts', ['--out', path.join(dir, 'm.tar.gz')], { MONGODB_URI: 'mongodb://127.0.0.1:1/?replicaSet=rs0' });
    assert.equal(mongo.code, 1);
    assert.match(mongo.stderr, /MONGODB_URI is set, and this command covers the embedded store only/);
    assert.match(mongo.stderr, /mongodump --uri "\$MONGODB_URI" --db mailtrail --collection events /);
    const restoreMongo = await runScript('scripts/restore.ts', ['--from', backup, '--data-dir', path.join(dir, 'm')], { MONGODB_URI: 'mongodb://127.0.0.1:1/?replicaSet=rs0' });
    assert.equal(restoreMongo.code, 1);
    assert.match(restoreMongo.stderr, /mongorestore/);
  });
});
