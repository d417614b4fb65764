/**
 * The worker thread of ProjectorThread (thread.ts): one runner per view, and the follower that
 * stores local copies a send left out, on a store connection of their own, reading the log once
 * for all; it tells the main thread of every change of state.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { allProjections } from '../../projections/index.js';
import type { Config } from '../config.js';
import { createLogger } from '../log.js';
import { LocalDelivery } from '../mail/local-delivery.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/port.js';
import { ProjectionRunner } from './runner.js';
import { SharedLogReader } from './shared-reader.js';
import type { FromProjectors, ToProjectors } from './thread.js';

const port = parentPort!;
const { config } = workerData as { config: Config };
const tell = (m: FromProjectors): void => port.postMessage(m);

const logger = createLogger(config).child({ thread: 'projectors' });
const runners: ProjectionRunner[] = [];
let localDelivery: LocalDelivery | null = null;
let store: Store | null = null;

/** Stops what has started, closes the store; the runners release their leases. */
async function shutDown(): Promise<void> {
  for (const r of runners) await r.stop();
  await localDelivery?.stop();
  await store?.close();
}

try {
  store = await openStore(config);
  const reader = new SharedLogReader(store.events);
  const byName = new Map<string, ProjectionRunner>();
  for (const p of allProjections) {
    const r = new ProjectionRunner(store, p, { owner: config.INSTANCE_ID, logger, leaseTtlMs: config.PROJECTOR_LEASE_TTL_MS, reader });
    runners.push(r);
    byName.set(r.name, r);
  }
  localDelivery = new LocalDelivery(store, logger, config.INSTANCE_ID, reader, config.SMTP_HOSTNAME);
  const followers = [...runners, localDelivery];
  // One message per tick at most, for every follower that changed: a batch moves the position,
  // status and error of all the views together.
  const changed = new Set<ProjectionRunner | LocalDelivery>();
  const report = (): void => {
    if (changed.size === 0) return;
    tell({ kind: 'states', states: [...changed].map((r) => ({ name: r.name, status: r.status, position: r.position, lastError: r.lastError })) });
    changed.clear();
  };
  for (const r of followers) {
    r.progressed.on('progress', () => {
      if (changed.size === 0) setImmediate(report);
      changed.add(r);
    });
  }
  const events = store.events;
  port.on('message', (m: ToProjectors) => {
    if (m.kind === 'wake') events.wake();
    else if (m.kind === 'waiters') byName.get(m.name)?.setRemoteWaiters(m.count);
    else if (m.kind === 'stop') {
      void shutDown().then(() => {
        tell({ kind: 'stopped' });
        port.close();
      });
    }
  });
  for (const r of followers) await r.start();
  for (const r of followers) changed.add(r);
  report();
  tell({ kind: 'started' });
} catch (error) {
  // Nothing of this thread may go on (a runner holding its lease) once the main thread hears it failed.
  await shutDown().catch(() => undefined);
  tell({ kind: 'failed', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}
