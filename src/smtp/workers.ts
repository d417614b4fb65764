import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { SmtpObserver, SmtpService } from './server.js';
import { loadTlsMaterial } from './tls.js';

/**
 * SMTP in worker processes (SMTP_WORKERS > 0): node:cluster shares the listening sockets, so the
 * workers take turns at new connections, and each one receives, checks and stores its messages
 * itself, straight into the shared store (an SQLite file in WAL mode takes one writer at a time
 * and each process commits and fsyncs its own groups; blob packs are per process). The CPU work
 * of a message - SMTP, MIME parsing, mail authentication, hashing - then runs on every core,
 * while this process keeps the API, the projectors and the relay.
 */

/** Messages between this process and its SMTP workers. */
export type WorkerMessage =
  /** Listening for `start`: a message sent before that could be lost. */
  | { kind: 'ready' }
  | { kind: 'listening'; port: number; securePort: number | null }
  | { kind: 'connection' }
  | { kind: 'transaction'; t: Parameters<NonNullable<SmtpObserver['transaction']>>[0] };
/** `start` carries the main process's validated settings, so a worker runs with exactly those. */
export type PrimaryMessage = { kind: 'start'; config: Config } | { kind: 'shutdown' };

/** Limits meant for the whole server, shared out between `workers` processes (rounded up). */
export function workerShare(config: Config, workers: number): Config {
  const share = (n: number): number => Math.max(1, Math.ceil(n / workers));
  return {
    ...config,
    SMTP_MAX_CONNECTIONS: share(config.SMTP_MAX_CONNECTIONS),
    SMTP_CONNECTION_RATE_PER_IP: share(config.SMTP_CONNECTION_RATE_PER_IP),
    SMTP_MESSAGE_RATE_PER_IP: share(config.SMTP_MESSAGE_RATE_PER_IP),
    SMTP_AUTH_MAX_FAILURES: share(config.SMTP_AUTH_MAX_FAILURES),
    SMTP_AUTH_MAX_FAILURES_PER_IP: share(config.SMTP_AUTH_MAX_FAILURES_PER_IP),
  };
}

/** A worker that dies within this time of starting is restarted after RESTART_PAUSE_MS, so a crash loop does not spin. */
const EARLY_DEATH_MS = 5000;
const RESTART_PAUSE_MS = 1000;

export async function startSmtpWorkers(deps: {
  config: Config;
  logger: Logger;
  observer: SmtpObserver;
  /** A worker stored a message: wake this process's projectors now rather than at their next poll (they gather a few ms of appends after a wake-up). */
  onStored: () => void;
}): Promise<SmtpService> {
  const { config, observer } = deps;
  const log = deps.logger.child({ component: 'smtp-workers' });
  // Made once here: workers starting together must not each write a new self-signed certificate.
  loadTlsMaterial({ keyFile: config.TLS_KEY, certFile: config.TLS_CERT, dataDir: config.DATA_DIR, hostname: config.SMTP_HOSTNAME, logger: log });
  cluster.setupPrimary({ exec: fileURLToPath(new URL('./worker.ts', import.meta.url)) });

  let stopping = false;
  const live = new Set<Worker>();

  const fork = (): Promise<{ port: number; securePort: number | null }> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork();
      live.add(worker);
      const startedAt = Date.now();
      let listening = false;
      worker.on('message', (m: WorkerMessage) => {
        if (m.kind === 'ready') worker.send({ kind: 'start', config: workerShare(config, config.SMTP_WORKERS) } satisfies PrimaryMessage);
        else if (m.kind === 'listening') {
          listening = true;
          resolve({ port: m.port, securePort: m.securePort });
        } else if (m.kind === 'connection') observer.connection?.();
        else if (m.kind === 'transaction') {
          observer.transaction?.(m.t);
          if (m.t.outcome === 'accepted') deps.onStored();
        }
      });
      worker.on('exit', (code, signal) => {
        live.delete(worker);
        if (!listening) return reject(new Error(`SMTP worker exited (${signal ?? code}) before it listened; see its log lines above`));
        if (stopping) return;
        log.error({ pid: worker.process.pid, code, signal }, 'SMTP worker died; starting another');
        const delay = Date.now() - startedAt < EARLY_DEATH_MS ? RESTART_PAUSE_MS : 0;
        setTimeout(() => {
          if (!stopping) fork().catch((error: unknown) => log.error({ err: error }, 'SMTP worker could not be restarted'));
        }, delay);
      });
    });

  const stopAll = async (): Promise<void> => {
    stopping = true;
    const exits = [...live].map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    for (const w of live) if (w.isConnected()) w.send({ kind: 'shutdown' } satisfies PrimaryMessage);
    // Each worker finishes its messages within SMTP_SHUTDOWN_TIMEOUT_MS; past that (and a margin), it is stopped.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, config.SMTP_SHUTDOWN_TIMEOUT_MS + 5000)));
    await Promise.race([Promise.all(exits), deadline]);
    clearTimeout(timer);
    for (const w of live) w.process.kill('SIGKILL');
    await Promise.all(exits);
  };

  let ports: { port: number; securePort: number | null }[];
  try {
    ports = await Promise.all(Array.from({ length: config.SMTP_WORKERS }, fork));
  } catch (error) {
    await stopAll();
    throw error;
  }
  const { port, securePort } = ports[0]!;
  log.info({ workers: config.SMTP_WORKERS, port, securePort }, 'smtp workers listening');

  let closed: Promise<void> | null = null;
  return {
    port,
    securePort,
    close: () => (closed ??= stopAll()),
  };
}
