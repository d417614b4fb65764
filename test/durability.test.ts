import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { ROOT } from './support/process.js';

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-crash-'));
after(() => rmSync(dataDir, { recursive: true, force: true }));

test('kill -9 while appending: every acknowledged append and its blob survive', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/append-child.ts', dataDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
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
