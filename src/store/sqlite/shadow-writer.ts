import type { Worker } from 'node:worker_threads';
import { startModuleThread } from '../../threads/start.js';
import { LeaseLostError, type Lease, type ShadowWriter, type ViewCommit, type ViewDoc } from '../port.js';
import type { SerializedCommit, SqliteViewStore } from './view-store.js';

const THREAD_MODULE = new URL('./shadow-writer-thread.ts', import.meta.url).href;

/**
 * Commits sent but not written yet, at most (a replay batch makes one per view): how far the fold
 * runs ahead. The thread writes all it has queued in one transaction, so a deep queue means few,
 * large transactions, and neither side waits for the other: at 16 the fold sat idle a sixth of
 * the time and replay ran ~25 % slower.
 */
const MAX_AHEAD = 128;

export type ShadowWriteRequest = { n: number; commit: SerializedCommit };
export type ShadowWriteReply = { n: number; error?: { name: string; message: string } };

type Unwritten = { doc: ViewDoc | null; position: number; n: number };

/**
 * A rebuild's shadow rows written by a worker thread on a connection of its own, so the fold
 * (reading and decoding the log, evolving documents, serialising them) and the inserts, commits and
 * WAL checkpoints run on two cores. Commits are written in the order they were made, each fenced
 * by its lease like any other commit. Documents committed but not written yet are kept here and
 * answer loads, so the fold never reads a row older than what it committed.
 */
export class SqliteShadowWriter implements ShadowWriter {
  readonly indexesAsRowsArrive = true;
  private readonly worker: Worker;
  private readonly unwritten = new Map<string, Unwritten>();
  /** The keys and lease of each batch not written yet. */
  private readonly keysOf = new Map<number, string[]>();
  private readonly leases = new Map<number, Lease>();
  private sent = 0;
  private written = 0;
  private failure: Error | null = null;
  private waiters: { n: number; resolve: () => void }[] = [];
  private closing = false;

  constructor(
    private readonly views: SqliteViewStore,
    file: string,
  ) {
    this.worker = startModuleThread(THREAD_MODULE, { file });
    this.worker.on('message', (reply: ShadowWriteReply) => this.onWritten(reply));
    this.worker.on('error', (error) => this.fail(error));
    this.worker.on('exit', (code) => {
      if (!this.closing) this.fail(new Error(`the shadow writer thread exited (code ${code})`));
    });
  }

  private onWritten({ n, error }: ShadowWriteReply): void {
    if (error) {
      const lease = this.leases.get(n);
      this.fail(error.name === 'LeaseLostError' && lease ? new LeaseLostError(lease) : Object.assign(new Error(error.message), { name: error.name }));
    }
    this.leases.delete(n);
    for (const key of this.keysOf.get(n) ?? []) if (this.unwritten.get(key)?.n === n) this.unwritten.delete(key);
    this.keysOf.delete(n);
    this.written = n;
    this.wake();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => this.failure || w.n <= this.written);
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  private async until(n: number): Promise<void> {
    if (!this.failure && this.written < n) await new Promise<void>((resolve) => this.waiters.push({ n, resolve }));
    if (this.failure) throw this.failure;
  }

  async load(view: string, ids: string[]): Promise<Map<string, { doc: ViewDoc | null; position: number }>> {
    if (this.failure) throw this.failure;
    const out = new Map<string, { doc: ViewDoc | null; position: number }>();
    const stored: string[] = [];
    for (const id of ids) {
      const pending = this.unwritten.get(`${view}\u0000${id}`);
      if (pending) out.set(id, { doc: pending.doc, position: pending.position });
      else stored.push(id);
    }
    if (stored.length > 0) for (const [id, value] of await this.views.load(view, stored)) out.set(id, value);
    return out;
  }

  async commit(c: ViewCommit): Promise<void> {
    if (this.failure) throw this.failure;
    const n = ++this.sent;
    const keys = c.docs.map(({ id, doc, position }) => {
      const key = `${c.view}\u0000${id}`;
      this.unwritten.set(key, { doc, position, n });
      return key;
    });
    this.keysOf.set(n, keys);
    this.leases.set(n, c.lease);
    const request: ShadowWriteRequest = { n, commit: this.views.serialize(c) };
    this.worker.postMessage(request);
    await this.until(n - MAX_AHEAD);
  }

  async flush(): Promise<void> {
    await this.until(this.sent);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.worker.terminate();
  }
}
