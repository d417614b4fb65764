import { EventEmitter } from 'node:events';
import type { ChangeStream, Collection, Db } from 'mongodb';
import { decodeStored, newEventId, validateData, validateMeta, type Meta, type NewEvent, type RawEvent, type StoredEvent } from '../../events/envelope.js';
import { SCHEMA_VERSION } from '../../events/types.js';
import { WrongExpectedVersionError, type AppendResult, type EventStore, type ExpectedVersion } from '../port.js';
import { sleep, waitForWakeUp } from '../wait.js';
import { isDuplicateKey, upsertRetry, type IndexRef } from './errors.js';

/** Events are kept inside their commit document, which holds the stream id. */
type EventDoc = Omit<RawEvent, 'streamId'>;

/**
 * One document per append ("commit"), or a gap seal: positions that were allocated but will never be
 * written (streamId '$gap', no events). `_id` is the commit's last position, so the first document
 * with `_id > after` is the one holding position `after + 1`.
 */
interface CommitDoc {
  _id: number;
  position: number;
  positionEnd: number;
  /** Every position the document covers: its unique multikey index makes any overlap of a commit and a seal fail. */
  positions: number[];
  streamId: string;
  versions: number[];
  events: EventDoc[];
  gap?: true;
}

/** Multikey: two commits sharing any version of a stream collide, however their ranges overlap. */
const STREAM_INDEX: IndexRef = { name: 'stream_version', key: { streamId: 1, versions: 1 } };
const POSITIONS_INDEX: IndexRef = { name: 'positions', key: { positions: 1 } };
const GAP_STREAM = '$gap';
const BATCH = 1000;
/** How far head() must move before it is saved, so a new process need not walk the whole log. */
const HEAD_HINT_STEP = 1000;

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

const satisfies = (expected: ExpectedVersion, actual: number): boolean =>
  expected === 'any' || (expected === 'no_stream' ? actual === 0 : expected === actual);

/**
 * The log as commit documents with global positions from a counter. A position is allocated before
 * its commit is written, so a reader may see a later commit while an earlier one is still in flight:
 * readers only ever return the contiguous prefix, and seal a hole whose writer is gone
 * (gapTimeoutMs) so it cannot land afterwards. No transactions needed: every decision is one
 * single-document write arbitrated by a unique index.
 */
export class MongoEventStore implements EventStore {
  private readonly events: Collection<CommitDoc>;
  private readonly counters: Collection<{ _id: string; value: number }>;
  private readonly appended = new EventEmitter().setMaxListeners(0);
  /** Bumped on every wake-up, so a waiter notices one that fired while it was reading head(). */
  private wakeups = 0;
  private headCache = 0;
  private headHint = 0;
  /** The hole readers are waiting on, and since when this process has seen it. */
  private hole: { from: number; to: number; since: number } | null = null;
  private watching: Promise<void> | null = null;
  private changeStream: ChangeStream | null = null;
  private readonly closing = new AbortController();

  private constructor(
    db: Db,
    private readonly opts: { gapTimeoutMs: number; pollIntervalMs: number },
  ) {
    this.events = db.collection('events');
    this.counters = db.collection('counters');
  }

  static async open(db: Db, opts: { gapTimeoutMs: number; pollIntervalMs: number }): Promise<MongoEventStore> {
    const store = new MongoEventStore(db, opts);
    await store.events.createIndexes([
      { key: STREAM_INDEX.key, name: STREAM_INDEX.name, unique: true },
      { key: POSITIONS_INDEX.key, name: POSITIONS_INDEX.name, unique: true },
    ]);
    store.headHint = store.headCache = (await store.counters.findOne({ _id: 'head' }))?.value ?? 0;
    return store;
  }

  async append(streamId: string, events: NewEvent[], opts: { expectedVersion: ExpectedVersion; meta: Meta }): Promise<AppendResult> {
    if (events.length === 0) throw new Error('append needs at least one event');
    if (streamId === GAP_STREAM) throw new Error(`stream id ${GAP_STREAM} is reserved`);
    const valid = events.map((e) => validateData(e.type, e.data));
    // Readers parse meta too: refuse what they could not read.
    const meta = validateMeta(opts.meta);
    const { expectedVersion } = opts;
    for (;;) {
      const actual = await this.streamVersion(streamId);
      if (!satisfies(expectedVersion, actual)) throw new WrongExpectedVersionError(streamId, expectedVersion, actual);
      const last = await this.allocate(valid.length);
      const first = last - valid.length + 1;
      const recordedAt = new Date().toISOString();
      try {
        await this.events.insertOne({
          _id: last,
          position: first,
          positionEnd: last,
          positions: range(first, last),
          streamId,
          versions: range(actual + 1, actual + valid.length),
          events: valid.map((e, i) => ({
            eventId: newEventId(),
            version: actual + 1 + i,
            position: first + i,
            type: e.type,
            schemaVersion: SCHEMA_VERSION,
            data: e.data,
            meta: meta,
            recordedAt,
          })),
        });
      } catch (err) {
        if (isDuplicateKey(err, STREAM_INDEX)) {
          // Lost the race for these versions: seal our positions so readers need not wait for them.
          await this.seal(first, last);
          if (expectedVersion === 'any') continue;
          throw new WrongExpectedVersionError(streamId, expectedVersion, await this.streamVersion(streamId));
        }
        // A reader sealed our positions (we were slower than gapTimeoutMs); nothing was written.
        if (isDuplicateKey(err)) continue;
        throw err;
      }
      this.wake();
      return { version: actual + valid.length, firstPosition: first, lastPosition: last };
    }
  }

  async readStream(streamId: string): Promise<StoredEvent[]> {
    const commits = await this.events.find({ streamId }, { sort: { _id: 1 } }).toArray();
    return commits.flatMap((c) => c.events.map((e) => decodeStored({ ...e, streamId })));
  }

  async readAll({ after, limit }: { after: number; limit: number }): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    if (limit <= 0) return out;
    await this.walk(after, Math.min(limit, BATCH), (commit) => {
      const events = commit.events.filter((e) => e.position > after);
      // Whole commits only (one larger than `limit` comes alone), so a checkpoint never splits one.
      if (out.length > 0 && out.length + events.length > limit) return false;
      for (const e of events) out.push(decodeStored({ ...e, streamId: commit.streamId }));
      return true;
    });
    return out;
  }

  async head(): Promise<number> {
    await this.walk(this.headCache, BATCH, () => true, { position: 1, positionEnd: 1 });
    const head = this.headCache;
    if (head >= this.headHint + HEAD_HINT_STEP) {
      await upsertRetry(() => this.counters.updateOne({ _id: 'head' }, { $max: { value: head } }, { upsert: true }));
      this.headHint = head;
    }
    return head;
  }

  async waitForAppend(after: number, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    this.watching ??= this.watch();
    const seen = this.wakeups;
    if (signal?.aborted || (await this.head()) > after || this.wakeups !== seen) return;
    // Come back when the hole we are stuck on may be sealed, even if nothing else happens.
    const staleIn = this.hole ? this.hole.since + this.opts.gapTimeoutMs - Date.now() : maxWaitMs;
    await waitForWakeUp(this.appended, 'append', Math.max(0, Math.min(maxWaitMs, staleIn)), signal);
  }

  async close(): Promise<void> {
    this.closing.abort();
    await this.changeStream?.close().catch(() => undefined);
    await this.watching;
  }

  wake(): void {
    this.wakeups += 1;
    this.appended.emit('append');
  }

  /** Commits of a stream are in position order too: each one read the stream's version before allocating. */
  private async streamVersion(streamId: string): Promise<number> {
    const last = await this.events.findOne({ streamId }, { sort: { _id: -1 }, projection: { versions: 1 } });
    return last?.versions.at(-1) ?? 0;
  }

  /** Reserves `n` positions; returns the last one. */
  private async allocate(n: number): Promise<number> {
    // 'before', not 'after': mongo-java-server may return the document already changed by a concurrent $inc.
    const before = await upsertRetry(() =>
      this.counters.findOneAndUpdate({ _id: 'events' }, { $inc: { value: n } }, { upsert: true, returnDocument: 'before' }),
    );
    return (before?.value ?? 0) + n;
  }

  /** Marks positions from..to as never to be written. A duplicate key means someone wrote (or sealed) one first. */
  private async seal(from: number, to: number): Promise<void> {
    try {
      await this.events.insertOne({ _id: to, position: from, positionEnd: to, positions: range(from, to), streamId: GAP_STREAM, versions: [from], events: [], gap: true });
      this.wake();
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
  }

  /**
   * Walks the commits after `after` in position order while they are contiguous, handing each to
   * `visit` until it returns false; returns the last position walked. A hole ends the walk, unless
   * it has been there longer than gapTimeoutMs: then its writer is presumed gone and it is sealed.
   */
  private async walk(after: number, batch: number, visit: (c: CommitDoc) => boolean, projection?: Record<string, 1>): Promise<number> {
    let end = after;
    read: for (;;) {
      const commits = await this.events.find({ _id: { $gt: end } }, { sort: { _id: 1 }, limit: batch, projection }).toArray();
      for (const commit of commits) {
        if (commit.position > end + 1) {
          if (await this.sealIfStale(end + 1, commit.position - 1)) continue read;
          break read;
        }
        if (!visit(commit)) break read;
        end = commit.positionEnd;
        if (this.hole && end >= this.hole.to) this.hole = null;
      }
      if (commits.length < batch) break;
    }
    // Everything up to `after` must be known contiguous before `end` can become the head.
    if (after <= this.headCache) this.headCache = Math.max(this.headCache, end);
    return end;
  }

  /** True if the hole from..to is sealed now (or got filled meanwhile): read again. */
  private async sealIfStale(from: number, to: number): Promise<boolean> {
    const now = Date.now();
    // Late commits shrink a hole from either end; it is the same hole while it starts inside the first one seen.
    if (!this.hole || from < this.hole.from || from > this.hole.to) this.hole = { from, to, since: now };
    if (now - this.hole.since < this.opts.gapTimeoutMs) return false;
    await this.seal(from, to);
    return true;
  }

  /**
   * One change stream per store, only as a wake-up: the log is always read by position. Polled with
   * tryNext and an idle sleep, since mongo-java-server answers getMore at once (no awaitData). Where
   * change streams are unavailable (standalone mongod), polls head() instead.
   */
  private async watch(): Promise<void> {
    const { signal } = this.closing;
    this.changeStream = this.events.watch([{ $match: { operationType: 'insert' } }, { $project: { _id: 1 } }]);
    let polledHead = this.headCache;
    while (!signal.aborted) {
      let woke = false;
      try {
        if (this.changeStream) {
          woke = (await this.changeStream.tryNext()) !== null;
        } else {
          const head = await this.head();
          woke = head > polledHead;
          polledHead = head;
        }
      } catch (err) {
        if (signal.aborted) break;
        // Polling errors are left to the readers, who hit the same database and report them.
        if (this.changeStream) {
          console.warn(`mailtrail: no change stream on events (${(err as Error).message}); polling every ${this.opts.pollIntervalMs} ms`);
          await this.changeStream.close().catch(() => undefined);
          this.changeStream = null;
        }
      }
      if (woke) this.wake();
      else await sleep(this.opts.pollIntervalMs, signal);
    }
  }
}
