import type { Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import type { Meta, NewEvent, StoredEvent } from '../../events/envelope.js';
import type { BlobRef } from '../../events/types.js';
import { startModuleThread } from '../../threads/start.js';
import { WrongExpectedVersionError, type AppendResult, type BlobStore, type EventStore, type ExpectedVersion } from '../port.js';
import { collect, type IndexRow, type PackBlobStore } from './blob-store.js';
import { serializeAppend, type SerializedAppend, type SqliteEventStore } from './event-store.js';

const THREAD_MODULE = new URL('./log-writer-thread.ts', import.meta.url).href;

export interface LogWriterOptions {
  /** The log's database file. */
  file: string;
  blobsDir: string;
  durable: boolean;
}

export type LogWriteRequest =
  | { n: number; kind: 'append'; append: SerializedAppend }
  | { n: number; kind: 'put'; bytes: Uint8Array }
  | { n: number; kind: 'close' };

export type LogWriteReply = {
  n: number;
  result?: AppendResult;
  ref?: BlobRef;
  row?: IndexRow;
  error?: { name: string; message: string; code?: string; conflict?: { streamId: string; expected: ExpectedVersion; actual: number } };
};

/**
 * The embedded store's writes - appends and blob puts - done by a worker thread on a connection of
 * its own: its transactions, WAL checkpoints and fsync bookkeeping run on another core than the
 * caller (SMTP and the API), with the same group commits and the same durability (a request is
 * answered once it is durable). Reads stay on the caller's connection: what a write made is
 * visible there once it is answered. The thread starts with the first write.
 */
export class LogWriter {
  private worker: Worker | null = null;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (r: LogWriteReply) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;
  private closed = false;
  private queued: LogWriteRequest[] = [];
  private transfers: ArrayBuffer[] = [];

  constructor(private readonly opts: LogWriterOptions) {}

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = startModuleThread(THREAD_MODULE, this.opts);
    worker.unref();
    worker.on('message', (replies: LogWriteReply[]) => {
      for (const reply of replies) {
        const w = this.waiting.get(reply.n);
        this.waiting.delete(reply.n);
        w?.resolve(reply);
      }
      if (this.waiting.size === 0) worker.unref();
    });
    const fail = (error: Error): void => {
      if (this.closed) return;
      // Nothing unanswered is known to be durable: each caller gets the error (SMTP answers 451).
      // No second thread: index rows the dead one had staged would be lost under events that a
      // new one committed. Writes fail until the process is restarted.
      this.failure ??= Object.assign(new Error(`${error.message}; restart mailtrail`), { code: 'ELOGWRITER' });
      for (const w of this.waiting.values()) w.reject(this.failure);
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the log writer thread exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }

  private request(make: (n: number) => LogWriteRequest, transfer?: ArrayBuffer): Promise<LogWriteReply> {
    if (this.failure) return Promise.reject(this.failure);
    const n = ++this.next;
    const worker = this.thread();
    return new Promise((resolve, reject) => {
      this.waiting.set(n, { resolve, reject });
      if (this.waiting.size === 1) worker.ref();
      // The requests of one tick go as one message (its fixed cost is most of a small request's).
      if (this.queued.length === 0) setImmediate(() => this.send());
      this.queued.push(make(n));
      if (transfer) this.transfers.push(transfer);
    }).then((reply) => {
      const e = (reply as LogWriteReply).error;
      if (!e) return reply as LogWriteReply;
      if (e.conflict) throw new WrongExpectedVersionError(e.conflict.streamId, e.conflict.expected, e.conflict.actual);
      throw Object.assign(new Error(e.message), { name: e.name, code: e.code });
    });
  }

  private send(): void {
    const batch = this.queued;
    const transfers = this.transfers;
    this.queued = [];
    this.transfers = [];
    if (this.failure) return; // already rejected by the failure
    this.worker?.postMessage(batch, transfers);
  }

  async append(append: SerializedAppend): Promise<AppendResult> {
    return (await this.request((n) => ({ n, kind: 'append', append }))).result!;
  }

  /** Stores `bytes` (copied: the caller's buffer may share memory with others); resolves once durable. */
  async put(bytes: Buffer): Promise<{ ref: BlobRef; row: IndexRow }> {
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const reply = await this.request((n) => ({ n, kind: 'put', bytes: copy }), copy.buffer);
    return { ref: reply.ref!, row: reply.row! };
  }

  /** Writes what is queued, makes it durable and ends the thread. */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker || this.failure) return;
    await this.request((n) => ({ n, kind: 'close' }));
    this.closed = true;
    await worker.terminate();
  }
}

/** SqliteEventStore's reads (this thread's connection) with the appends of a LogWriter. */
export class WriterEventStore implements EventStore {
  constructor(
    private readonly reads: SqliteEventStore,
    private readonly writer: LogWriter,
  ) {}

  async append(streamId: string, events: NewEvent[], opts: { expectedVersion: ExpectedVersion; meta: Meta }): Promise<AppendResult> {
    const result = await this.writer.append(serializeAppend(streamId, events, opts));
    this.reads.wake();
    return result;
  }

  readStream(streamId: string): Promise<StoredEvent[]> {
    return this.reads.readStream(streamId);
  }

  readAll(opts: { after: number; limit: number }): Promise<StoredEvent[]> {
    return this.reads.readAll(opts);
  }

  head(): Promise<number> {
    return this.reads.head();
  }

  waitForAppend(after: number, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    return this.reads.waitForAppend(after, maxWaitMs, signal);
  }

  wake(): void {
    this.reads.wake();
  }
}

/** PackBlobStore's reads (this thread's connection and handles) with the puts of a LogWriter. */
export class WriterBlobStore implements BlobStore {
  constructor(
    private readonly reads: PackBlobStore,
    private readonly writer: LogWriter,
  ) {}

  async put(data: Buffer | Readable): Promise<BlobRef> {
    const { ref, row } = await this.writer.put(Buffer.isBuffer(data) ? data : await collect(data));
    this.reads.remember(ref.sha256, row);
    return ref;
  }

  get(sha256: string): Promise<Buffer> {
    return this.reads.get(sha256);
  }

  has(sha256: string): Promise<boolean> {
    return this.reads.has(sha256);
  }
}
