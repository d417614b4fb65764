import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import net, { type AddressInfo } from 'node:net';
import { createClient } from '../src/api/client.js';
import { startApp } from '../src/app.js';
import { ConfigError, ConfigSchema, loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { leaseName } from '../src/projection/runner.js';
import { openStore } from '../src/store/open.js';
import { ROOT, runScript, startServer } from './support/process.js';
import { testEnv } from './support/smtp.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-server-'));
  dirs.push(d);
  return d;
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('configuration', () => {
  test('defaults give a runnable embedded setup', () => {
    const c = loadConfig({});
    assert.equal(c.PORT, 3000);
    assert.equal(c.MONGODB_URI, undefined);
    assert.equal(c.DATA_DIR, path.resolve('./data'));
  });

  test('a bad value is an error naming the variable', () => {
    assert.throws(() => loadConfig({ PORT: 'eighty' }), (e: unknown) => e instanceof ConfigError && /PORT/.test(e.message));
    assert.throws(() => loadConfig({ MONGODB_URI: 'localhost:27017' }), (e: unknown) => e instanceof ConfigError && /MONGODB_URI: must start with mongodb:\/\//.test(e.message));
    assert.throws(() => loadConfig({ LOG_LEVEL: 'loud', BCRYPT_COST: '99' }), (e: unknown) => e instanceof ConfigError && /LOG_LEVEL/.test(e.message) && /BCRYPT_COST/.test(e.message));
    assert.throws(() => loadConfig({ DEFAULT_DOMAIN: 'mailhost' }), (e: unknown) => e instanceof ConfigError && /DEFAULT_DOMAIN: must be a domain name with a dot/.test(e.message));
    assert.equal(loadConfig({ DEFAULT_DOMAIN: 'Mail.Example.COM' }).DEFAULT_DOMAIN, 'mail.example.com');
  });

  test('.env.example documents every variable, each with a comment', () => {
    const lines = readFileSync(path.join(ROOT, '.env.example'), 'utf8').split('\n');
    for (const key of Object.keys(ConfigSchema.shape)) {
      const at = lines.findIndex((l) => l.startsWith(`${key}=`));
      assert.ok(at > 0, `${key} is in .env.example`);
      assert.match(lines[at - 1]!, /^#/, `${key} has a comment above it`);
    }
  });
});

describe('npm start', () => {
  test('starts on the embedded store with no setup, answers /health, stops cleanly on SIGTERM, even with a live stream open', { timeout: 90_000 }, async () => {
    const dataDir = path.join(tempDir(), 'fresh', 'data');
    const server = await startServer({ DATA_DIR: dataDir, PORT: '0', SMTP_PORT: '0', HOST: '127.0.0.1' });
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/health`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as { status: string; store: string; projectors: Record<string, { status: string }> };
      assert.equal(body.status, 'ok');
      assert.equal(body.store, 'sqlite');
      assert.deepEqual(Object.keys(body.projectors).sort(), ['aliases', 'domains', 'local-delivery', 'mailboxes', 'mails', 'mta_sts', 'outbox', 'users'], 'the views, and the follower that stores local copies a send left out');
      const app = await fetch(`http://127.0.0.1:${server.port}/`);
      assert.equal(app.status, 200, 'the web client is built and served with no extra command');
      assert.match(app.headers.get('content-type') ?? '', /text\/html/);
      assert.match(app.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
      assert.equal((await fetch(`http://127.0.0.1:${server.port}/trpc/nope`)).status, 404);
      const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
      assert.match(metrics, /^mailtrail_projector_lag_events\{projector="mails"\} 0$/m);
      assert.equal((await fetch(`http://127.0.0.1:${server.port}/ready`)).status, 200);
      // A web client's live stream (server-sent events) stays open: it must not hold the shutdown.
      const base = `http://127.0.0.1:${server.port}`;
      await createClient(base).auth.register.mutate({ email: 'sse@localhost', password: 'a password of some length', name: 'sse' });
      const { token } = await createClient(base).auth.login.mutate({ email: 'sse@localhost', password: 'a password of some length' });
      const live = await fetch(`${base}/trpc/mails.changes?connectionParams=${encodeURIComponent(JSON.stringify({ token }))}`);
      const reader = live.body!.getReader();
      assert.match(new TextDecoder().decode((await reader.read()).value), /event: connected/);
      server.child.kill('SIGTERM');
      assert.equal(await server.exited, 0);
    } finally {
      server.child.kill('SIGKILL');
    }
  });

  test('one server per DATA_DIR: a second is refused with a clear message, and a kill -9 leaves no lock behind', { timeout: 90_000 }, async () => {
    const dataDir = tempDir();
    const env = { DATA_DIR: dataDir, PORT: '0', SMTP_PORT: '0', HOST: '127.0.0.1' };
    const first = await startServer(env);
    try {
      const second = await runScript('src/main.ts', [], env);
      assert.equal(second.code, 1);
      assert.match(second.stderr, new RegExp(`DATA_DIR=${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by another mailtrail server; stop it first`));
      assert.doesNotMatch(second.stderr, /\n\s+at /, 'no stack trace');
      assert.equal((await fetch(`http://127.0.0.1:${first.port}/health`)).status, 200, 'the first one goes on');
    } finally {
      first.child.kill('SIGKILL');
      await first.exited;
    }
    const again = await startServer(env);
    again.child.kill('SIGTERM');
    assert.equal(await again.exited, 0);
  });

  test('a start that fails (the HTTP port is taken) leaves nothing behind: the next start on the same DATA_DIR works', { timeout: 60_000 }, async () => {
    const dataDir = tempDir();
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as AddressInfo).port;
    try {
      const config = loadConfig(testEnv(dataDir, { PORT: String(port) }));
      await assert.rejects(startApp(config, createLogger(config)), (e: Error & { code?: string }) => e.code === 'EADDRINUSE');
      // No projector of the failed start goes on: its leases are free for anyone.
      const store = await openStore(config);
      try {
        for (const view of ['mails', 'mailboxes']) {
          const lease = await store.views.acquireLease(leaseName(view), 'another-instance', 1000);
          assert.ok(lease, `nobody holds the ${view} projector's lease`);
          await store.views.releaseLease(lease);
        }
      } finally {
        await store.close();
      }
    } finally {
      busy.close();
    }
    const config = loadConfig(testEnv(dataDir));
    const app = await startApp(config, createLogger(config));
    assert.equal((await fetch(`http://127.0.0.1:${app.http.port}/health`)).status, 200);
    await app.stop();
  });

  test('a bad setting stops start-up with a message naming it, not a stack trace', async () => {
    const r = await runScript('src/main.ts', [], { DATA_DIR: tempDir(), PORT: '99999' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /PORT/);
    assert.match(r.stderr, /\.env\.example/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
});
