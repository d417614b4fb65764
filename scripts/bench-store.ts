/**
 * npm run bench:store [-- --events 1000000 --adapters sqlite,mongo --seconds 5 --write true]
 *
 * Durable appends of ~1 KB events with 1, 16 and 64 concurrent writers, catch-up read of the whole
 * log, and a full replay (rebuild of every view) — for each adapter. Prints a table and writes it
 * into docs/benchmarks.md. MongoDB runs against MONGODB_URI when set, else mongo-java-server
 * (build it first: bash test/mongo-java-server/build.sh) with fewer events: its numbers are a CI
 * budget, not a production figure.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { v7 as uuidv7 } from 'uuid';
import { allProjections } from '../projections/index.js';
import { Progress } from '../src/cli/progress.js';
import { parseFlagsOrExit } from '../src/cli/run.js';
import type { NewEvent } from '../src/events/envelope.js';
import { rebuild } from '../src/projection/rebuild.js';
import type { Store } from '../src/store/port.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { draftSendDeliver, mailReceived, meta, registerAccount, type Account } from '../test/support/events.js';
import { startMongo, uniqueDbName } from '../test/support/mongo-java-server.js';
import { machine, percentile, table, writeSection } from './lib/report.js';

const USAGE = 'npm run bench:store [-- --events N --adapters sqlite,mongo --seconds S --write true|false]';
const flags = parseFlagsOrExit(process.argv.slice(2), ['events', 'adapters', 'seconds', 'write'], USAGE);
const EVENTS = Number(flags.events ?? 1_000_000);
const SECONDS = Number(flags.seconds ?? 5);
const ADAPTERS = (flags.adapters ?? 'sqlite,mongo').split(',');
/** mongo-java-server keeps everything in one JVM heap and rescans its oplog: keep its log small. */
const MONGO_FAKE_EVENTS = 20_000;

/** ~1 KB of JSON, like a received mail's event. */
function oneKbEvent(account: Account): NewEvent {
  const e = mailReceived(account, 'Quarterly report '.padEnd(120, 'x'));
  if (e.type === 'MailReceived') e.data.message.snippet = 'Lorem ipsum dolor sit amet '.repeat(8).slice(0, 200);
  return e;
}

type Row = (string | number)[];

async function appendBench(store: Store, account: Account, writers: number): Promise<Row> {
  const event = oneKbEvent(account);
  const latencies: number[] = [];
  const deadline = Date.now() + SECONDS * 1000;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (Date.now() < deadline) {
        const t = performance.now();
        await store.events.append(`mail-${uuidv7()}`, [event], { expectedVersion: 'no_stream', meta: meta() });
        latencies.push(performance.now() - t);
      }
    }),
  );
  const secs = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return [`append, ${writers} writer${writers > 1 ? 's' : ''}`, latencies.length, secs.toFixed(1), Math.round(latencies.length / secs), percentile(latencies, 50).toFixed(2), percentile(latencies, 99).toFixed(2)];
}

/** Fills the log to `total` events with a realistic mix, 100 events per append, 16 appends in flight. */
async function fill(store: Store, total: number): Promise<void> {
  const accounts = await Promise.all(Array.from({ length: 20 }, (_, i) => registerAccount(store, `user${i}-${uuidv7()}@bench.test`)));
  const bar = new Progress('filling log');
  let head = await store.events.head();
  let n = 0;
  while (head < total) {
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        n++;
        const account = accounts[n % accounts.length]!;
        if (n % 10 === 0) await draftSendDeliver(store, account, 'delivered');
        else await store.events.append(`mail-${uuidv7()}`, Array.from({ length: 100 }, () => oneKbEvent(account)), { expectedVersion: 'any', meta: meta() });
      }),
    );
    head = await store.events.head();
    bar.update(Math.min(head, total), total);
  }
  bar.done();
}

async function catchUp(store: Store): Promise<Row> {
  const started = Date.now();
  let after = 0;
  let count = 0;
  for (;;) {
    const batch = await store.events.readAll({ after, limit: 1000 });
    if (batch.length === 0) break;
    count += batch.length;
    after = batch.at(-1)!.position;
  }
  const secs = (Date.now() - started) / 1000;
  return ['catch-up read (batches of 1000)', count, secs.toFixed(1), Math.round(count / secs), '', ''];
}

async function replay(store: Store): Promise<Row> {
  const bar = new Progress('replay');
  const r = await rebuild(store, allProjections, { onProgress: ({ position, head }) => bar.update(position, head) });
  bar.done();
  const secs = r.ms / 1000;
  return [`replay (all ${r.views.length} views, one pass)`, r.events, secs.toFixed(1), Math.round(r.events / secs), '', ''];
}

async function benchAdapter(name: string, open: () => Promise<Store>, events: number): Promise<Row[]> {
  console.error(`\n== ${name}`);
  const store = await open();
  try {
    const account = await registerAccount(store, `bench-${uuidv7()}@bench.test`);
    const rows: Row[] = [];
    for (const writers of [1, 16, 64]) {
      rows.push(await appendBench(store, account, writers));
      console.error(rows.at(-1)!.join('  '));
    }
    await fill(store, events);
    rows.push(await catchUp(store));
    console.error(rows.at(-1)!.join('  '));
    rows.push(await replay(store));
    console.error(rows.at(-1)!.join('  '));
    return rows;
  } finally {
    await store.close();
  }
}

const header = ['operation', 'events', 'seconds', 'events/s', 'p50 ms', 'p99 ms'];

/** Writes one adapter's table as its own section, so a failure in the other loses nothing. */
function report(label: string, events: number, rows: Row[]): void {
  const markdown = [
    `## Event store: ${label} (\`npm run bench:store\`)`,
    '',
    `Machine: ${machine()}. Date: ${new Date().toISOString().slice(0, 10)}. Load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' / ')}.`,
    `Command: \`npm run bench:store -- ${process.argv.slice(2).join(' ')}\`. Appends: one ~1 KB \`MailReceived\` event per append to a new stream, each durable before it resolves, for ${SECONDS} s per row. Catch-up and replay run over a log filled to ${events.toLocaleString('en')} events with a realistic mix (received mail, drafts, sends, deliveries); replay rebuilds every view into a shadow in one pass over the log and swaps them in.`,
    '',
    table(header, rows),
  ].join('\n');
  console.log(`\n${markdown}`);
  if (flags.write !== 'false') {
    writeSection(`bench:store:${label.split(' ')[0]}`, markdown);
    console.error('\nwritten to docs/benchmarks.md');
  }
}

for (const adapter of ADAPTERS) {
  if (adapter === 'sqlite') {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-bench-'));
    try {
      const label = 'sqlite (WAL, synchronous=FULL)';
      report(label, EVENTS, await benchAdapter(label, () => openSqliteStore({ dataDir: dir }), EVENTS));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } else if (adapter === 'mongo') {
    const { openMongoStore } = await import('../src/store/mongo/index.js');
    const mongo = await startMongo();
    try {
      const label = mongo.real ? 'mongodb (MONGODB_URI)' : 'mongo-java-server (in-memory fake; a CI budget, not a production figure)';
      const events = mongo.real ? EVENTS : Math.min(EVENTS, MONGO_FAKE_EVENTS);
      report(label, events, await benchAdapter(label, () => openMongoStore({ uri: mongo.uri, dbName: uniqueDbName('bench') }), events));
    } finally {
      await mongo.stop();
    }
  } else {
    console.error(`unknown adapter ${adapter}\nusage: ${USAGE}`);
    process.exit(2);
  }
}
