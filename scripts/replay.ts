/**
 * npm run replay [-- --projection <name>]
 * Rebuilds read models from the event log into shadow views and swaps them in atomically.
 * Safe with the server stopped or running (the live projector hands its view over for the swap).
 */
import { allProjections } from '../projections/index.js';
import { Progress } from '../src/cli/progress.js';
import { parseFlags, runCommand, UsageError } from '../src/cli/run.js';
import { rebuild } from '../src/projection/rebuild.js';

const USAGE = `npm run replay [-- --projection ${allProjections.map((p) => p.spec.name).join('|')}]`;

await runCommand('replay', async ({ store, args }) => {
  const { projection } = parseFlags(args, ['projection'], USAGE);
  const chosen = projection ? allProjections.filter((p) => p.spec.name === projection) : allProjections;
  if (chosen.length === 0) throw new UsageError(`no projection named ${JSON.stringify(projection)}\nusage: ${USAGE}`);
  const head = await store.events.head();
  const names = chosen.map((p) => p.spec.name).join(', ');
  console.error(`replaying ${head} events from the ${store.kind} store into ${names}`);
  const bar = new Progress('replay');
  // Ctrl-C or SIGTERM: stop between batches and hand the live views back (they keep serving as before).
  const stop = new AbortController();
  const interrupt = (): void => stop.abort(new Error('interrupted: nothing was swapped, the live views are as they were; run it again to rebuild'));
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  const result = await rebuild(store, chosen, { onProgress: ({ position, head: h }) => bar.update(position, h), signal: stop.signal });
  bar.update(result.position, result.position);
  bar.done();
  const seconds = result.ms / 1000;
  const rate = seconds > 0 ? Math.round(result.events / seconds) : result.events;
  console.log(`views:    ${names}`);
  // The server may have appended while it ran: the summary says so rather than disagree with the first line.
  const later = Math.max(0, result.position - head);
  console.log(`events:   ${result.events}${later > 0 ? ` (${later} of them appended while the replay ran)` : ''}`);
  console.log(`seconds:  ${seconds.toFixed(2)}`);
  console.log(`events/s: ${rate}`);
}, { existingStore: true });
