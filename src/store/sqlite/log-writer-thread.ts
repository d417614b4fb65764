/**
 * The worker thread of LogWriter (log-writer.ts): the embedded store's appends and blob puts, on
 * a connection of its own, with the same group commits as in-thread (SqliteEventStore, PackBlobStore).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { WrongExpectedVersionError, type AppendResult } from '../port.js';
import type Database from 'better-sqlite3';
import { openDatabase } from './database.js';
import { openLog, type Log } from './log.js';
import type { LogWriteReply, LogWriteRequest, LogWriterOptions, LogWriterStatus } from './log-writer.js';

const port = parentPort!;
const opts = workerData as LogWriterOptions;
let opened: { db: Database.Database; log: Log };
try {
  const db = openDatabase(opts.file);
  opened = { db, log: await openLog(db, { ...opts, pollIntervalMs: 1000 }) };
} catch (error) {
  port.postMessage({ failed: error instanceof Error ? error.message : String(error) } satisfies LogWriterStatus);
  process.exit(1);
}
const { db, log } = opened;
const { events, blobs } = log;
/** After `close`, nothing more is written (a put would open a new pack on a closed store). */
let closed = false;

const errorOf = (error: unknown): LogWriteReply['error'] => {
  if (error instanceof WrongExpectedVersionError) return { name: error.name, message: error.message, conflict: { streamId: error.streamId, expected: error.expected, actual: error.actual } };
  const e = error instanceof Error ? error : new Error(String(error));
  return { name: e.name, message: e.message, code: (e as { code?: unknown }).code as string | undefined };
};

/** Replies of one tick, sent as one message. */
let replies: LogWriteReply[] = [];
const reply = (r: LogWriteReply): void => {
  if (replies.length === 0) {
    setImmediate(() => {
      const batch = replies;
      replies = [];
      port.postMessage(batch);
    });
  }
  replies.push(r);
};

const answer = (n: number, work: Promise<Omit<LogWriteReply, 'n'>>): void => {
  work.then(
    (r) => reply({ n, ...r }),
    (error: unknown) => reply({ n, error: errorOf(error) }),
  );
};

port.on('message', (batch: LogWriteRequest[]) => {
  for (const m of batch) handle(m);
});
port.postMessage({ ready: true } satisfies LogWriterStatus);

function handle(m: LogWriteRequest): void {
  if (closed) return answer(m.n, Promise.reject(Object.assign(new Error('the store is closed'), { code: 'ESTORECLOSED' })));
  switch (m.kind) {
    case 'append':
      return answer(m.n, events.appendSerialized(m.append).then((result: AppendResult) => ({ result })));
    case 'put':
      return answer(
        m.n,
        (async () => {
          const ref = await blobs.put(Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength));
          return { ref, row: blobs.locate(ref.sha256)! };
        })(),
      );
    case 'close':
      closed = true;
      return answer(
        m.n,
        (async () => {
          await log.close();
          db.close();
          return {};
        })(),
      );
  }
}

