import type { Context } from './trpc.js';

/**
 * Read-your-writes: before a query reads `views`, wait (bounded) until their projectors have
 * applied every event that was in the log when the query arrived and, on MongoDB, the position
 * the caller says it has seen (on the embedded store the head already covers any real one). A
 * mail delivered over SMTP or sent a moment ago is then in the listing.
 * After the bound the query answers from the views as they are.
 */
export async function awaitViews(ctx: Context, views: string[]): Promise<void> {
  const head = await ctx.deps.store.events.head();
  // The embedded store's head is every committed event: a position past it names nothing (a stale
  // or made-up header) and waiting for it would only stall the caller. On MongoDB the head is what
  // is visible without a gap, which a position just written elsewhere may briefly be past.
  const target = ctx.deps.store.kind === 'sqlite' ? head : Math.max(ctx.seenPosition, head);
  await Promise.all(views.map((v) => ctx.deps.projectors.get(v)?.waitFor(target, ctx.deps.settings.readYourWritesMs)));
}
