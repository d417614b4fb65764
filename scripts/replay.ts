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
  console.error(`replaying ${head} events from the ${store.kind} store into ${chosen.map((p) => p.spec.name).join(', ')}`);
  const rows: { view: string; events: number; seconds: number; rate: number }[] = [];
  for (const p of chosen) {
    const bar = new Progress(p.spec.name.padEnd(10));
    const result = await rebuild(store, p, { onProgress: ({ position, head: h }) => bar.update(position, h) });
    bar.update(result.position, result.position);
    bar.done();
    const seconds = result.ms / 1000;
    rows.push({ view: result.view, events: result.events, seconds, rate: seconds > 0 ? Math.round(result.events / seconds) : result.events });
  }
  console.log('\nview        events    seconds   events/s');
  for (const r of rows) console.log(`${r.view.padEnd(10)} ${String(r.events).padStart(8)} ${r.seconds.toFixed(2).padStart(10)} ${String(r.rate).padStart(10)}`);
  const total = rows.reduce((a, r) => ({ events: a.events + r.events, seconds: a.seconds + r.seconds }), { events: 0, seconds: 0 });
  console.log(`total      ${String(total.events).padStart(8)} ${total.seconds.toFixed(2).padStart(10)} ${String(total.seconds > 0 ? Math.round(total.events / total.seconds) : total.events).padStart(10)}`);
});
