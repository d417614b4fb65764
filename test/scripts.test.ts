import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import Database from 'better-sqlite3';
import { allProjections, mails } from '../projections/index.js';
import { ProjectionRunner } from '../src/projection/runner.js';
import type { Store } from '../src/store/port.js';
import { openSqliteStore, VIEWS_FILE } from '../src/store/sqlite/index.js';
import { draftSendDeliver, meta, receive, registerAccount } from './support/events.js';
import { runScript } from './support/process.js';

describe('operator scripts on the embedded store', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-scripts-'));
  const env = { DATA_DIR: dataDir };
  let store: Store;
  let mailId = '';
  let deletedId = '';
  let views: Record<string, unknown[]> = {};

  before(async () => {
    store = await openSqliteStore({ dataDir });
    const bob = await registerAccount(store, 'bob@mail.test');
    const received: string[] = [];
    for (let i = 0; i < 25; i++) received.push(await receive(store, bob, `hello ${i}`));
    mailId = await draftSendDeliver(store, bob, 'failed');
    // One mail read and trashed, one trashed and restored, one deleted for good, so the folder and unread counts move too.
    const mailbox = { mailboxId: bob.mailboxId, folder: 'inbox' as const };
    await store.events.append(`mail-${received[0]}`, [{ type: 'MailRead', data: { mailId: received[0]!, mailboxId: bob.mailboxId } }, { type: 'MailTrashed', data: { mailId: received[0]!, ...mailbox, unread: false } }], { expectedVersion: 1, meta: meta() });
    await store.events.append(`mail-${received[1]}`, [{ type: 'MailTrashed', data: { mailId: received[1]!, ...mailbox, unread: true } }, { type: 'MailRestored', data: { mailId: received[1]!, ...mailbox, unread: true } }], { expectedVersion: 1, meta: meta() });
    for (const [policyId, mode, mx, maxAge] of [['1', 'testing', ['mx.secure.test'], 60], ['2', 'enforce', ['mx.secure.test', '*.backup.secure.test'], 86400]] as const) {
      await store.events.append('mta-sts-secure.test', [{ type: 'MtaStsPolicyFetched', data: { domain: 'secure.test', policyId, mode, mx: [...mx], maxAge } }], { expectedVersion: 'any', meta: { ...meta(), actor: { kind: 'relay', id: 'r1' } } });
    }
    await store.events.append(`mail-${received[2]}`, [{ type: 'MailTrashed', data: { mailId: received[2]!, ...mailbox, unread: true } }, { type: 'MailDeleted', data: { mailId: received[2]!, mailboxId: bob.mailboxId, userId: bob.userId } }], { expectedVersion: 1, meta: meta() });
    deletedId = received[2]!;
    const runners = allProjections.map((p) => new ProjectionRunner(store, p, { owner: 'test', logger: pino({ level: 'silent' }) }));
    for (const r of runners) await r.start();
    const head = await store.events.head();
    for (const r of runners) assert.ok(await r.waitFor(head, 10_000));
    for (const r of runners) await r.stop();
    views = Object.fromEntries(await Promise.all(allProjections.map(async (p) => [p.spec.name, await store.views.all(p.spec.name)])));
  });
  after(async () => {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('npm run replay rebuilds every view identically and prints a summary', async () => {
    const r = await runScript('scripts/replay.ts', [], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^views: +users, mailboxes, mails, domains, outbox, mta_sts, aliases$/m);
    assert.match(r.stdout, new RegExp(`^events: +${await store.events.head()}$`, 'm'));
    assert.match(r.stdout, /^seconds: +[\d.]+$/m);
    assert.match(r.stdout, /^events\/s: +\d+$/m);
    assert.match(r.stderr, /100%/, 'shows progress');
    for (const p of allProjections) assert.deepEqual(await store.views.all(p.spec.name), views[p.spec.name], p.spec.name);
    const [mailbox] = await store.views.all('mailboxes');
    assert.deepEqual(mailbox?.counts, { inbox: 23, unread: 23, sent: 1, drafts: 0, trash: 1 });
    assert.equal(await store.views.get('mails', deletedId), null, 'the mail deleted for good stays gone');
  });

  test('npm run replay -- --projection rebuilds one view; a wrong name says what exists', async () => {
    const one = await runScript('scripts/replay.ts', ['--projection', 'mails'], env);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /^views: +mails$/m);
    const wrong = await runScript('scripts/replay.ts', ['--projection', 'mail'], env);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /no projection named "mail"/);
    assert.match(wrong.stderr, /users\|mailboxes\|mails\|domains\|outbox/);
  });

  test('a replay swaps in the indexes it built: the live view never has two of one', async () => {
    await runScript('scripts/replay.ts', ['--projection', 'mails'], env);
    const db = new Database(path.join(dataDir, VIEWS_FILE), { readonly: true });
    try {
      const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'view_mails' AND sql IS NOT NULL").all();
      assert.equal(indexes.length, mails.spec.indexes.length);
      const plan = db.prepare("EXPLAIN QUERY PLAN SELECT doc FROM view_mails WHERE f_userId = 'u' AND f_folder = 'inbox' ORDER BY f_sortAt DESC, id DESC LIMIT 50").all() as { detail: string }[];
      assert.match(plan.map((p) => p.detail).join('\n'), /USING INDEX/);
    } finally {
      db.close();
    }
  });

  test('npm run audit -- --mail prints the mail history in order', async () => {
    const r = await runScript('scripts/audit.ts', ['--mail', mailId], env);
    assert.equal(r.code, 0, r.stderr);
    const types = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[2]);
    assert.deepEqual(types, ['DraftCreated', 'DraftUpdated', 'MailSent', 'MailDeliveryFailed']);
    assert.match(r.stdout, /permanent=true/);
    assert.match(r.stdout, /response="550 5\.1\.1 no such user"/);
    const json = await runScript('scripts/audit.ts', ['--mail', mailId, '--format', 'json'], env);
    assert.equal((JSON.parse(json.stdout) as unknown[]).length, 4);
  });

  test('npm run audit -- --mailbox covers the account and every mail of the mailbox', async () => {
    const r = await runScript('scripts/audit.ts', ['--mailbox', 'BOB@mail.test'], env);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 2 + 25 + 4 + 6, 'account, received mails, the sent mail, the read/trash/restore/delete events');
    assert.match(lines[0]!, /UserRegistered/);
    assert.match(r.stdout, /MailTrashed/);
    assert.match(r.stdout, /MailRestored/);
    assert.match(r.stdout, /MailDeleted/, 'a mail deleted for good is still audited');
    assert.doesNotMatch(r.stdout, /\$2b\$/, 'no password hash');
  });

  test('npm run audit -- --domain prints the MTA-STS policies the relay fetched for it', async () => {
    const r = await runScript('scripts/audit.ts', ['--domain', 'Secure.test'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /MtaStsPolicyFetched +relay:r1 +domain=secure\.test policyId=1 mode=testing mx=mx\.secure\.test maxAge=60/);
    assert.match(r.stdout, /MtaStsPolicyFetched .* policyId=2 mode=enforce mx="mx\.secure\.test, \*\.backup\.secure\.test" maxAge=86400/);
    const none = await runScript('scripts/audit.ts', ['--domain', 'plain.test'], env);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no MTA-STS policy was fetched for plain\.test/);
  });

  test('audit errors say what to do', async () => {
    const none = await runScript('scripts/audit.ts', ['--mailbox', 'nobody@mail.test'], env);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no mailbox nobody@mail\.test/);
    const both = await runScript('scripts/audit.ts', [], env);
    assert.equal(both.code, 1);
    assert.match(both.stderr, /usage: npm run audit/);
    const xml = await runScript('scripts/audit.ts', ['--mailbox', 'bob@mail.test', '--format', 'xml'], env);
    assert.equal(xml.code, 1);
    assert.match(xml.stderr, /--format is text or json/);
  });
});

test('audit, export and replay refuse a DATA_DIR without an event log instead of creating an empty store there', async () => {
  const typo = path.join(os.tmpdir(), `mailtrail-typo-${process.pid}`);
  for (const [script, args] of [['scripts/audit.ts', ['--mail', 'abc']], ['scripts/export.ts', ['--mailbox', 'a@mail.test', '--out', path.join(typo, 'x')]], ['scripts/replay.ts', []]] as const) {
    const r = await runScript(script, [...args], { DATA_DIR: typo });
    assert.equal(r.code, 1, `${script}: ${r.stderr}`);
    assert.match(r.stderr, /no event log at .*mailtrail\.db; set DATA_DIR to the server's data folder/);
  }
  assert.equal(existsSync(typo), false, 'nothing created');
});

describe('account commands', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-users-'));
  const env = { DATA_DIR: dataDir, DEFAULT_DOMAIN: 'mail.test', BCRYPT_COST: '4' };
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  test('user:add, user:passwd with the password on standard input, user:disable; bad flags are refused, not ignored', async () => {
    const add = await runScript('scripts/user.ts', ['add', '--email', 'ann@mail.test', '--name', 'Ann', '--admin', 'true'], env, 'first password\n');
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /^created ann@mail\.test \(user [0-9a-f-]+, mailbox [0-9a-f-]+, admin\)$/m);
    assert.doesNotMatch(add.stdout + add.stderr, /first password/, 'the password is not echoed');
    const yes = await runScript('scripts/user.ts', ['add', '--email', 'bo@mail.test', '--name', 'Bo', '--admin', 'yes'], env, 'second password\n');
    assert.equal(yes.code, 1);
    assert.match(yes.stderr, /--admin must be true or false/);
    const passwd = await runScript('scripts/user.ts', ['passwd', '--email', 'ann@mail.test'], env, 'another password\n');
    assert.equal(passwd.code, 0, passwd.stderr);
    const short = await runScript('scripts/user.ts', ['passwd', '--email', 'ann@mail.test'], env, 'short\n');
    assert.equal(short.code, 1);
    assert.match(short.stderr, /8 to 72 bytes/);
    const extra = await runScript('scripts/user.ts', ['disable', '--email', 'ann@mail.test', '--name', 'Ann'], env);
    assert.equal(extra.code, 1);
    assert.match(extra.stderr, /unexpected argument "--name"/);
    const disable = await runScript('scripts/user.ts', ['disable', '--email', 'ann@mail.test'], env);
    assert.equal(disable.code, 0, disable.stderr);
    const again = await runScript('scripts/user.ts', ['disable', '--email', 'ann@mail.test'], env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /was disabled already/);
    const store = await openSqliteStore({ dataDir });
    try {
      const types = (await store.events.readAll({ after: 0, limit: 100 })).map((e) => e.type);
      assert.deepEqual(types.filter((t) => t.startsWith('User')), ['UserRegistered', 'UserPasswordChanged', 'UserDisabled']);
    } finally {
      await store.close();
    }
  });

  test('alias:add right after user:add with no server running (the views are brought up to date), alias:list, alias:remove; mistakes are refused with the reason', async () => {
    const add = await runScript('scripts/user.ts', ['add', '--email', 'cy@mail.test', '--name', 'Cy'], env, 'a password for cy\n');
    assert.equal(add.code, 0, add.stderr);
    const alias = await runScript('scripts/alias.ts', ['add', '--address', 'Sales@mail.test', '--mailbox', 'cy@mail.test'], env);
    assert.equal(alias.code, 0, alias.stderr);
    assert.match(alias.stdout, /^Sales@mail\.test now leads to cy@mail\.test$/m);
    const again = await runScript('scripts/alias.ts', ['add', '--address', 'sales@mail.test', '--mailbox', 'cy@mail.test'], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already an alias of this mailbox/);
    const foreign = await runScript('scripts/alias.ts', ['add', '--address', 'sales@other.example', '--mailbox', 'cy@mail.test'], env);
    assert.match(foreign.stderr, /other\.example is not a local domain/);
    assert.match((await runScript('scripts/alias.ts', ['list'], env)).stdout, /^Sales@mail\.test -> cy@mail\.test$/m);
    assert.equal((await runScript('scripts/alias.ts', ['remove', '--address', 'sales@mail.test'], env)).code, 0);
    const gone = await runScript('scripts/alias.ts', ['remove', '--address', 'sales@mail.test'], env);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /is not an alias/);
    assert.match((await runScript('scripts/alias.ts', ['list'], env)).stdout, /^no aliases$/m);
    // The address is free again: someone registers it. Each mailbox's audit tells its own story.
    assert.equal((await runScript('scripts/user.ts', ['add', '--email', 'sales@mail.test', '--name', 'Sal'], env, 'a password for sal\n')).code, 0);
    const cy = (await runScript('scripts/audit.ts', ['--mailbox', 'cy@mail.test'], env)).stdout;
    assert.match(cy, /AliasAdded .* address=Sales@mail\.test/);
    assert.match(cy, /AliasRemoved /);
    assert.doesNotMatch(cy, /sales@mail\.test.*UserRegistered|UserRegistered .*sales@/, 'not the new owner’s account');
    const sal = (await runScript('scripts/audit.ts', ['--mailbox', 'sales@mail.test'], env)).stdout;
    assert.match(sal, /UserRegistered .*email=sales@mail\.test/);
    assert.doesNotMatch(sal, /Alias(Added|Removed)/, 'not the alias it was before');
  });
});
