/**
 * The server as a separate process (`src/main.ts`): kill -9 in the middle of a load must leave
 * every message that got a 250 in the store; SIGTERM must finish the message being received.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { registerAccount } from '../src/accounts/accounts.js';
import { systemMeta } from '../src/events/envelope.js';
import { DOMAIN, rawMessage, received, SmtpTalk, startServerProcess, tempDir, testEnv, withStore } from './support/smtp.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function prepare(smtpWorkers: number): Promise<Record<string, string>> {
  const dir = tempDir('smtp-process');
  dirs.push(dir);
  const env = testEnv(dir, { SMTP_WORKERS: String(smtpWorkers) });
  await withStore(env, (store) => registerAccount(store, { email: `bob@${DOMAIN}`, password: 'x-password', name: 'bob' }, { bcryptCost: 4, meta: systemMeta() }));
  return env;
}

// SMTP in the main process (the default), and in two worker processes.
for (const workers of [0, 2]) {
  describe(`durability across a crash (SMTP_WORKERS=${workers})`, () => {
    test('kill -9 during a load: every 250-acknowledged message is in the log, with its blob', async () => {
      const env = await prepare(workers);
      const server = await startServerProcess(env);
      const acked: { queueId: string; messageId: string }[] = [];
      const killAfter = 150;
      let killed = false;
      const sender = async (worker: number): Promise<void> => {
        const { talk, greeting } = await SmtpTalk.open(server.smtpPort);
        if (greeting.code !== 220) return;
        await talk.cmd('EHLO load.example.org');
        for (let i = 0; ; i++) {
          const messageId = `<crash-${worker}-${i}@example.org>`;
          const mail = await talk.cmd('MAIL FROM:<load@example.org>');
          if (mail.code !== 250) break;
          if ((await talk.cmd(`RCPT TO:<bob@${DOMAIN}>`)).code !== 250) break;
          const r = await talk.data(rawMessage({ subject: `crash ${worker}/${i}`, messageId, body: 'x'.repeat(2000) }));
          if (r.code !== 250) break; // the connection went away with the server
          acked.push({ queueId: /queued as (\S+)/.exec(r.text)![1]!, messageId });
          if (acked.length >= killAfter && !killed) {
            killed = true;
            server.child.kill('SIGKILL');
          }
        }
        talk.destroy();
      };
      await Promise.all(Array.from({ length: 20 }, (_, w) => sender(w)));
      assert.ok(killed, `the load got ${acked.length} acknowledgements before the clients stopped`);
      await server.exited;

      await withStore(env, async (store) => {
        const events = await received(store);
        const byQueueId = new Map<string, (typeof events)[number][]>();
        for (const e of events) byQueueId.set(e.meta.correlationId, [...(byQueueId.get(e.meta.correlationId) ?? []), e]);
        for (const { queueId, messageId } of acked) {
          const stored = byQueueId.get(queueId);
          assert.ok(stored, `acknowledged ${queueId} (${messageId}) is in the log`);
          assert.equal(stored.length, 1);
          assert.equal(stored[0]!.data.message.messageId, messageId);
          const raw = await store.blobs.get(stored[0]!.data.raw.sha256);
          assert.match(raw.toString(), new RegExp(`Message-ID: ${messageId}`));
        }
        // Nothing is stored twice either.
        assert.equal(new Set(events.map((e) => e.data.message.messageId)).size, events.length);
      });
    });
  });

  describe(`graceful shutdown (SMTP_WORKERS=${workers})`, () => {
    test('SIGTERM: idle sessions get 421, the message being received is finished and stored, the process exits 0', async () => {
      const env = await prepare(workers);
      const server = await startServerProcess(env);
      const idle = (await SmtpTalk.open(server.smtpPort)).talk;
      const busy = (await SmtpTalk.open(server.smtpPort)).talk;
      await busy.cmd('EHLO client.example.org');
      await busy.envelope('a@example.org', [`bob@${DOMAIN}`]);
      assert.equal((await busy.cmd('DATA')).code, 354);
      busy.write('Subject: finished after SIGTERM\r\nMessage-ID: <sigterm@example.org>\r\n\r\nfirst half\r\n');
      server.child.kill('SIGTERM');
      // The idle session being told to go shows the server is shutting down.
      assert.equal((await idle.reply()).code, 421);
      busy.write('second half\r\n.\r\n');
      const r = await busy.reply();
      assert.equal(r.code, 250, r.text);
      assert.equal(await server.exited, 0);
      await withStore(env, async (store) => {
        const [e] = (await received(store)).filter((x) => x.data.message.messageId === '<sigterm@example.org>');
        assert.ok(e, 'stored');
        assert.equal(e.meta.correlationId, /queued as (\S+)/.exec(r.text)![1]);
      });
      // One log line for the transaction, under its id.
      const lines = server.output().split('\n').filter((l) => l.includes('"msg":"smtp transaction"') && l.includes(`"tx":"${/queued as (\S+)/.exec(r.text)![1]}"`));
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /"result":"accepted"/);
    });
  });
}
