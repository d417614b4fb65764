import type { StoredEvent } from '../events/envelope.js';
import type { EventStore } from '../store/port.js';

const KEEP = 64;

/**
 * The projectors of one process follow the same log, mostly at the same position: this reader
 * reads and decodes each batch once and hands it to all of them. The log is immutable and every
 * batch is a gap-free run after `after`, so a remembered batch stays a correct answer (at worst a
 * shorter one than the log now has; the next read continues from its end), and so does any part
 * of it: a follower that reads from within a batch (it started from a checkpoint of its own) gets
 * the rest of that batch.
 */
export class SharedLogReader {
  private readonly batches = new Map<number, StoredEvent[]>();
  private readonly reading = new Map<number, Promise<StoredEvent[]>>();

  constructor(private readonly events: EventStore) {}

  /** The remembered events right after `after`, if a batch holds them. */
  private remembered(after: number): StoredEvent[] | undefined {
    const exact = this.batches.get(after);
    if (exact) return exact;
    for (const [start, batch] of this.batches) {
      if (start < after && after < batch.at(-1)!.position) return batch.filter((e) => e.position > after);
    }
    return undefined;
  }

  async readAll(opts: { after: number; limit: number }): Promise<StoredEvent[]> {
    const known = this.remembered(opts.after);
    if (known) return known.slice(0, opts.limit);
    let pending = this.reading.get(opts.after);
    if (!pending) {
      pending = this.events.readAll(opts).finally(() => this.reading.delete(opts.after));
      this.reading.set(opts.after, pending);
    }
    const batch = await pending;
    if (batch.length > 0) {
      this.batches.set(opts.after, batch);
      if (this.batches.size > KEEP) this.batches.delete(this.batches.keys().next().value!);
    }
    return batch.slice(0, opts.limit);
  }
}
