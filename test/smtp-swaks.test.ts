/**
 * A second, independent SMTP client: swaks (Debian package `swaks`; STARTTLS needs
 * `libnet-ssleay-perl`). Delivery, AUTH PLAIN/LOGIN over STARTTLS and implicit TLS, refusals.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { addUser, DOMAIN, PASSWORD, receivedWithSubject, sent, startTestServer, swaks, type TestServer } from './support/smtp.js';

const support = spawnSync('swaks', ['--support'], { encoding: 'utf8' });
if (support.error) throw new Error('swaks is not installed: apt-get install swaks libnet-ssleay-perl');
if (!/=== TLS supported/.test(`${support.stdout}${support.stderr}`)) throw new Error('swaks has no TLS support: apt-get install libnet-ssleay-perl');

let server: TestServer;
before(async () => {
  server = await startTestServer({ SMTPS_PORT: '0' });
  await addUser(server, `bob@${DOMAIN}`);
  await addUser(server, `sub@${DOMAIN}`);
});
after(async () => {
  await server.stop();
});

const base = (): string[] => ['--server', `127.0.0.1:${server.port}`, '--helo', 'swaks.example.org', '--timeout', '20'];

describe('swaks', () => {
  test('delivers to a local mailbox (with PIPELINING)', async () => {
    const r = await swaks([...base(), '--pipeline', '--from', 'alice@example.org', '--to', `bob@${DOMAIN}`, '--header', 'Subject: via swaks', '--body', 'hello from swaks']);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /<-\s+250 2\.6\.0 Ok: queued as /);
    const [e] = await receivedWithSubject(server.store, 'via swaks');
    assert.ok(e, r.out);
    assert.equal(e.data.envelope.helo, 'swaks.example.org');
  });

  for (const method of ['PLAIN', 'LOGIN']) {
    test(`AUTH ${method} over STARTTLS, then a submission to an external recipient`, async () => {
      const subject = `swaks auth ${method}`;
      const r = await swaks([...base(), '--tls', '--auth', method, '--auth-user', `sub@${DOMAIN}`, '--auth-password', PASSWORD, '--from', `sub@${DOMAIN}`, '--to', 'friend@external.example', '--header', `Subject: ${subject}`, '--header', `From: sub@${DOMAIN}`]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /235 2\.7\.0 Authentication successful/);
      const [s] = (await sent(server.store)).filter((e) => e.data.message.subject === subject);
      assert.deepEqual(s?.data.envelope.rcptTo, ['friend@external.example']);
    });
  }

  test('AUTH over implicit TLS (SMTPS)', async () => {
    const r = await swaks(['--server', `127.0.0.1:${server.app.smtp.securePort}`, '--tlsc', '--auth', 'PLAIN', '--auth-user', `sub@${DOMAIN}`, '--auth-password', PASSWORD, '--from', `sub@${DOMAIN}`, '--to', `bob@${DOMAIN}`, '--header', 'Subject: swaks smtps', '--header', `From: sub@${DOMAIN}`]);
    assert.equal(r.code, 0, r.out);
    assert.equal((await receivedWithSubject(server.store, 'swaks smtps')).length, 1);
  });

  test('AUTH is not offered without TLS, so the password is never sent in clear', async () => {
    const r = await swaks([...base(), '--auth', 'PLAIN', '--auth-user', `sub@${DOMAIN}`, '--auth-password', PASSWORD, '--from', `sub@${DOMAIN}`, '--to', 'friend@external.example']);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /did not advertise authentication/i);
    assert.doesNotMatch(r.out, /^ -> AUTH/m);
  });

  test('wrong password: 535 5.7.8', async () => {
    const r = await swaks([...base(), '--tls', '--auth', 'LOGIN', '--auth-user', `sub@${DOMAIN}`, '--auth-password', 'wrong', '--from', `sub@${DOMAIN}`, '--to', `bob@${DOMAIN}`]);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /535 5\.7\.8/);
  });

  test('relaying without AUTH is refused (554 5.7.1)', async () => {
    const r = await swaks([...base(), '--from', 'alice@example.org', '--to', 'victim@external.example']);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /554 5\.7\.1/);
  });

  test('unknown local recipient: 550 5.1.1', async () => {
    const r = await swaks([...base(), '--from', 'alice@example.org', '--to', `nobody@${DOMAIN}`]);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /550 5\.1\.1/);
  });
});
