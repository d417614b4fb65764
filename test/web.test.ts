/**
 * The web client end to end: Debian's Chromium driven by playwright-core against a real mailtrail
 * (API, SMTP, projectors, relay) started in-process on a temporary store, with a relay sink on
 * loopback standing for the outside world. Screenshots of the main screens go to docs/screenshots.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { simpleParser } from 'mailparser';
import type { Browser, BrowserContext, Frame, Page } from 'playwright-core';
import type { UserDoc } from '../projections/users.js';
import { addAlias } from '../src/accounts/aliases.js';
import { createClient } from '../src/api/client.js';
import { signToken } from '../src/api/tokens.js';
import { CONTENT_SECURITY_POLICY, ensureWebBuild } from '../src/web/serve.js';
import { relayThrough, startSink, type RelaySink } from './support/relay-sink.js';
import { startTestServer, transport, type TestServer } from './support/smtp.js';
import { launchChromium, screenshot, watchedPage, type Watched } from './support/web-browser.js';
import { hostileHtml, IMAGE_PATHS, startHitCounter, type HitCounter } from './support/web-hostile.js';

const SECRET = 'web-test-secret-that-is-long-enough-for-hs256-0123456789';
const PASSWORD = 'correct horse battery staple';

let server: TestServer;
let sink: RelaySink;
let counter: HitCounter;
let browser: Browser;
let context: BrowserContext;
let alice: Watched;
let base = '';
/** The mail from the outside that the reading and reply tests use. */
let firstMailId = '';
let firstMessageId = '';

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function registerInUi(page: Page, name: string, email: string, shot?: string): Promise<void> {
  await page.goto(`${base}/register`);
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  if (shot) await screenshot(page, shot);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
}

async function signInUi(page: Page, email: string): Promise<void> {
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
}

/** The sandboxed frame that shows the open mail's HTML. */
async function mailFrame(page: Page): Promise<Frame> {
  const handle = await page.locator('iframe.mail-frame').elementHandle();
  assert.ok(handle, 'the mail is shown in an iframe');
  const frame = await handle.contentFrame();
  assert.ok(frame);
  await frame.waitForLoadState('load');
  return frame;
}

/** Evaluates an expression in the page (a string: the test's own types have no DOM). */
const js = (page: Page, expression: string): Promise<unknown> => page.evaluate(expression);

const rowWith = (page: Page, text: string) => page.getByTestId('mail-row').filter({ hasText: text });

before(async () => {
  await ensureWebBuild({ log: (m) => console.log(`# ${m}`) });
  sink = await startSink();
  counter = await startHitCounter();
  server = await startTestServer({
    JWT_SECRET: SECRET,
    JWT_EXPIRES_IN: '1h',
    MAX_ATTACHMENT_SIZE: String(2 * 1024 * 1024),
    ...relayThrough(sink),
  });
  base = `http://127.0.0.1:${server.app.http.port}`;
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true, locale: 'en-GB', timezoneId: 'UTC' });
  context.setDefaultTimeout(20_000);
  alice = await watchedPage(context);
});

after(async () => {
  await context?.close();
  await browser?.close();
  await server?.stop();
  await sink?.close();
  await counter?.close();
});

describe('web client', () => {
  test('the app is served at / with its security headers; client routes fall back to index.html', async () => {
    for (const path of ['/', '/inbox', '/mail/00000000-0000-0000-0000-000000000000']) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 200, path);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
      assert.equal(res.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
      assert.equal(res.headers.get('cache-control'), 'no-cache');
      assert.match(await res.text(), /<div id="root">/);
    }
    const csp = CONTENT_SECURITY_POLICY;
    for (const directive of ["default-src 'self'", "script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "frame-src 'none'"]) assert.ok(csp.includes(directive), directive);
    const html = await (await fetch(`${base}/`)).text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, 'index.html loads a hashed script');
    const js = await fetch(`${base}${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('cache-control') ?? '', /immutable/);
    assert.match(js.headers.get('content-type') ?? '', /javascript/);
    assert.equal((await fetch(`${base}/assets/missing-0123456789.js`)).status, 404, 'a missing asset is a 404, not the app');
    assert.equal((await fetch(`${base}/..%2f..%2fpackage.json`)).status, 404);
    assert.notEqual((await fetch(`${base}/trpc/auth.me`)).headers.get('content-type'), 'text/html; charset=utf-8', '/trpc stays the API');
    const etag = js.headers.get('etag');
    assert.ok(etag);
    assert.equal((await fetch(`${base}${asset}`, { headers: { 'if-none-match': etag } })).status, 304);
    assert.equal((await fetch(`${base}${asset}`, { headers: { 'accept-encoding': 'gzip' } })).headers.get('content-encoding'), 'gzip');
  });

  test('ensureWebBuild builds a missing dist, then leaves a current one alone', async () => {
    const dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'mailtrail-web-')), 'dist');
    try {
      const first = await ensureWebBuild({ distDir: dir });
      assert.equal(first.built, true);
      assert.match(readFileSync(path.join(dir, 'index.html'), 'utf8'), /<script type="module" crossorigin src="\/assets\/index-[\w-]+\.js"><\/script>/);
      assert.doesNotMatch(readFileSync(path.join(dir, 'index.html'), 'utf8'), /<script>|<script type="module">[^<]/, 'no inline script (the CSP would block it)');
      assert.equal((await ensureWebBuild({ distDir: dir })).built, false);
    } finally {
      rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });

  test('register, sign out, sign in; the session survives a reload', async () => {
    const { page } = alice;
    await page.goto(`${base}/`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await screenshot(page, 'login');
    await registerInUi(page, 'Alice Example', 'alice@mail.test', 'register');
    await page.getByText('alice@mail.test').first().waitFor();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.getByText('You have signed out.').waitFor();
    assert.equal(await js(page, 'localStorage.length'), 0, 'nothing of the session is left behind');
    await page.getByLabel('Password').fill('wrong password');
    await page.getByLabel('Email address').fill('alice@mail.test');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'wrong email or password' }).waitFor();
    await signInUi(page, 'alice@mail.test');
    await page.reload();
    await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1);
  });

  test('a session ends cleanly: expired token and one the server refuses both go back to login with a message', async () => {
    // Its own context: storage is per context, and the app follows sign-ins and -outs of other tabs.
    const other = await browser.newContext();
    const page = (await watchedPage(other)).page;
    const me = await createClient(base, { token: await (await createClient(base).auth.login.mutate({ email: 'alice@mail.test', password: PASSWORD })).token }).auth.me.query();
    const { passwordHash } = (await server.app.store.views.get('users', me.id)) as UserDoc;
    // Signed as the server signs, with a chosen lifetime and key.
    const token = (exp: number, secret = SECRET) => signToken({ ...me, passwordHash }, new TextEncoder().encode(secret), exp);
    const store = async (t: string) => {
      await page.goto(`${base}/login`);
      await js(page, `localStorage.setItem('mailtrail.session', ${JSON.stringify(JSON.stringify({ token: t, user: { id: me.id, email: me.email, name: me.name } }))})`);
    };
    // Valid for a few seconds: the app works, then its own timer ends the session.
    await store(await token(Math.floor(Date.now() / 1000) + 4));
    await page.goto(`${base}/inbox`);
    await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    await page.getByText('Your session has expired. Sign in again.').waitFor({ timeout: 15_000 });
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    // Not expired by its claims, but the server does not accept it (another key: as after a key rotation).
    await store(await token(Math.floor(Date.now() / 1000) + 3600, 'another-secret-another-secret-another-secret-0123'));
    await page.goto(`${base}/sent`);
    await page.getByText('Your session has expired. Sign in again.').waitFor();
    await screenshot(page, 'session-expired');
    assert.equal(await js(page, "localStorage.getItem('mailtrail.session')"), null);
    await other.close();
  });

  test('a mail sent over SMTP appears live in the inbox, with the unread count', async () => {
    const { page } = alice;
    await page.goto(`${base}/inbox`);
    await page.locator('.live-live').waitFor();
    await js(page, 'window.__noReload = true');
    const info = await transport(server.port, { ignoreTLS: true }).sendMail({
      from: 'Bob Outside <bob@example.org>',
      to: 'Alice Example <alice@mail.test>',
      subject: 'Quarterly numbers',
      text: 'Hi Alice,\n\nthe numbers are attached.\n\nBob',
      html: '<p>Hi Alice,</p><p>the <b>numbers</b> are attached.</p><p>Bob</p>',
      attachments: [{ filename: 'numbers.csv', content: 'quarter,revenue\nQ1,100\n', contentType: 'text/csv' }],
      messageId: '<quarterly-1@example.org>',
    });
    assert.ok(info.accepted.length);
    const row = rowWith(page, 'Quarterly numbers');
    await row.waitFor();
    assert.equal(await js(page, 'window.__noReload'), true, 'no reload happened');
    assert.match((await row.getAttribute('class')) ?? '', /unread/);
    await row.getByText('Bob Outside').waitFor();
    await row.locator('.attachment-mark').waitFor();
    await page.getByTestId('count-inbox').filter({ hasText: '1' }).waitFor();
    firstMailId = (await row.getAttribute('data-mail-id')) ?? '';
    firstMessageId = 'quarterly-1@example.org';
    await screenshot(page, 'inbox');
  });

  test('open the mail: headers, body, sender checks, attachment download, history; mark unread and read', async () => {
    const { page } = alice;
    await rowWith(page, 'Quarterly numbers').getByRole('link').click();
    await page.getByRole('heading', { name: 'Quarterly numbers', level: 1 }).waitFor();
    assert.equal(new URL(page.url()).pathname, `/mail/${firstMailId}`);
    await page.getByText('Bob Outside <bob@example.org>').waitFor();
    const frame = await mailFrame(page);
    assert.match(await frame.locator('body').innerText(), /the numbers are attached/);
    await page.getByText(/SPF: /).waitFor();
    await page.getByText(/DMARC: /).waitFor();
    // Opening marked it read: the unread count is gone and the history says so.
    await page.getByTestId('count-inbox').waitFor({ state: 'detached' });
    const history = page.locator('.timeline');
    await history.locator('[data-event-type="MailReceived"]').waitFor();
    await history.locator('[data-event-type="MailRead"]').waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: /Download numbers\.csv/ }).click()]);
    assert.equal(download.suggestedFilename(), 'numbers.csv');
    assert.equal(readFileSync((await download.path())!, 'utf8'), 'quarter,revenue\nQ1,100\n');
    const [source] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download original' }).click()]);
    assert.equal(source.suggestedFilename(), `${firstMailId}.eml`);
    const eml = readFileSync((await source.path())!, 'utf8');
    assert.match(eml, /^Authentication-Results: [^\r\n]+/);
    assert.match(eml, /\r\nSubject: Quarterly numbers\r\n/);
    await page.evaluate('window.scrollTo(0, 0)');
    await screenshot(page, 'mail');
    await history.scrollIntoViewIfNeeded();
    await screenshot(page, 'mail-history');
    await page.getByRole('button', { name: 'Mark as unread' }).click();
    await page.getByTestId('count-inbox').filter({ hasText: '1' }).waitFor();
    await history.locator('[data-event-type="MailUnread"]').waitFor();
    await page.getByRole('button', { name: 'Mark as read' }).click();
    await page.getByTestId('count-inbox').waitFor({ state: 'detached' });
    await page.getByRole('button', { name: 'Mark as unread' }).waitFor();
  });

  test('reply: quoted original, In-Reply-To/References; in Sent its status moves from sending to sent', async () => {
    const { page } = alice;
    await page.goto(`${base}/mail/${firstMailId}`);
    await page.getByRole('link', { name: 'Reply', exact: true }).click();
    await page.getByRole('heading', { name: 'Reply' }).waitFor();
    assert.equal(await page.getByLabel('To', { exact: true }).inputValue(), 'Bob Outside <bob@example.org>');
    assert.equal(await page.getByLabel('Subject', { exact: true }).inputValue(), 'Re: Quarterly numbers');
    // The original is HTML: the reply is formatted, the original quoted as it was (as far as the editor keeps formatting).
    const body = page.getByRole('textbox', { name: 'Message' });
    assert.match(await body.innerHTML(), /wrote:<\/div><blockquote><p>Hi Alice,<\/p><p>the <b>numbers<\/b> are attached\.<\/p><p>Bob<\/p><\/blockquote>$/);
    await page.keyboard.type('Thanks Bob, looks good.');
    await page.getByText(/Draft saved at/).waitFor();
    await screenshot(page, 'compose-reply');
    // The first attempt is refused for now (451) and the retry waits in the sink until the test has seen "Sending".
    sink.rcptPolicy = (rcpt, attempt) => (rcpt === 'bob@example.org' && attempt === 1 ? 451 : 250);
    let hold = true;
    sink.holdPolicy = () => hold;
    await page.getByRole('button', { name: 'Send' }).click();
    await page.getByRole('heading', { name: 'Sent', level: 1 }).waitFor();
    await page.getByText('Message sent.').waitFor();
    const row = rowWith(page, 'Re: Quarterly numbers');
    await row.getByText('Sending').waitFor();
    await until('the sink to get the reply', () => sink.deliveries.some((d) => d.rcptTo.includes('bob@example.org')));
    hold = false;
    sink.releaseHeld();
    await row.getByText('Sent', { exact: true }).waitFor();
    await screenshot(page, 'sent');
    const delivered = sink.deliveries.find((d) => d.rcptTo.includes('bob@example.org'))!;
    const parsed = await simpleParser(delivered.raw);
    assert.equal(parsed.inReplyTo, `<${firstMessageId}>`);
    assert.deepEqual([parsed.references].flat(), [`<${firstMessageId}>`]);
    assert.match(parsed.text ?? '', /^Thanks Bob, looks good\./);
    assert.match(parsed.text ?? '', /wrote:\n> Hi Alice,\n> the numbers are attached\.\n> Bob\s*$/, 'the plain-text part quotes the plain-text way');
    assert.match(String(parsed.html), /<blockquote><p>Hi Alice,<\/p>/);
    sink.rcptPolicy = () => 250;
    await row.getByRole('link').click();
    const timeline = page.locator('.timeline');
    await timeline.locator('[data-event-type="MailDelivered"]').waitFor();
    const types = await timeline.locator('[data-event-type]').evaluateAll((els) => els.map((e) => e.getAttribute('data-event-type')));
    assert.deepEqual(
      types.filter((t) => t !== 'DraftUpdated'),
      ['DraftCreated', 'MailSent', 'MailDeliveryFailed', 'MailDelivered'],
      'the audit trail of the reply: drafted, sent, refused once, delivered',
    );
    // Anchored: the actor line (a relay id with random hex) may contain "451" too.
    await timeline.locator('[data-event-type="MailDeliveryFailed"]').getByText(/^451 4\.3\.0 /).waitFor();
    await timeline.scrollIntoViewIfNeeded();
    await screenshot(page, 'sent-history');
  });

  test('compose with an attachment: the draft autosaves, reopens from Drafts, and sends', async () => {
    const { page } = alice;
    await page.getByRole('link', { name: 'Compose' }).click();
    await page.getByRole('heading', { name: 'New message' }).waitFor();
    await page.getByLabel('To', { exact: true }).fill('carol@example.net');
    await page.getByRole('button', { name: 'Cc/Bcc' }).click();
    await page.getByLabel('Cc', { exact: true }).fill('Dan <dan@example.net>');
    await page.getByLabel('Subject', { exact: true }).fill('Plans with a picture');
    await page.getByLabel('Message', { exact: true }).fill('See the attached plan.');
    await page.getByText(/^Up to .+ per file\.$/).waitFor();
    await page.locator('input[type=file]').setInputFiles({ name: 'plan.txt', mimeType: 'text/plain', buffer: Buffer.from('the plan: ship it') });
    await page.getByRole('button', { name: 'Remove plan.txt' }).waitFor();
    await page.getByText(/Draft saved at/).waitFor();
    await screenshot(page, 'compose');
    await page.getByRole('link', { name: /^Drafts/ }).click();
    const draftRow = rowWith(page, 'Plans with a picture');
    await draftRow.locator('.attachment-mark').waitFor();
    await draftRow.getByRole('link').click();
    await page.getByRole('heading', { name: 'Edit draft' }).waitFor();
    assert.equal(await page.getByLabel('To', { exact: true }).inputValue(), 'carol@example.net');
    assert.equal(await page.getByLabel('Cc', { exact: true }).inputValue(), 'Dan <dan@example.net>');
    assert.equal(await page.getByLabel('Message', { exact: true }).inputValue(), 'See the attached plan.');
    await page.getByRole('button', { name: 'Remove plan.txt' }).waitFor();
    await page.getByLabel('Delivery receipt').check();
    await page.getByRole('button', { name: 'Send' }).click();
    await page.getByText('Message sent.').waitFor();
    await until('the sink to get the mail with the attachment', () => sink.deliveries.some((d) => d.rcptTo.includes('carol@example.net')));
    const events = await server.app.store.events.readAll({ after: 0, limit: 10_000 });
    const sentEvent = events.find((e) => e.type === 'MailSent' && e.data.message.subject === 'Plans with a picture');
    assert.deepEqual(sentEvent?.type === 'MailSent' && sentEvent.data.dsn?.recipients.map((r) => [r.address, r.notify]), [['carol@example.net', ['SUCCESS', 'FAILURE']], ['dan@example.net', ['SUCCESS', 'FAILURE']]], 'the receipt was asked for');
    const parsed = await simpleParser(sink.deliveries.find((d) => d.rcptTo.includes('carol@example.net'))!.raw);
    assert.equal(parsed.subject, 'Plans with a picture');
    assert.equal(parsed.attachments[0]?.filename, 'plan.txt');
    assert.equal(parsed.attachments[0]?.content.toString(), 'the plan: ship it');
    await rowWith(page, 'Plans with a picture').getByText('Sent', { exact: true }).waitFor();
    await page.getByRole('link', { name: /^Drafts/ }).click();
    await page.getByText('No messages in Drafts.').waitFor();
  });

  test('compose formatted: bold, a list and a link go out as HTML beside a plain-text part; the draft reopens formatted; pasted and stored HTML is cleaned', async () => {
    const { page } = alice;
    const api = createClient(base, { token: (await createClient(base).auth.login.mutate({ email: 'alice@mail.test', password: PASSWORD })).token });
    await page.getByRole('link', { name: 'Compose' }).click();
    await page.getByRole('heading', { name: 'New message' }).waitFor();
    await page.getByLabel('To', { exact: true }).fill('fay@example.net');
    await page.getByLabel('Subject', { exact: true }).fill('Formatted plans');
    await page.getByLabel('Message', { exact: true }).fill('First line');
    await page.getByRole('button', { name: 'Formatting' }).click();
    const editor = page.getByRole('textbox', { name: 'Message' });
    await editor.click();
    await page.keyboard.press('Control+End');
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Bold' }).click();
    await page.keyboard.type('very bold');
    await page.getByRole('button', { name: 'Bold' }).click();
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Bulleted list' }).click();
    await page.keyboard.type('one');
    await page.keyboard.press('Enter');
    await page.keyboard.type('two');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Enter');
    // Pasted HTML from elsewhere: what loads or runs is dropped, a plain link stays.
    await js(
      page,
      `(() => { const dt = new DataTransfer(); dt.setData('text/html', '<img src="/x.png" onerror="window.pwned = 1"><a href="javascript:window.pwned = 2">bad link</a> <a href="https://example.org/docs" style="color:red">the docs</a><script>window.pwned = 3</script><pre>function f() {\\n\\n\\n  return 1;\\n}</pre>'); document.querySelector('.editor').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true })); })()`,
    );
    const html = await editor.innerHTML();
    assert.doesNotMatch(html, /<img|onerror|javascript:|<script|style=/i, html);
    assert.match(html, /bad link <a href="https:\/\/example\.org\/docs">the docs<\/a>/, 'a link without a safe address is its text');
    assert.equal(await js(page, 'window.pwned'), undefined);
    const draftHtml = async (): Promise<string> => {
      const draft = (await api.mails.list.query({ folder: 'drafts' })).items.find((m) => m.subject === 'Formatted plans');
      return draft ? ((await api.mails.get.query({ id: draft.id })).html ?? '') : '';
    };
    await until('the draft to be saved with the pasted link', async () => (await draftHtml()).includes('the docs'));
    await page.getByRole('link', { name: /^Drafts/ }).click();
    await rowWith(page, 'Formatted plans').getByRole('link').click();
    await page.getByRole('heading', { name: 'Edit draft' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Formatting' }).getAttribute('aria-pressed'), 'true', 'reopens formatted');
    assert.match(await page.getByRole('textbox', { name: 'Message' }).innerHTML(), /<b>very bold<\/b>/);
    await screenshot(page, 'compose-formatted');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.getByText('Message sent.').waitFor();
    await until('the sink to get the formatted mail', () => sink.deliveries.some((d) => d.rcptTo.includes('fay@example.net')));
    const parsed = await simpleParser(sink.deliveries.find((d) => d.rcptTo.includes('fay@example.net'))!.raw);
    assert.match(String(parsed.html), /<b>very bold<\/b>/);
    assert.match(String(parsed.html), /<ul><li>one<\/li><li>two<\/li><\/ul>/);
    assert.match(parsed.text ?? '', /^First line\nvery bold\n- one\n- two\n/);
    assert.match(parsed.text ?? '', /the docs <https:\/\/example\.org\/docs>/, 'the plain-text part keeps the link’s address');
    assert.match(parsed.text ?? '', /function f\(\) \{\n\n\n {2}return 1;\n\}/, '… and the lines, blank ones too, and spaces of preformatted text');

    // A draft whose stored HTML carries an image with a handler (made through the API) opens cleaned.
    const { id } = await api.mails.createDraft.mutate({ to: [], subject: 'stored html', html: '<p><b>kept</b></p><img src="https://tracker.example/x.png" onerror="window.pwned = 4"><iframe src="/"></iframe>' });
    await page.goto(`${base}/compose/${id}`);
    await page.getByRole('heading', { name: 'Edit draft' }).waitFor();
    const stored = await page.getByRole('textbox', { name: 'Message' }).innerHTML();
    assert.match(stored, /<b>kept<\/b>/);
    assert.doesNotMatch(stored, /<img|<iframe|onerror/i, stored);
    assert.equal(await js(page, 'window.pwned'), undefined);
    await api.mails.deleteDraft.mutate({ id });
    await page.getByRole('link', { name: /^Inbox/ }).click();
  });

  test('with an alias, compose offers it as From; the mail goes out from it; a reply to mail sent to it answers from it', async () => {
    const { page } = alice;
    const meta = { correlationId: 'web-test', causationId: null, actor: { kind: 'system' as const, id: 'test' } };
    await addAlias(server.store, 'mail.test', { address: 'hello@mail.test', mailbox: 'alice@mail.test' }, meta);
    await page.getByRole('link', { name: 'Compose' }).click();
    await page.getByRole('heading', { name: 'New message' }).waitFor();
    const from = page.getByLabel('From', { exact: true });
    await from.locator('option', { hasText: 'hello@mail.test' }).waitFor({ state: 'attached' });
    assert.deepEqual(await from.locator('option').allTextContents(), ['alice@mail.test', 'hello@mail.test']);
    await from.selectOption('hello@mail.test');
    await page.getByLabel('To', { exact: true }).fill('gus@example.net');
    await page.getByLabel('Subject', { exact: true }).fill('From the alias');
    await page.getByLabel('Message', { exact: true }).fill('hi');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.getByText('Message sent.').waitFor();
    await until('the sink to get the mail from the alias', () => sink.deliveries.some((d) => d.rcptTo.includes('gus@example.net')));
    const delivered = sink.deliveries.find((d) => d.rcptTo.includes('gus@example.net'))!;
    assert.equal(delivered.mailFrom, 'hello@mail.test');
    assert.equal((await simpleParser(delivered.raw)).from?.value[0]?.address, 'hello@mail.test');

    await transport(server.port, { ignoreTLS: true }).sendMail({ from: 'Gus <gus@example.net>', to: 'hello@mail.test', subject: 'Question for hello', text: 'hello?', messageId: '<hello-q@example.net>' });
    await page.getByRole('link', { name: /^Inbox/ }).click();
    await rowWith(page, 'Question for hello').getByRole('link').click();
    await page.getByRole('link', { name: 'Reply', exact: true }).click();
    await page.getByRole('heading', { name: 'Reply' }).waitFor();
    assert.equal(await page.getByLabel('From', { exact: true }).inputValue(), 'hello@mail.test', 'answers from the address it was sent to');
    await page.getByRole('button', { name: 'Discard' }).click();
    await page.getByText('Draft discarded.').waitFor();
    assert.deepEqual(alice.dialogs.splice(0), ['confirm: Discard this draft?'], 'only the discard question was asked (later tests count dialogs)');
  });

  test('forward: the original below a header, its attachment carried over, References set', async () => {
    const { page } = alice;
    await page.goto(`${base}/mail/${firstMailId}`);
    await page.getByRole('link', { name: 'Forward' }).click();
    await page.getByRole('heading', { name: 'Forward' }).waitFor();
    assert.equal(await page.getByLabel('Subject', { exact: true }).inputValue(), 'Fwd: Quarterly numbers');
    await page.getByRole('button', { name: 'Remove numbers.csv' }).waitFor();
    await page.getByLabel('To', { exact: true }).fill('erin@example.net');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.getByText('Message sent.').waitFor();
    await until('the sink to get the forward', () => sink.deliveries.some((d) => d.rcptTo.includes('erin@example.net')));
    const parsed = await simpleParser(sink.deliveries.find((d) => d.rcptTo.includes('erin@example.net'))!.raw);
    assert.equal(parsed.subject, 'Fwd: Quarterly numbers');
    assert.match(parsed.text ?? '', /---------- Forwarded message ----------\nFrom: Bob Outside <bob@example\.org>/);
    assert.match(parsed.text ?? '', /the numbers are attached\./);
    assert.equal(parsed.attachments[0]?.filename, 'numbers.csv');
    assert.equal(parsed.attachments[0]?.content.toString(), 'quarter,revenue\nQ1,100\n');
    assert.equal(parsed.inReplyTo, undefined);
    assert.deepEqual([parsed.references].flat(), [`<${firstMessageId}>`]);
  });

  test('a hostile HTML mail runs nothing and loads nothing remote until images are allowed, and then only images', async () => {
    const { page, dialogs } = alice;
    await transport(server.port, { ignoreTLS: true }).sendMail({
      from: 'Mallory <mallory@evil.example>',
      to: 'alice@mail.test',
      subject: 'Action required: verify your account',
      text: 'plain part',
      html: hostileHtml(counter.base),
    });
    await page.goto(`${base}/inbox`);
    await rowWith(page, 'Action required').getByRole('link').click();
    await page.getByRole('heading', { name: 'Action required: verify your account' }).waitFor();
    const iframe = page.locator('iframe.mail-frame');
    const sandbox = (await iframe.getAttribute('sandbox')) ?? '';
    assert.ok(!/allow-scripts|allow-same-origin|allow-forms|allow-top-navigation|allow-modals/.test(sandbox), `sandbox="${sandbox}"`);
    const frame = await mailFrame(page);
    await frame.locator('#hostile-title').waitFor();
    // Let anything that could fire (onerror, autofocus, refresh, lazy loads) have its chance.
    await page.waitForTimeout(1500);
    await screenshot(page, 'hostile-mail');
    assert.deepEqual([...counter.hits], [], 'the mail reached nothing on the network');
    assert.equal(await js(page, 'window.__pwned'), undefined);
    assert.deepEqual([...dialogs], []);
    const srcdoc = (await iframe.getAttribute('srcdoc')) ?? '';
    for (const bad of ['<script', 'onerror', 'onload', 'onfocus', 'onclick', '<form', '<input', '<iframe', '<object', '<embed', '<base', '<link', 'http-equiv="refresh"', 'javascript:', '@import', 'srcset', 'ping=']) {
      assert.ok(!srcdoc.toLowerCase().includes(bad.toLowerCase()), `srcdoc contains ${bad}`);
    }
    assert.match(srcdoc, /Content-Security-Policy" content="default-src 'none'; img-src data:;/);
    assert.equal(await page.locator('.remote-banner').count(), 1);
    const safe = frame.locator('#safe-link');
    assert.equal(await safe.getAttribute('target'), '_blank');
    assert.equal(await safe.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await frame.locator('#js-link').getAttribute('href'), null);
    // The frame's origin is opaque: the session token in the app's storage is out of its reach.
    assert.equal(await frame.evaluate('window.origin').catch(() => 'null'), 'null');

    await page.getByRole('button', { name: 'Show remote images' }).click();
    const allowed = await mailFrame(page);
    await allowed.locator('#hostile-title').waitFor();
    await until('the allowed remote images to load', () => counter.count('/img-tracker.png') > 0);
    await page.waitForTimeout(1000);
    const paths = [...new Set(counter.hits.map((h) => h.split(' ')[1]!))];
    assert.deepEqual(paths.filter((p) => !IMAGE_PATHS.includes(p)), [], `only images load once allowed: ${paths.join(', ')}`);
    assert.ok(counter.hits.every((h) => h.startsWith('GET ')), 'no form was posted');
    assert.equal(await js(page, 'window.__pwned'), undefined);
    assert.deepEqual([...dialogs], []);
    // Allowing is per message: another mail starts blocked again.
    await page.goto(`${base}/mail/${firstMailId}`);
    await page.getByRole('heading', { name: 'Quarterly numbers', level: 1 }).waitFor();
    await page.goBack();
    await page.getByRole('button', { name: 'Show remote images' }).waitFor();
  });

  test("another user's mail id in the URL shows not found, and nothing of it", async () => {
    const bobContext = await browser.newContext();
    const bob = await watchedPage(bobContext);
    await registerInUi(bob.page, 'Bob Inside', 'bob@mail.test');
    await bob.page.goto(`${base}/mail/${firstMailId}`);
    await bob.page.getByRole('heading', { name: 'Message not found' }).waitFor();
    assert.equal(await bob.page.getByText('Quarterly numbers').count(), 0);
    await screenshot(bob.page, 'not-found');
    await bob.page.goto(`${base}/mail/not-a-mail-id`);
    await bob.page.getByRole('heading', { name: 'Message not found' }).waitFor();
    await bob.page.goto(`${base}/compose/${firstMailId}`);
    await bob.page.getByRole('heading', { name: 'Message not found' }).waitFor();
    await bobContext.close();
  });

  test('keyboard only: sign in, open a mail, reply, without a mouse', async () => {
    const keyboard = await browser.newContext();
    const { page } = await watchedPage(keyboard);
    await page.goto(`${base}/login`);
    await page.getByLabel('Email address').waitFor();
    await page.keyboard.type('alice@mail.test');
    await page.keyboard.press('Tab');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    const focused = () => js(page, "document.activeElement?.textContent?.trim() ?? ''");
    assert.equal(await focused(), 'Inbox', 'the page heading has focus');
    // Tab through to the first message and open it with Enter.
    let guard = 0;
    while (!(await js(page, `!!document.activeElement?.closest('[data-testid="mail-row"]')`))) {
      await page.keyboard.press('Tab');
      assert.ok(++guard < 40, 'a message row is reachable with Tab');
    }
    await page.keyboard.press('Enter');
    await page.locator('article.mail h1').waitFor();
    guard = 0;
    while ((await focused()) !== 'Reply') {
      await page.keyboard.press('Shift+Tab');
      assert.ok(++guard < 40, 'Reply is reachable with Tab');
    }
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Reply' }).waitFor();
    assert.equal(await js(page, "document.activeElement?.getAttribute('aria-label') ?? document.activeElement?.getAttribute('role')"), 'textbox', 'a reply starts in the message body');
    await keyboard.close();
  });

  test('fits a phone screen', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, locale: 'en-GB', timezoneId: 'UTC' });
    const { page } = await watchedPage(phone);
    await page.goto(`${base}/login`);
    await signInUi(page, 'alice@mail.test');
    const overflow = () => js(page, 'document.documentElement.scrollWidth - document.documentElement.clientWidth');
    assert.equal(await overflow(), 0, 'no sideways scrolling in the list');
    await screenshot(page, 'phone-inbox');
    await rowWith(page, 'Quarterly numbers').getByRole('link').click();
    await page.getByRole('heading', { name: 'Quarterly numbers', level: 1 }).waitFor();
    await mailFrame(page);
    assert.equal(await overflow(), 0, 'no sideways scrolling on a mail');
    await screenshot(page, 'phone-mail');
    await phone.close();
  });

  test('when the live stream is cut, new mail still arrives by polling', async () => {
    const { page } = await watchedPage(context);
    await page.route('**/trpc/mails.changes**', (route) => route.abort('connectionrefused'));
    await page.goto(`${base}/inbox`);
    await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    await page.locator('.live-polling').waitFor();
    await transport(server.port, { ignoreTLS: true }).sendMail({ from: 'poller@example.org', to: 'alice@mail.test', subject: 'Arrives by polling', text: 'polled' });
    await rowWith(page, 'Arrives by polling').waitFor({ timeout: 30_000 });
    await page.unroute('**/trpc/mails.changes**');
    await page.close();
  });

  test("an HTML mail's own images (cid:) show inline as data: URLs; a cid: it lacks and remote images do not load", async () => {
    const { page } = alice;
    // A 1×1 PNG.
    const dot = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
    await transport(server.port, { ignoreTLS: true }).sendMail({
      from: 'Designer <design@example.org>',
      to: 'alice@mail.test',
      subject: 'Inline picture',
      html: `<p>Here: <img id="own" src="cid:dot@example.org" alt="dot"> <img id="missing" src="cid:nothing@example.org" alt="missing"> <img id="remote" src="${counter.base}/inline-remote.png" alt="remote"></p>`,
      attachments: [{ filename: 'dot.png', content: dot, contentType: 'image/png', cid: 'dot@example.org' }],
    });
    await page.goto(`${base}/inbox`);
    await rowWith(page, 'Inline picture').getByRole('link').click();
    await page.getByRole('heading', { name: 'Inline picture', level: 1 }).waitFor();
    const frame = await mailFrame(page);
    await frame.waitForFunction("document.getElementById('own')?.naturalWidth === 1");
    const srcs = await Promise.all(['own', 'missing', 'remote'].map((id) => frame.locator(`#${id}`).getAttribute('src')));
    assert.match(srcs[0]!, /^data:image\/png;base64,/);
    assert.deepEqual(srcs.slice(1), [null, null]);
    await page.getByRole('note').filter({ hasText: '1 remote image was blocked' }).waitFor();
    assert.ok(!counter.hits.some((h) => h.includes('/inline-remote.png')), 'the remote image was not fetched');
  });

  test('trash: move an open mail to Trash with the keyboard, find it there, restore it to the inbox', async () => {
    const { page } = alice;
    await page.goto(`${base}/inbox`);
    await transport(server.port, { ignoreTLS: true }).sendMail({ from: 'Offers <offers@example.org>', to: 'alice@mail.test', subject: 'Weekly offers', text: 'Buy now.' });
    await rowWith(page, 'Weekly offers').getByRole('link').click();
    await page.getByRole('heading', { name: 'Weekly offers', level: 1 }).waitFor();
    await page.getByRole('button', { name: 'Move to trash' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    await page.getByRole('status').filter({ hasText: 'Message moved to Trash.' }).waitFor();
    await rowWith(page, 'Weekly offers').waitFor({ state: 'detached' });
    await page.getByTestId('count-trash').filter({ hasText: '1' }).waitFor();
    await page.getByRole('link', { name: /^Trash/ }).click();
    await page.getByRole('heading', { name: 'Trash', level: 1 }).waitFor();
    const row = rowWith(page, 'Weekly offers');
    await row.getByText('Offers', { exact: true }).waitFor();
    await screenshot(page, 'trash');
    await row.getByRole('link').click();
    await page.getByRole('button', { name: 'Restore to Inbox' }).click();
    await page.getByRole('button', { name: 'Move to trash' }).waitFor();
    await page.getByTestId('count-trash').waitFor({ state: 'detached' });
    const history = page.locator('.timeline');
    await history.locator('[data-event-type="MailTrashed"]').waitFor();
    await history.locator('[data-event-type="MailRestored"]').waitFor();
    await page.getByRole('link', { name: '← Inbox' }).click();
    await rowWith(page, 'Weekly offers').waitFor();
  });

  test('delete for good: one mail from its page after confirming (a dismissed dialog deletes nothing), then Empty trash', async () => {
    const { page } = alice;
    const send = transport(server.port, { ignoreTLS: true });
    for (const subject of ['Old news 1', 'Old news 2', 'Old news 3']) await send.sendMail({ from: 'news@example.org', to: 'alice@mail.test', subject, text: subject });
    await page.goto(`${base}/inbox`);
    for (const subject of ['Old news 1', 'Old news 2', 'Old news 3']) {
      await rowWith(page, subject).getByRole('link').click();
      await page.getByRole('button', { name: 'Move to trash' }).click();
      await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    }
    await page.getByTestId('count-trash').filter({ hasText: '3' }).waitFor();
    await page.getByRole('link', { name: /^Trash/ }).click();
    await rowWith(page, 'Old news 1').getByRole('link').click();
    const deleteButton = page.getByRole('button', { name: 'Delete for good' });
    alice.confirmAnswers.push(false);
    const asked = alice.dialogs.length;
    await deleteButton.click();
    while (alice.confirmAnswers.length > 0) await sleep(20);
    assert.deepEqual(alice.dialogs.slice(asked), ['confirm: Delete this message for good? This cannot be undone.']);
    // Answered "Cancel": the mail is still in the trash.
    await page.getByRole('link', { name: '← Trash' }).click();
    await rowWith(page, 'Old news 1').getByRole('link').click();
    const notFound: string[] = [];
    const onResponse = (r: { status(): number; url(): string }): void => void (r.status() === 404 && notFound.push(r.url()));
    page.on('response', onResponse);
    const errorsBefore = alice.errors.length;
    await deleteButton.click();
    await page.getByRole('heading', { name: 'Trash', level: 1 }).waitFor();
    await page.getByRole('status').filter({ hasText: 'Message deleted for good.' }).waitFor();
    await rowWith(page, 'Old news 1').waitFor({ state: 'detached' });
    await page.getByTestId('count-trash').filter({ hasText: '2' }).waitFor();
    page.off('response', onResponse);
    // The live update may refetch the open mail just before the page leaves it: that answer is a
    // 404 (the browser logs it), and nothing else may fail.
    assert.ok(notFound.every((u) => /\/trpc\/mails\.(get|history)\?/.test(u)), notFound.join(', '));
    assert.ok(alice.errors.splice(errorsBefore).every((e) => /status of 404/.test(e)));
    await page.getByRole('button', { name: 'Empty trash' }).click();
    await page.getByRole('status').filter({ hasText: '2 messages deleted for good.' }).waitFor();
    await page.getByText('No messages in Trash.').waitFor();
    await page.getByTestId('count-trash').waitFor({ state: 'detached' });
    await page.getByRole('button', { name: 'Empty trash' }).waitFor({ state: 'detached' });
  });

  test('account: the addresses, and a password change that keeps this session and ends the others', async () => {
    const { page } = alice;
    const other = await browser.newContext();
    const second = await watchedPage(other);
    await second.page.goto(`${base}/login`);
    await signInUi(second.page, 'alice@mail.test');
    await page.getByRole('link', { name: /alice@mail\.test/ }).click();
    await page.getByRole('heading', { name: 'Account', level: 1 }).waitFor();
    await page.getByText('hello@mail.test').waitFor();
    await page.getByLabel('Current password').fill(PASSWORD);
    await page.getByLabel('New password', { exact: true }).fill('a brand new password');
    await page.getByLabel('New password again').fill('a different one');
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByRole('alert').getByText('The two new passwords differ.').waitFor();
    await page.getByLabel('New password again').fill('a brand new password');
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByText(/^Password changed\./).waitFor();
    await screenshot(page, 'account');
    // This session goes on with the new token; the other one is over.
    await page.getByRole('link', { name: /^Inbox/ }).click();
    await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
    await rowWith(page, 'Quarterly numbers').waitFor();
    await second.page.reload();
    await second.page.getByRole('button', { name: 'Sign in' }).waitFor();
    await other.close();
    assert.ok(await createClient(base).auth.login.mutate({ email: 'alice@mail.test', password: 'a brand new password' }));
  });

  test('the pages logged no errors (other than the CSP refusing what the hostile mail tried)', () => {
    // The 401 is the deliberate wrong-password sign-in.
    const errors = alice.errors.filter((e) => !/violates the following Content Security Policy directive|status of 401 \(Unauthorized\)/.test(e));
    assert.deepEqual(errors, []);
  });
});
