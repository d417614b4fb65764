/**
 * Child process for the relay crash test: opens the embedded store in $DATA_DIR, runs the `mails`
 * and `outbox` projectors and a Relay configured from the environment (SMTP_RELAY_*, RELAY_*),
 * prints "ready", and runs until it is killed (SIGTERM = clean stop).
 */
import { destination, pino } from 'pino';
import { mails } from '../../projections/mails.js';
import { outbox } from '../../projections/outbox.js';
import { ProjectionRunner } from '../../src/projection/runner.js';
import { relayOptionsFromEnv } from '../../src/relay/options.js';
import { Relay } from '../../src/relay/relay.js';
import { openSqliteStore } from '../../src/store/sqlite/index.js';

const logger = pino({ level: process.env.LOG_LEVEL ?? 'silent' }, destination(2));
const store = await openSqliteStore({ dataDir: process.env.DATA_DIR!, pollIntervalMs: 50 });
const owner = `relay-child-${process.pid}`;
const leaseTtlMs = Number(process.env.PROJECTOR_LEASE_TTL_MS ?? 1500);
const runners = [mails, outbox].map((p) => new ProjectionRunner(store, p, { owner, logger, leaseTtlMs, batchSize: 200 }));
for (const r of runners) await r.start();
const relay = new Relay(store, relayOptionsFromEnv(process.env), logger, { owner });
await relay.start();
process.stdout.write('ready\n');

process.once('SIGTERM', () => {
  void (async () => {
    await relay.stop();
    for (const r of runners) await r.stop();
    await store.close();
    process.exit(0);
  })();
});
