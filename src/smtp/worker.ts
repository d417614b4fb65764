/**
 * Entry point of an SMTP worker process (see workers.ts): the SMTP server on its own connection
 * to the store, reporting connections and transactions to the main process.
 */
import process from 'node:process';
import type { Config } from '../config.js';
import { createLogger } from '../log.js';
import { openStore } from '../store/open.js';
import { sleep } from '../store/wait.js';
import { SMTP_VIEWS, startSmtpServer } from './server.js';
import type { PrimaryMessage, WorkerMessage } from './workers.js';

const tell = (m: WorkerMessage): void => {
  if (process.connected) process.send!(m);
};

const config = await new Promise<Config>((resolve) => {
  const onStart = (m: PrimaryMessage): void => {
    if (m.kind !== 'start') return;
    process.off('message', onStart);
    process.off('disconnect', gone);
    resolve(m.config);
  };
  const gone = (): never => process.exit(0);
  process.on('message', onStart);
  process.once('disconnect', gone);
  tell({ kind: 'ready' });
});
const logger = createLogger(config).child({ smtpWorker: process.pid });
// A worker whose store can no longer write exits with an error: the main process starts another.
let fatal = false;
let stopNow: (() => void) | null = null;
const store = await openStore(config, {
  writerThread: true,
  onWriterFailure: (error) => {
    logger.fatal({ err: error }, 'the store cannot write any more; this SMTP worker stops and is replaced');
    fatal = true;
    if (stopNow) setImmediate(stopNow);
    else process.exit(1);
  },
});

/** The main process projects the views; a worker knows they are current from their checkpoints. */
async function viewsCurrent(timeoutMs: number): Promise<boolean> {
  const head = await store.events.head();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const checkpoints = await Promise.all(SMTP_VIEWS.map((v) => store.views.checkpoint(v)));
    if (checkpoints.every((c) => c >= head)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}

const smtp = await startSmtpServer({
  config,
  logger,
  store,
  viewsCurrent,
  observer: {
    connection: () => tell({ kind: 'connection' }),
    transaction: (t) => tell({ kind: 'transaction', t }),
  },
});

let stopping: Promise<void> | null = null;
const stop = (): Promise<void> =>
  (stopping ??= (async () => {
    await smtp.close();
    await store.close();
    process.exit(fatal ? 1 : 0);
  })());
stopNow = () => void stop();
process.on('message', (m: PrimaryMessage) => {
  if (m.kind === 'shutdown') void stop();
});
// The main process is gone (crashed or killed): finish what is being received, then go too.
process.on('disconnect', () => void stop());
// A Ctrl-C reaches the whole process group; the main process leads the shutdown.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => void stop());

tell({ kind: 'listening', port: smtp.port, securePort: smtp.securePort });
