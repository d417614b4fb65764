import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { mails } from '../projections/index.js';
import { rebuild } from '../src/projection/rebuild.js';
import { ProjectionRunner } from '../src/projection/runner.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { receive, registerAccount } from './support/events.js';
import { ROOT } from './support/process.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

for (const mode of ['inline', 'thread'] as const) {
  test(`kill -9 while appending (${mode === 'thread' ? 'through the log writer thread' : 'in the caller\'s thread'}): every acknowledged append and its blob survive`, async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-crash-'));
    dirs.push(dataDir);
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/append-child.ts', dataDir, mode], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const acked: { mailId: string; sha256: string }[] = [];
    let buffered = '';
    const exited = new Promise((resolve) => child.on('close', resolve));
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        buffered += d.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          const [word, mailId, sha256] = line.split(' ');
          if (word === 'ack') acked.push({ mailId: mailId!, sha256: sha256! });
        }
        // Kill in the middle of the load, with appends and fsyncs in flight.
        if (acked.length >= 1500) resolve();
      });
    });
    child.kill('SIGKILL');
    await exited;

    const store = await openSqliteStore({ dataDir });
    try {
      for (const { mailId, sha256 } of acked) {
        const [event] = await store.events.readStream(`mail-${mailId}`);
        assert.ok(event, `acknowledged mail ${mailId} is in the log`);
        assert.equal(event.type === 'MailReceived' && event.data.raw.sha256, sha256);
        const bytes = await store.blobs.get(sha256);
        assert.equal(createHash('sha256').update(bytes).digest('hex'), sha256, 'blob bytes intact');
      }
      // The store still works after the crash.
      assert.ok((await store.events.head()) >= acked.length);
    } finally {
      await store.close();
    }
  });
}

test('two processes on one DATA_DIR put blobs at the same time: each appends to a pack of its own, every blob reads back intact', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-two-writers-'));
  try {
    // The second writer is a real process: the store's own in-process queues cannot hide a clash.
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/blob-writer-child.ts', dir, 'child', '300'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const childOut: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => childOut.push(d));
    const childDone = new Promise<number | null>((resolve) => child.on('close', resolve));
    const store = await openSqliteStore({ dataDir: dir });
    try {
      const mine: string[] = [];
      for (let i = 0; i < 300; i++) {
        const refs = await Promise.all([0, 1, 2].map((k) => store.blobs.put(Buffer.from(`parent blob ${i}.${k} `.repeat(k === 0 ? 50 + i : 2100 + i)))));
        mine.push(...refs.map((r) => r.sha256));
      }
      assert.equal(await childDone, 0);
      const theirs = Buffer.concat(childOut).toString().trim().split('\n');
      assert.equal(theirs.length, 900);
      for (const sha256 of [...mine, ...theirs]) {
        const bytes = await store.blobs.get(sha256);
        assert.equal(createHash('sha256').update(bytes).digest('hex'), sha256);
      }
    } finally {
      await store.close();
    }
    const packs = readdirSync(path.join(dir, 'blobs')).filter((f) => f.startsWith('pack-'));
    assert.equal(packs.length, 2, `one pack per writer: ${packs.join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the log lost its tail under a view that had applied it (a power cut between commit and fsync): the projector parks and says to replay; a replay puts the view right', async () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-lost-tail-'));
  dirs.push(dataDir);
  const store = await openSqliteStore({ dataDir });
  const logger = pino({ level: 'silent' });
  const runner = (): ProjectionRunner => new ProjectionRunner(store, mails, { owner: 'test', logger, leaseTtlMs: 3000 });
  const until = async (what: string, check: () => boolean): Promise<void> => {
    for (let waited = 0; !check(); waited += 20) {
      if (waited > 10_000) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    const account = await registerAccount(store, 'tail@mail.test');
    for (const subject of ['one', 'two', 'three']) await receive(store, account, subject);
    const head = await store.events.head();
    const first = runner();
    await first.start();
    assert.equal(await first.waitFor(head, 10_000), true);
    await first.stop();

    // What a power cut can leave: the log without its last two appends, the view with them.
    const db = new Database(path.join(dataDir, 'mailtrail.db'));
    db.prepare('DELETE FROM events WHERE position > ?').run(head - 2);
    db.prepare("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'").run(head - 2);
    db.close();

    const second = runner();
    await second.start();
    await until('the projector to park', () => second.status === 'parked');
    assert.match(second.lastError ?? '', /log ends at .*npm run replay -- --projection mails/);
    await second.stop();

    await rebuild(store, [mails]);
    assert.equal(await store.views.count('mails', { userId: account.userId }), 1, 'the view holds what the log holds');
    const third = runner();
    await third.start();
    await receive(store, account, 'after the replay');
    assert.equal(await third.waitFor(await store.events.head(), 10_000), true);
    assert.equal(third.status, 'running');
    assert.equal(await store.views.count('mails', { userId: account.userId }), 2);
    await third.stop();
  } finally {
    await store.close();
  }
});
