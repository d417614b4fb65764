import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { Store } from '../store/port.js';
import { sleep } from '../store/wait.js';
import type { Projection } from './projection.js';
import { ProjectionRunner } from './runner.js';

/**
 * Brings views up to the log's head for a command run from the shell, which reads them: with the
 * server stopped it applies what they miss itself, under their leases; with a server running,
 * that server holds the leases and this waits for it. Throws, saying what to do, if they do not
 * get there within `timeoutMs`.
 */
export async function catchUpViews(store: Store, projections: Projection[], timeoutMs = 30_000): Promise<void> {
  const head = await store.events.head();
  const logger = pino({ level: 'silent' });
  const runners = projections.map((p) => new ProjectionRunner(store, p, { owner: `cli-${uuidv7()}`, logger }));
  for (const r of runners) await r.start();
  try {
    const deadline = Date.now() + timeoutMs;
    for (const p of projections) {
      while ((await store.views.checkpoint(p.spec.name)) < head) {
        if (Date.now() > deadline) throw new Error(`the ${p.spec.name} view is behind the log (a server holds it but does not apply it?); check npm start's /health, then try again`);
        await sleep(50);
      }
    }
  } finally {
    for (const r of runners) await r.stop();
  }
}
