/**
 * SMTP in worker processes (SMTP_WORKERS=2): the server runs as a real process tree; the tests
 * talk SMTP over sockets and HTTP to /metrics, and read the store the processes write.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { registerAccount } from '../src/accounts/accounts.js';
import { systemMeta } from '../src/events/envelope.js';
import { DOMAIN, rawMessage, received, SmtpTalk, startServerProcess, tempDir, testEnv, withStore } from './support/smtp.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function prepare(): Promise<{ env: Record<string, string>; mailboxId: string }> {
  const dir = tempDir('smtp-workers');
  dirs.push(dir);
  const env = testEnv(dir, { SMTP_WORKERS: '2' });
  const { mailboxId } = await withStore(env, (store) =>
    registerAccount(store, { email: `bob@${DOMAIN}`, password: 'x-password', name: 'bob' }, { bcryptCost: 4, meta: systemMeta() }),
  );
  return { env, mailboxId };
}

/** Sends `count` messages on one connection; resolves with the queue ids of the 250s. */
async function session(port: number, tag: string, count: number): Promise<string[]> {
  const { talk, greeting } = await SmtpTalk.open(port);
  assert.equal(greeting.code, 220);
  assert.equal((await talk.cmd('EHLO load.example.org')).code, 250);
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    await talk.envelope('load@example.org', [`bob@${DOMAIN}`]);
    const r = await talk.data(rawMessage({ subject: `${tag} ${i}`, messageId: `<${tag}-${i}@example.org>` }));
    assert.equal(r.code, 250, r.text);
    ids.push(/queued as (\S+)/.exec(r.text)![1]!);
  }
  await talk.quit();
  return ids;
}

/** Worker pids named in the server's "smtp listening" log lines. */
const workerPids = (output: string): number[] =>
  output
    .split('\n')
    .filter((l) => l.includes('"smtp listening"'))
    .map((l) => (JSON.parse(l) as { smtpWorker: number }).smtpWorker);

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The pids of the workers listening, once `n` have logged it: a worker's log line reaches the
 * shared stdout a moment after it told the main process (pino writes asynchronously), so after
 * "mailtrail started" too.
 */
async function listeningWorkers(output: () => string, n: number): Promise<number[]> {
  await until(`${n} workers listening`, () => workerPids(output()).length >= n, 10_000);
  return workerPids(output());
}

const refuses = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(true));
  });

describe('SMTP_WORKERS=2', () => {
  test('two worker processes share the port: parallel sessions are all stored once, by both workers, projected by the main process and counted in its /metrics', async () => {
    const { env, mailboxId } = await prepare();
    const server = await startServerProcess(env);
    try {
      assert.equal((await listeningWorkers(server.output, 2)).length, 2, 'two workers listening');
      const ids = (await Promise.all(Array.from({ length: 6 }, (_, s) => session(server.smtpPort, `w${s}`, 10)))).flat();
      assert.equal(new Set(ids).size, 60);
      // Both workers took connections (their log lines, written asynchronously, may trail the replies a little).
      const transactions = (): { smtpWorker: number }[] =>
        server
          .output()
          .split('\n')
          .filter((l) => l.includes('"smtp transaction"'))
          .map((l) => JSON.parse(l) as { smtpWorker: number });
      await until('every transaction logged', () => transactions().length >= 60, 10_000);
      const handledBy = new Set(transactions().map((t) => t.smtpWorker));
      assert.equal(handledBy.size, 2, `transactions by ${[...handledBy].join(', ')}`);
      // The main process projects what the workers stored, and counts their messages.
      await withStore(env, (store) => until('the mails view to show 60 mails', async () => (await store.views.count('mails', { mailboxId })) === 60));
      const metrics = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
      assert.match(metrics, /^mailtrail_smtp_messages_total\{outcome="accepted",reason="ok"\} 60$/m);
      assert.match(metrics, /^mailtrail_smtp_connections_total 6$/m);
    } finally {
      server.child.kill('SIGTERM');
      assert.equal(await server.exited, 0);
    }
    await withStore(env, async (store) => {
      const events = await received(store);
      assert.equal(events.length, 60);
      assert.equal(new Set(events.map((e) => e.meta.correlationId)).size, 60);
    });
  });

  test('a worker killed with -9 is replaced, and the other one serves meanwhile', async () => {
    const { env } = await prepare();
    const server = await startServerProcess(env);
    try {
      const [victim] = await listeningWorkers(server.output, 2);
      process.kill(victim!, 'SIGKILL');
      // Once the main process has seen the death, new connections go to the live worker, and to
      // the replacement once it listens.
      await until('the main process to notice', () => server.output().includes('SMTP worker died; starting another'));
      assert.equal((await session(server.smtpPort, 'after-kill', 3)).length, 3);
      await until('a replacement worker', () => workerPids(server.output()).length === 3);
      const ids = (await Promise.all(Array.from({ length: 4 }, (_, s) => session(server.smtpPort, `again${s}`, 2)))).flat();
      assert.equal(ids.length, 8);
    } finally {
      server.child.kill('SIGTERM');
      assert.equal(await server.exited, 0);
    }
  });

  test('kill -9 of the main process: the workers go too (nothing keeps the port), and every acknowledged message is in the store', async () => {
    const { env } = await prepare();
    const server = await startServerProcess(env);
    const ids = (await Promise.all(Array.from({ length: 4 }, (_, s) => session(server.smtpPort, `k${s}`, 5)))).flat();
    server.child.kill('SIGKILL');
    await server.exited;
    await until('the workers to close the SMTP port', () => refuses(server.smtpPort));
    await withStore(env, async (store) => {
      const stored = new Set((await received(store)).map((e) => e.meta.correlationId));
      for (const id of ids) assert.ok(stored.has(id), `acknowledged ${id} is stored`);
    });
  });
});
