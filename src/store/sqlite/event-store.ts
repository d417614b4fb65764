import { EventEmitter } from 'node:events';
import type Database from 'better-sqlite3';
import { decodeStored, newEventId, validateData, validateMeta, type Meta, type NewEvent, type StoredEvent } from '../../events/envelope.js';
import { SCHEMA_VERSION } from '../../events/types.js';
import { WrongExpectedVersionError, type AppendResult, type EventStore, type ExpectedVersion } from '../port.js';
import { waitForWakeUp } from '../wait.js';
import type { GroupSync } from './group-sync.js';

/** A row as `.raw()` returns it: arrays are cheaper to build than objects, and a read builds a million. */
type Row = [position: number, eventId: string, streamId: string, version: number, type: string, schemaVersion: number, data: string, meta: string, recordedAt: string];
const COLUMNS = 'position, event_id, stream_id, version, type, schema_version, data, meta, recorded_at';

/**
 * Rows of the log's file that others stage (the blob index) and the append batch writes in its own
 * transaction, so one tick's blobs and events cost one commit.
 */
export interface StagedRows {
  readonly hasStaged: boolean;
  /** Writes what is staged; runs inside the batch's transaction. */
  writeStaged(): void;
  /** The transaction committed (`failure` null) or failed: the rows stay staged for the next one, or are refused. */
  settle(failure: unknown): void;
}

/** An append validated and serialized: event data and meta as JSON text, as the rows hold them. */
export interface SerializedAppend {
  streamId: string;
  events: { type: string; data: string }[];
  expectedVersion: ExpectedVersion;
  meta: string;
}

/** Validates an append (a bad event fails its own caller, not the batch it would join) and serializes it. */
export function serializeAppend(streamId: string, events: NewEvent[], opts: { expectedVersion: ExpectedVersion; meta: Meta }): SerializedAppend {
  if (events.length === 0) throw new Error('append needs at least one event');
  const valid = events.map((e) => validateData(e.type, e.data));
  return {
    streamId,
    events: valid.map((e) => ({ type: e.type, data: JSON.stringify(e.data) })),
    expectedVersion: opts.expectedVersion,
    meta: JSON.stringify(validateMeta(opts.meta)),
  };
}

type PendingAppend = SerializedAppend & {
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
};

export const EVENTS_SCHEMA = `
  CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT NOT NULL,
    meta           TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    UNIQUE (stream_id, version)
  );`;

/** Decodes rows in log order. The events of one append share their meta text: it is parsed once per run of equal texts. */
function toStored(rows: Row[]): StoredEvent[] {
  let metaText = '';
  let meta: unknown = null;
  return rows.map(([position, eventId, streamId, version, type, schemaVersion, data, text, recordedAt]) => {
    if (text !== metaText) {
      metaText = text;
      meta = JSON.parse(text);
    }
    return decodeStored({ eventId, streamId, version, position, type, schemaVersion, data: JSON.parse(data), meta, recordedAt });
  });
}

/**
 * The log in one SQLite table. SQLite serialises writers, so the rowid order is the commit order
 * and every reader sees the same gap-free sequence. Appends that arrive in the same tick are
 * written in one transaction, and the WAL is fsync'd off the event loop after the commit (see
 * GroupSync): throughput grows with the number of concurrent writers, and nothing is
 * acknowledged before it is on disk.
 */
export class SqliteEventStore implements EventStore {
  private readonly appended = new EventEmitter();
  private pending: PendingAppend[] = [];
  private flushScheduled = false;
  private staged: StagedRows | null = null;
  private readonly stmt;

  constructor(
    private readonly db: Database.Database,
    private readonly pollIntervalMs: number,
    /** fdatasync of the WAL after each commit; null when durability on power loss is traded for speed. */
    private readonly walSync: GroupSync | null,
  ) {
    this.appended.setMaxListeners(0);
    this.stmt = {
      streamVersion: db.prepare<[string], { version: number }>(
        'SELECT version FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1',
      ),
      insert: db.prepare(
        `INSERT INTO events (event_id, stream_id, version, type, schema_version, data, meta, recorded_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      readStream: db.prepare<[string], Row>(`SELECT ${COLUMNS} FROM events WHERE stream_id = ? ORDER BY version`).raw(),
      readAll: db.prepare<[number, number], Row>(`SELECT ${COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?`).raw(),
      head: db.prepare<[], { head: number | null }>('SELECT max(position) AS head FROM events'),
    };
  }

  /** Rows written with each batch (see StagedRows); their owner calls `schedule` when it stages some. */
  writeWith(staged: StagedRows): void {
    this.staged = staged;
  }

  /** A batch (with whatever is staged and queued by then) is written at the end of this tick. */
  schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  async append(streamId: string, events: NewEvent[], opts: { expectedVersion: ExpectedVersion; meta: Meta }): Promise<AppendResult> {
    return this.appendSerialized(serializeAppend(streamId, events, opts));
  }

  /** Appends what serializeAppend made (here, or in the thread that asked the log writer). */
  appendSerialized(a: SerializedAppend): Promise<AppendResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ ...a, resolve, reject });
      this.schedule();
    });
  }

  private appendOne(p: PendingAppend): AppendResult {
    const actual = this.stmt.streamVersion.get(p.streamId)?.version ?? 0;
    const ok =
      p.expectedVersion === 'any' ||
      (p.expectedVersion === 'no_stream' ? actual === 0 : p.expectedVersion === actual);
    if (!ok) throw new WrongExpectedVersionError(p.streamId, p.expectedVersion, actual);
    const recordedAt = new Date().toISOString();
    let firstPosition = 0;
    let lastPosition = 0;
    p.events.forEach((e, i) => {
      const info = this.stmt.insert.run(newEventId(), p.streamId, actual + i + 1, e.type, SCHEMA_VERSION, e.data, p.meta, recordedAt);
      lastPosition = Number(info.lastInsertRowid);
      if (i === 0) firstPosition = lastPosition;
    });
    return { version: actual + p.events.length, firstPosition, lastPosition };
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0 && !this.staged?.hasStaged) return;
    const batch = this.pending;
    this.pending = [];
    // One transaction, one fsync for the whole batch, the staged blob index rows first (an event
    // never commits before the rows of the blobs it names). The version check runs inside the
    // write lock (BEGIN IMMEDIATE), so it is authoritative and a conflicting append is refused
    // before it writes: the others in the batch are unaffected.
    let outcomes: (AppendResult | WrongExpectedVersionError)[];
    try {
      outcomes = this.db
        .transaction(() => {
          this.staged?.writeStaged();
          return batch.map((p) => {
            try {
              return this.appendOne(p);
            } catch (error) {
              if (error instanceof WrongExpectedVersionError) return error;
              throw error;
            }
          });
        })
        .immediate();
    } catch (error) {
      // The commit itself failed (disk full, I/O error): nothing of the batch is durable.
      this.staged?.settle(error);
      for (const p of batch) p.reject(error);
      return;
    }
    this.staged?.settle(null);
    if (batch.length === 0) return;
    const settle = (): void => {
      batch.forEach((p, i) => {
        const o = outcomes[i]!;
        if (o instanceof WrongExpectedVersionError) p.reject(o);
        else p.resolve(o);
      });
      this.appended.emit('append');
    };
    if (!this.walSync) return settle();
    // Committed, not yet durable: answer once an fsync of the WAL has covered this commit.
    // The next batch can commit meanwhile and share the next fsync.
    this.walSync.sync().then(settle, (error: unknown) => {
      for (const p of batch) p.reject(error);
    });
  }

  /** Commits what is queued and waits for it to be durable. */
  async drain(): Promise<void> {
    this.flush();
    await this.walSync?.sync();
  }

  async readStream(streamId: string): Promise<StoredEvent[]> {
    return toStored(this.stmt.readStream.all(streamId));
  }

  async readAll(opts: { after: number; limit: number }): Promise<StoredEvent[]> {
    return toStored(this.stmt.readAll.all(opts.after, opts.limit));
  }

  async head(): Promise<number> {
    return this.stmt.head.get()?.head ?? 0;
  }

  wake(): void {
    this.appended.emit('append');
  }

  async waitForAppend(after: number, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    if ((await this.head()) > after) return;
    // Another process may append to the same file: the timer doubles as a poll.
    await waitForWakeUp(this.appended, 'append', Math.min(maxWaitMs, this.pollIntervalMs), signal);
  }
}
