import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { createClient } from '../src/api/client.js';
import { startTestServer, type TestServer } from './support/smtp.js';

const TOKEN = 'metrics-token-0123456789';
let server: TestServer;
let base = '';

before(async () => {
  server = await startTestServer({ METRICS_TOKEN: TOKEN, JWT_SECRET: 'metrics-test-secret-0123456789-abcdefghij', RELAY_ENABLED: 'true', RELAY_MX_PORT: '1' });
  base = `http://127.0.0.1:${server.app.http.port}`;
});
after(async () => server.stop());

const scrape = async (): Promise<string> => {
  const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  return res.text();
};
const value = (text: string, series: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
};

test('/metrics needs its token when METRICS_TOKEN is set', async () => {
  assert.equal((await fetch(`${base}/metrics`)).status, 401);
  assert.equal((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
});

test('/metrics exposes the series, and they move when mail flows', async () => {
  const before = await scrape();
  for (const name of [
    'mailtrail_smtp_connections_total',
    'mailtrail_smtp_messages_total',
    'mailtrail_smtp_data_bytes_total',
    'mailtrail_store_append_seconds',
    'mailtrail_api_request_seconds',
    'mailtrail_projector_lag_events',
    'mailtrail_projector_lag_seconds',
    'mailtrail_relay_queue_depth',
    'mailtrail_relay_deliveries_total',
  ]) {
    assert.match(before, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is exposed`);
  }
  const anon = createClient(base);
  await anon.auth.register.mutate({ email: 'm@mail.test', password: 'metrics password', name: 'M' });
  const { token } = await anon.auth.login.mutate({ email: 'm@mail.test', password: 'metrics password' });
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.port, secure: false, ignoreTLS: true });
  await transport.sendMail({ from: 'x@example.org', to: 'm@mail.test', subject: 'counted', text: 'hello' });
  await assert.rejects(transport.sendMail({ from: 'x@example.org', to: 'nobody@mail.test', subject: 'refused', text: 'hello' }));
  transport.close();
  const m = createClient(base, { token });
  const { id } = await m.mails.createDraft.mutate({ to: ['far@remote.example'], subject: 'queued', text: 'x' });
  await m.mails.send.mutate({ id });
  await m.mails.list.query({ folder: 'sent' });

  const after = await scrape();
  assert.ok(value(after, 'mailtrail_smtp_connections_total') > value(before, 'mailtrail_smtp_connections_total'));
  assert.ok(value(after, 'mailtrail_smtp_messages_total{outcome="accepted",reason="ok"}') >= 1);
  assert.ok(value(after, 'mailtrail_smtp_data_bytes_total') > value(before, 'mailtrail_smtp_data_bytes_total'));
  assert.ok(value(after, 'mailtrail_store_append_seconds_count') > value(before, 'mailtrail_store_append_seconds_count'));
  assert.ok(value(after, 'mailtrail_api_request_seconds_count{procedure="mails.send",outcome="ok"}') >= 1);
  assert.ok(value(after, 'mailtrail_api_request_seconds_count{procedure="auth.register",outcome="ok"}') >= 1);
  assert.equal(value(after, 'mailtrail_projector_lag_events{projector="mails"}'), 0, 'the views caught up before the listing answered');
  assert.match(after, /^mailtrail_relay_queue_depth \d+$/m);
});
