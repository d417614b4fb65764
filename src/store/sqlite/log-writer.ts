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

/** What the thread says besides replies: it is ready, or it could not open the store. */
export type LogWriterStatus = { ready: true } | { failed: string };

/**
 * The embedded store's writes - appends and blob puts - done by a worker thread on a connection of
 * its own: its transactions, WAL checkpoints and fsync bookkeeping run on another core than the
 * caller (SMTP and the API), with the same group commits and the same guarantees as in the
 * caller's thread (an append is answered once durable, a put as BlobStore.put promises). Reads stay
 * on the caller's connection: what a write made is visible there once it is answered.
 */
export class LogWriter {
  private worker: Worker | null = null;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (r: LogWriteReply) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;
  /** Set when close() begins: later requests are refused. */
  private closing = false;
  private queued: LogWriteRequest[] = [];
  private transfers: ArrayBuffer[] = [];

  private constructor(
    private readonly opts: LogWriterOptions,
    /** Told once when the thread dies: the store cannot write any more (the server stops for a restart). */
    private readonly onFailure: (error: Error) => void,
  ) {}

  /** Starts the thread; resolves once it has opened the store, so a thread that cannot fails the caller's start-up. */
  static async start(opts: LogWriterOptions, onFailure: (error: Error) => void = () => undefined): Promise<LogWriter> {
    const writer = new LogWriter(opts, onFailure);
    const worker = startModuleThread(THREAD_MODULE, opts);
    writer.worker = worker;
    await new Promise<void>((resolve, reject) => {
      const early = (error: Error): void => reject(new Error(`the log writer thread could not start: ${error.message}`));
      worker.once('error', early);
      worker.once('exit', (code) => early(new Error(`it exited (code ${code})`)));
      worker.once('message', (m: LogWriterStatus) => {
        worker.removeAllListeners('error').removeAllListeners('exit');
        if ('failed' in m) {
          void worker.terminate();
          reject(new Error(`the log writer thread could not start: ${m.failed}`));
        } else resolve();
      });
    });
    worker.unref();
    worker.on('message', (replies: LogWriteReply[]) => {
      for (const reply of replies) {
        const w = writer.waiting.get(reply.n);
        writer.waiting.delete(reply.n);
        w?.resolve(reply);
      }
      if (writer.waiting.size === 0) worker.unref();
    });
    worker.on('error', (error) => writer.fail(error));
    worker.on('exit', (code) => writer.fail(new Error(`the log writer thread exited (code ${code})`)));
    return writer;
  }

  private fail(error: Error): void {
    if (this.failure) return;
    if (this.closing) {
      // Closed: whatever is still unanswered (nothing, normally) will not be.
      this.failure = Object.assign(new Error('the store is closed'), { code: 'ESTORECLOSED' });
    } else {
      // Nothing unanswered is known to be durable: each caller gets the error (SMTP answers 451).
      // No second thread: index rows the dead one had staged would be lost under events that a
      // new one committed. Writes fail until the process is restarted.
      this.failure = Object.assign(new Error(`${error.message}; restart mailtrail`), { code: 'ELOGWRITER' });
      this.onFailure(this.failure);
    }
    for (const w of this.waiting.values()) w.reject(this.failure);
    this.waiting.clear();
  }

  /** Why writes fail, once they do (the thread died, or the store is closed). */
  get error(): Error | null {
    return this.failure;
  }

  private request(make: (n: number) => LogWriteRequest, transfer?: ArrayBuffer, closing = false): Promise<LogWriteReply> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing && !closing) return Promise.reject(Object.assign(new Error('the store is closed'), { code: 'ESTORECLOSED' }));
    const n = ++this.next;
    const worker = this.worker!;
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

  /** Stores `bytes` (copied: the caller's buffer may share memory with others); resolves as BlobStore.put promises. */
  async put(bytes: Buffer): Promise<{ ref: BlobRef; row: IndexRow }> {
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const reply = await this.request((n) => ({ n, kind: 'put', bytes: copy }), copy.buffer);
    return { ref: reply.ref!, row: reply.row! };
  }

  /** Writes what was asked before, makes it durable and ends the thread; later writes are refused. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const worker = this.worker!;
    if (!this.failure) await this.request((n) => ({ n, kind: 'close' }), undefined, true);
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
