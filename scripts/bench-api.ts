/**
 * npm run bench:api [-- --mails 1000000 --seconds 5 --rate 1000 --lag-seconds 10 --connections 50
 *                      --data-dir DIR --write true|false]
 *
 * 1. Fills a fresh log (temporary DATA_DIR) with `--mails` mails through the store API: ten
 *    accounts, mail k to account k mod 10, every 20th mail a sent mail (draft → send → delivered,
 *    four events), the rest received mail (one `MailReceived` each, its own stream). The measured
 *    user ("reader", registered with src/accounts' registerAccount so it can log in) gets a tenth;
 *    its received mails have real text blobs, so `mails.get` reads one.
 * 2. Starts the server (`node --import tsx src/main.ts`) on that DATA_DIR; its projectors build the
 *    views from the log; waits until /ready is 200 and every view has caught up.
 * 3. Latency of `mails.list` and `mails.get` through the typed client (src/api/client.ts) over HTTP
 *    with the reader's token, for `--seconds` per row after a one-second warm-up.
 * 4. Lag from SMTP 250 to visible: nodemailer sends to the reader at `--rate` msgs/s for
 *    `--lag-seconds` (fixed schedule, `--connections` pooled connections); meanwhile a poller lists
 *    the reader's inbox (newest first, 100 a page, following pages while everything on a page is
 *    new), one request in flight, and notes when each message first appears.
 *
 * `--data-dir DIR`: fill DIR (once; a later run with the same DIR reuses the log as it is) and keep it.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { v7 as uuidv7 } from 'uuid';
import { registerAccount as registerRealAccount } from '../src/accounts/accounts.js';
import { createClient, type MailtrailClient } from '../src/api/client.js';
import { Progress } from '../src/cli/progress.js';
import { parseFlagsOrExit, UsageError } from '../src/cli/run.js';
import { systemMeta } from '../src/events/envelope.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import type { Store } from '../src/store/port.js';
import { draftSendDeliver, mailReceived, registerAccount, type Account } from '../test/support/events.js';
import { benchServerEnv, freePort, loadAvg, note, ROOT, sleep, startChild, waitForPort, type Child } from './lib/proc.js';
import { machine, percentile, table, writeSection } from './lib/report.js';

const USAGE =
  'npm run bench:api [-- --mails N --seconds S --rate MSGS_PER_S --lag-seconds S --connections N --lag-size BYTES --data-dir DIR --write true|false]';
const flags = parseFlagsOrExit(process.argv.slice(2), ['mails', 'seconds', 'rate', 'lag-seconds', 'connections', 'lag-size', 'data-dir', 'write'], USAGE);
const MAILS = Number(flags.mails ?? 1_000_000);
const SECONDS = Number(flags.seconds ?? 5);
const RATE = Number(flags.rate ?? 1000);
const LAG_SECONDS = Number(flags['lag-seconds'] ?? 10);
const CONNECTIONS = Number(flags.connections ?? 50);
const LAG_SIZE = Number(flags['lag-size'] ?? 4096);
for (const [name, v] of Object.entries({ mails: MAILS, seconds: SECONDS, rate: RATE, 'lag-seconds': LAG_SECONDS, connections: CONNECTIONS, 'lag-size': LAG_SIZE })) {
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`--${name} must be a positive number\nusage: ${USAGE}`);
    process.exit(2);
  }
}

const DOMAIN = 'bench.test';
const READER = `reader@${DOMAIN}`;
const PASSWORD = 'benchpassword';
const ACCOUNTS = 10;
const SENT_EVERY = 20;
const MARKER = 'bench-api.json';

interface Filled {
  mails: number;
  events: number;
  /** The reader's received mails (ids), for mails.get. */
  readerMailIds: string[];
  fillSeconds: number;
}

// --- 1. fill ------------------------------------------------------------------------------------

const TEXT = 'Hello,\n\nthe figures for the quarter are attached below; please have a look before Thursday. '.repeat(8);

async function fill(dataDir: string, total: number): Promise<Filled> {
  // The fill is set-up, not what is measured: no fsync per append (the server reopens it with FULL).
  const store: Store = await openSqliteStore({ dataDir, synchronous: 'NORMAL' });
  const started = Date.now();
  try {
    const reader = await registerRealAccount(store, { email: READER, password: PASSWORD, name: 'Reader' }, { bcryptCost: 10, meta: systemMeta() });
    const accounts: Account[] = [{ userId: reader.user.id, mailboxId: reader.mailboxId, address: READER }];
    for (let i = 1; i < ACCOUNTS; i++) accounts.push(await registerAccount(store, `user${i}@${DOMAIN}`));
    const readerMailIds: string[] = [];
    const bar = new Progress(`filling the log with ${total.toLocaleString('en')} mails`);
    let next = 0;
    let done = 0;
    const one = async (k: number): Promise<void> => {
      const account = accounts[k % ACCOUNTS]!;
      // Every SENT_EVERY-th mail of each account is one it sent.
      if (Math.floor(k / ACCOUNTS) % SENT_EVERY === 0) {
        await draftSendDeliver(store, account, 'delivered');
        return;
      }
      const mailId = uuidv7();
      const event = mailReceived(account, `Quarterly figures ${k}`, mailId);
      if (event.type === 'MailReceived') {
        event.data.message.snippet = TEXT.slice(0, 200);
        event.data.message.from = [{ name: `Sender ${k % 977}`, address: `sender${k % 977}@example.org` }];
        if (account.userId === reader.user.id) {
          event.data.message.text = await store.blobs.put(Buffer.from(`${TEXT}\n-- mail ${k} (${mailId})\n`));
          readerMailIds.push(mailId);
        }
      }
      await store.events.append(`mail-${mailId}`, [event], { expectedVersion: 'no_stream', meta: systemMeta() });
    };
    // Many appends in flight: the store commits everything queued in one tick in one transaction.
    await Promise.all(
      Array.from({ length: 512 }, async () => {
        while (next < total) {
          await one(next++);
          if (++done % 1000 === 0) bar.update(done, total);
        }
      }),
    );
    bar.update(total, total);
    bar.done();
    const events = await store.events.head();
    return { mails: total, events, readerMailIds, fillSeconds: (Date.now() - started) / 1000 };
  } finally {
    await store.close();
  }
}

// --- 2. server ----------------------------------------------------------------------------------

interface Ready {
  status: string;
  projectors: Record<string, { position: number; lag: number }>;
}

async function startServer(dataDir: string): Promise<{ child: Child; base: string; smtpPort: number; readySeconds: number; caughtUpSeconds: number; head: number }> {
  const [httpPort, smtpPort] = [await freePort(), await freePort()];
  const env = benchServerEnv({ dataDir, httpPort, smtpPort, domain: DOMAIN });
  const started = Date.now();
  const child = startChild('mailtrail', process.execPath, ['--import', 'tsx', 'src/main.ts'], { env });
  await waitForPort(httpPort, 1_800_000, child);
  const base = `http://127.0.0.1:${httpPort}`;
  let readySeconds = 0;
  let lastNote = 0;
  for (;;) {
    if (child.exitCode() !== undefined) throw new Error(`the server exited:\n${child.output().slice(-3000)}`);
    const res = await fetch(`${base}/ready`).catch(() => null);
    const body = res ? ((await res.json()) as Ready) : null;
    if (res?.status === 200 && !readySeconds) readySeconds = (Date.now() - started) / 1000;
    const lags = body?.projectors ? Object.values(body.projectors).map((p) => p.lag) : [Infinity];
    const line = body?.projectors ? Object.entries(body.projectors).map(([n, p]) => `${n} ${p.position}`).join(', ') : String(res?.status);
    if (Date.now() - lastNote > 10_000) {
      note(`  views at: ${line}`);
      lastNote = Date.now();
    }
    if (res?.status === 200 && Math.max(...lags) === 0) {
      const head = Math.max(...Object.values(body!.projectors).map((p) => p.position));
      return { child, base, smtpPort, readySeconds, caughtUpSeconds: (Date.now() - started) / 1000, head };
    }
    await sleep(500);
  }
}

// --- 3. latency ---------------------------------------------------------------------------------

type Row = (string | number)[];
const ms = (n: number): string => (Math.abs(n) < 10 ? n.toFixed(2) : n.toFixed(1));

async function timed(label: string, concurrency: number, seconds: number, call: (worker: number) => Promise<unknown>): Promise<Row> {
  // Warm-up: one second, not recorded.
  const warm = Date.now() + 1000;
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    while (Date.now() < warm) await call(w);
  }));
  const latencies: number[] = [];
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        await call(w);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const row = [label, concurrency, latencies.length, Math.round(latencies.length / secs), ms(percentile(latencies, 50)), ms(percentile(latencies, 99)), ms(latencies.at(-1) ?? 0), os.loadavg()[0]!.toFixed(2)];
  note(`  ${row.join('  ')}`);
  return row;
}

/**
 * Pages through the whole inbox once, following nextCursor from the newest page (bounded by
 * `maxSeconds`), and reports the latency by depth.
 */
async function walkInbox(client: MailtrailClient, maxSeconds = 300): Promise<Row[]> {
  const byPage: number[] = [];
  let cursor: string | null = null;
  const deadline = performance.now() + maxSeconds * 1000;
  const t0 = performance.now();
  do {
    const t = performance.now();
    const res: Awaited<ReturnType<typeof client.mails.list.query>> = await client.mails.list.query({ folder: 'inbox', limit: 50, cursor });
    byPage.push(performance.now() - t);
    cursor = res.nextCursor;
  } while (cursor && performance.now() < deadline);
  walked = { pages: byPage.length, complete: cursor === null, secs: (performance.now() - t0) / 1000 };
  const rows: Row[] = [];
  for (const [from, to] of [
    [2, 10],
    [11, 100],
    [101, 1000],
    [1001, Infinity],
  ] as const) {
    const lat = byPage.slice(from - 1, to === Infinity ? undefined : to).sort((a, b) => a - b);
    if (lat.length === 0) continue;
    const sum = lat.reduce((a, b) => a + b, 0);
    const label = `\`mails.list\` inbox, next page by cursor (50): pages ${from.toLocaleString('en')}–${Math.min(to, byPage.length).toLocaleString('en')}`;
    const row = [label, 1, lat.length, Math.round((1000 * lat.length) / sum), ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(lat.at(-1)!), os.loadavg()[0]!.toFixed(2)];
    note(`  ${row.join('  ')}`);
    rows.push(row);
  }
  return rows;
}
let walked = { pages: 0, complete: false, secs: 0 };

// --- 4. lag -------------------------------------------------------------------------------------

interface LagResult {
  sent: number;
  acked: number;
  refused: number;
  firstError: string | null;
  sendSeconds: number;
  acceptance: number[];
  lags: number[];
  missing: number;
  beforeAck: number;
  polls: number;
  pollMs: number[];
}

async function measureLag(client: MailtrailClient, smtpPort: number): Promise<LagResult> {
  const prefix = `lag-${randomBytes(4).toString('hex')}-`;
  const clock = (): number => performance.timeOrigin + performance.now();
  const seenAt = new Map<string, number>();
  const pollMs: number[] = [];
  const settled: { id: string; sent: number; ack: number | null; error: string | null }[] = [];
  let senderDone = false;
  let sendSeconds = 0;
  // The sender runs in its own process (scripts/lib/lag-sender.ts): its timestamps and the
  // poller's are on the same clock (performance.timeOrigin + now) without delaying each other.
  const sender = spawn(
    process.execPath,
    ['--import', 'tsx', 'scripts/lib/lag-sender.ts', String(smtpPort), String(CONNECTIONS), String(RATE), String(LAG_SECONDS), String(LAG_SIZE), READER, prefix],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let senderErr = '';
  sender.stderr.on('data', (d: Buffer) => (senderErr += d.toString()));
  const lines = createInterface({ input: sender.stdout });
  lines.on('line', (line) => {
    const msg = JSON.parse(line) as { done?: boolean; secs?: number; id: string; sent: number; ack: number | null; error: string | null };
    if (msg.done) sendSeconds = msg.secs!;
    else settled.push(msg);
  });
  const senderExit = new Promise<number | null>((resolve) => sender.on('close', (code) => resolve(code)));
  void senderExit.then(() => (senderDone = true));
  const allSeen = (): boolean => settled.every((m) => m.ack === null || seenAt.has(m.id));
  let pollDeadline = Infinity;
  while (!senderDone || (Date.now() < pollDeadline && !allSeen())) {
    if (senderDone && pollDeadline === Infinity) pollDeadline = Date.now() + 15_000;
    const t = performance.now();
    let cursor: string | null = null;
    for (let page = 0; page < 50; page++) {
      const res: Awaited<ReturnType<typeof client.mails.list.query>> = await client.mails.list.query({ folder: 'inbox', limit: 100, cursor });
      const now = clock();
      let allNew = res.items.length > 0;
      for (const item of res.items) {
        const id = item.messageId;
        if (!id?.startsWith(prefix) || seenAt.has(id)) {
          allNew = false;
          continue;
        }
        seenAt.set(id, now);
      }
      // Everything on the page was new: older new ones may be on the next page.
      if (!allNew || !res.nextCursor || seenAt.size === 0) break;
      cursor = res.nextCursor;
    }
    pollMs.push(performance.now() - t);
    await sleep(2);
  }
  const code = await senderExit;
  if (code !== 0) throw new Error(`the lag sender exited with ${code}: ${senderErr.slice(-2000)}`);
  const ok = settled.filter((m) => m.ack !== null);
  const lags: number[] = [];
  let missing = 0;
  let beforeAck = 0;
  for (const m of ok) {
    const seen = seenAt.get(m.id);
    if (seen === undefined) {
      missing++;
      continue;
    }
    if (seen < m.ack!) beforeAck++;
    lags.push(seen - m.ack!);
  }
  lags.sort((a, b) => a - b);
  pollMs.sort((a, b) => a - b);
  const refused = settled.filter((m) => m.error !== null);
  return {
    sent: settled.length,
    acked: ok.length,
    refused: refused.length,
    firstError: refused[0]?.error ?? null,
    sendSeconds,
    acceptance: ok.map((m) => m.ack! - m.sent).sort((a, b) => a - b),
    lags,
    missing,
    beforeAck,
    polls: pollMs.length,
    pollMs,
  };
}

// --- main ---------------------------------------------------------------------------------------

const loadAtStart = loadAvg();
const startedAt = Date.now();
const keep = Boolean(flags['data-dir']);
const dataDir = flags['data-dir'] ? path.resolve(flags['data-dir']) : mkdtempSync(path.join(os.tmpdir(), 'mailtrail-bench-api-'));
mkdirSync(dataDir, { recursive: true });
let child: Child | null = null;
try {
  let filled: Filled;
  let reused = false;
  const marker = path.join(dataDir, MARKER);
  if (existsSync(marker)) {
    filled = JSON.parse(readFileSync(marker, 'utf8')) as Filled;
    reused = true;
    note(`reusing ${dataDir}: ${filled.mails.toLocaleString('en')} mails filled earlier (log as it is now, including mail from earlier runs)`);
  } else {
    if (existsSync(path.join(dataDir, 'mailtrail.db'))) throw new UsageError(`${dataDir} has a log that bench:api did not fill; give an empty or new directory`);
    filled = await fill(dataDir, MAILS);
    if (keep) writeFileSync(marker, JSON.stringify(filled));
    note(`filled ${filled.mails.toLocaleString('en')} mails (${filled.events.toLocaleString('en')} events) in ${filled.fillSeconds.toFixed(0)} s`);
  }

  note('starting the server; its projectors build the views …');
  const server = await startServer(dataDir);
  child = server.child;
  note(`ready after ${server.readySeconds.toFixed(0)} s, every view caught up (position ${server.head.toLocaleString('en')}) after ${server.caughtUpSeconds.toFixed(0)} s`);

  const { token } = await createClient(server.base).auth.login.mutate({ email: READER, password: PASSWORD });
  const clients = Array.from({ length: 10 }, () => createClient(server.base, { token }));
  const ids = filled.readerMailIds;
  const inboxTotal = ids.length;
  const randomId = (): string => ids[Math.floor(Math.random() * ids.length)]!;

  note('\nlatency (operation, clients, calls, calls/s, p50 ms, p99 ms, max ms, load):');
  const rows: Row[] = [];
  rows.push(await timed('`mails.list` inbox, first page (50)', 1, SECONDS, () => clients[0]!.mails.list.query({ folder: 'inbox', limit: 50 })));
  rows.push(await timed('`mails.list` inbox, first page (50)', 10, SECONDS, (w) => clients[w]!.mails.list.query({ folder: 'inbox', limit: 50 })));
  rows.push(...(await walkInbox(clients[0]!)));
  rows.push(await timed('`mails.list` sent folder, first page (50)', 1, SECONDS, () => clients[0]!.mails.list.query({ folder: 'sent', limit: 50 })));
  rows.push(await timed('`mails.get` a random mail of the inbox (with its text)', 1, SECONDS, () => clients[0]!.mails.get.query({ id: randomId() })));
  rows.push(await timed('`mails.get` a random mail of the inbox (with its text)', 10, SECONDS, (w) => clients[w]!.mails.get.query({ id: randomId() })));

  note(`\nlag: ${RATE} msgs/s for ${LAG_SECONDS} s over SMTP to ${READER}, polling mails.list …`);
  const loadBeforeLag = loadAvg();
  const lag = await measureLag(clients[0]!, server.smtpPort);
  note(
    `  sent ${lag.sent}, acknowledged ${lag.acked} in ${lag.sendSeconds.toFixed(1)} s; lag p50 ${ms(percentile(lag.lags, 50))} ms, p99 ${ms(percentile(lag.lags, 99))} ms; ${lag.missing} never seen`,
  );

  const code = await server.child.stop();
  child = null;
  if (code !== 0) note(`the server exited with ${code}:\n${server.child.output().slice(-2000)}`);

  // --- report ---
  const command = `npm run bench:api${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const achieved = lag.acked / lag.sendSeconds;
  const lagRows: Row[] = [
    [
      `SMTP 250 → visible in \`mails.list\``,
      `${RATE.toLocaleString('en')} msgs/s scheduled, ${Math.round(achieved).toLocaleString('en')} acknowledged/s`,
      lag.lags.length.toLocaleString('en'),
      ms(lag.lags[0] ?? 0),
      ms(percentile(lag.lags, 50)),
      ms(percentile(lag.lags, 99)),
      ms(lag.lags.at(-1) ?? 0),
    ],
    ['SMTP acceptance (handed to the pool → 250, including any wait in the pool), same messages', '', lag.acceptance.length.toLocaleString('en'), ms(lag.acceptance[0] ?? 0), ms(percentile(lag.acceptance, 50)), ms(percentile(lag.acceptance, 99)), ms(lag.acceptance.at(-1) ?? 0)],
    ['poll round trip (`mails.list` pages until a known mail)', '', lag.polls.toLocaleString('en'), ms(lag.pollMs[0] ?? 0), ms(percentile(lag.pollMs, 50)), ms(percentile(lag.pollMs, 99)), ms(lag.pollMs.at(-1) ?? 0)],
  ];
  const problems: string[] = [];
  if (lag.refused) problems.push(`${lag.refused} of ${lag.sent} messages were not acknowledged (${lag.firstError})`);
  if (lag.missing) problems.push(`${lag.missing} acknowledged messages never appeared in \`mails.list\` within 15 s after the last send`);
  if (achieved < RATE * 0.95)
    problems.push(
      `The server acknowledged ${Math.round(achieved).toLocaleString('en')} msgs/s, not the ${RATE.toLocaleString('en')} scheduled (sender, poller and server share the machine's ${os.cpus().length} cores): the rest waited in the client's pool, hence acceptance times in seconds. The lag is counted from each message's own 250, so it is the lag at the rate achieved.`,
    );
  if (lag.beforeAck)
    problems.push(
      `${lag.beforeAck.toLocaleString('en')} of ${lag.lags.length.toLocaleString('en')} messages were listed before their 250 reached the sending process (negative lag, counted as such): the store commits an append, where the projectors can read it, and then fsyncs the WAL for the whole group of commits before the append resolves and the 250 goes out, which then still has to reach the sender.`,
    );
  if (reused) problems.push(`the log was reused from an earlier run (\`--data-dir\`), so it also holds the mail sent by earlier lag runs`);

  const markdown = [
    '## API latency and SMTP-to-list lag (`npm run bench:api`)',
    '',
    `Machine: ${machine()}. Date: ${new Date().toISOString().slice(0, 10)}. Load average (1/5/15 min) at start ${loadAtStart}, before the lag run ${loadBeforeLag}, at end ${loadAvg()}; the machine is shared, other processes may have used CPU during the runs. Whole command: ${Math.round((Date.now() - startedAt) / 1000)} s.`,
    `Command: \`${command}\`.`,
    '',
    `Store: the embedded one (SQLite WAL, \`SQLITE_SYNCHRONOUS=FULL\` in the server), filled through the store API with **${filled.mails.toLocaleString('en')} mails** (${filled.events.toLocaleString('en')} events${reused ? '' : `, in ${filled.fillSeconds.toFixed(0)} s without fsync`}): ${ACCOUNTS} accounts, mail k to account k mod ${ACCOUNTS}; every ${SENT_EVERY}th mail sent (draft, update, send, delivered), the rest received, one stream each. The measured user has ${inboxTotal.toLocaleString('en')} mails in its inbox (with real text blobs) and ${Math.round(filled.mails / ACCOUNTS / SENT_EVERY).toLocaleString('en')} in \`sent\`. The server (\`node --import tsx src/main.ts\`) built its views from the log: /ready 200 after ${server.readySeconds.toFixed(0)} s, every view caught up (${server.head.toLocaleString('en')} events) after ${server.caughtUpSeconds.toFixed(0)} s.`,
    `Latency: the typed client (\`src/api/client.ts\`) over HTTP on loopback with the user's token, from the call to the parsed answer; each row runs ${SECONDS} s after a 1 s warm-up, each client with one call in flight. The cursor rows are one walk through the whole inbox, newest first, following \`nextCursor\`: ${walked.pages.toLocaleString('en')} pages in ${walked.secs.toFixed(1)} s${walked.complete ? '' : ' (stopped after 300 s, not complete)'}; page 1 is the first-page row.`,
    '',
    table(['operation', 'clients', 'calls', 'calls/s', 'p50 ms', 'p99 ms', 'max ms', 'load avg 1 min'], rows),
    '',
    `Lag: nodemailer (in its own process, \`scripts/lib/lag-sender.ts\`) sends ${LAG_SIZE.toLocaleString('en')}-byte messages (unique Message-IDs) to the user over SMTP at ${RATE.toLocaleString('en')} msgs/s for ${LAG_SECONDS} s on a fixed schedule over a pool of ${CONNECTIONS} connections; meanwhile one client lists the inbox (newest first, 100 a page, following pages while a page is all new) in a loop with one call in flight and a 2 ms pause, noting when each message first appears. Lag = first seen in \`mails.list\` − the 250 at the client; it includes up to one poll round trip.`,
    '',
    table(['measurement', 'rate', 'messages', 'min ms', 'p50 ms', 'p99 ms', 'max ms'], lagRows),
    ...(problems.length ? ['', ...problems.map((p) => `- ${p}`)] : []),
  ].join('\n');
  console.log(`\n${markdown}`);
  if (flags.write !== 'false') {
    writeSection('bench:api', markdown);
    note('\nwritten to docs/benchmarks.md');
  }
} catch (error) {
  console.error(error instanceof UsageError ? `bench:api: ${error.message}` : error);
  process.exitCode = 1;
} finally {
  if (child) await child.stop();
  if (!keep) rmSync(dataDir, { recursive: true, force: true });
}
