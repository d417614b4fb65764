/**
 * The worker thread of ProjectorThread (thread.ts): one runner per view on a store connection of
 * its own, telling the main thread of every change of state.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { allProjections } from '../../projections/index.js';
import type { Config } from '../config.js';
import { createLogger } from '../log.js';
import { openStore } from '../store/open.js';
import { ProjectionRunner } from './runner.js';
import { SharedLogReader } from './shared-reader.js';
import type { FromProjectors, ToProjectors } from './thread.js';

const port = parentPort!;
const { config } = workerData as { config: Config };
const tell = (m: FromProjectors): void => port.postMessage(m);

try {
  const logger = createLogger(config).child({ thread: 'projectors' });
  const store = await openStore(config);
  const reader = new SharedLogReader(store.events);
  const runners = new Map(
    allProjections.map((p) => [p.spec.name, new ProjectionRunner(store, p, { owner: config.INSTANCE_ID, logger, leaseTtlMs: config.PROJECTOR_LEASE_TTL_MS, reader })]),
  );
  // One message per runner and tick at most: a batch moves position, status and error together.
  const changed = new Set<ProjectionRunner>();
  const report = (): void => {
    for (const r of changed) tell({ kind: 'state', name: r.name, status: r.status, position: r.position, lastError: r.lastError });
    changed.clear();
  };
  for (const r of runners.values()) {
    r.progressed.on('progress', () => {
      if (changed.size === 0) queueMicrotask(report);
      changed.add(r);
    });
  }
  port.on('message', (m: ToProjectors) => {
    if (m.kind === 'wake') store.events.wake();
    else if (m.kind === 'waiters') runners.get(m.name)?.setRemoteWaiters(m.count);
    else if (m.kind === 'stop') {
      void (async () => {
        for (const r of runners.values()) await r.stop();
        await store.close();
        tell({ kind: 'stopped' });
        port.close();
      })();
    }
  });
  for (const r of runners.values()) await r.start();
  for (const r of runners.values()) changed.add(r);
  report();
  tell({ kind: 'started' });
} catch (error) {
  tell({ kind: 'failed', message: error instanceof Error ? error.message : String(error) });
  port.close();
}
