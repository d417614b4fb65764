import { EventEmitter } from 'node:events';
import type { Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/port.js';
import { waitForWakeUp } from '../store/wait.js';
import { startModuleThread } from '../threads/start.js';
import type { Projector, RunnerStatus } from './runner.js';

const THREAD_MODULE = new URL('./projector-thread.ts', import.meta.url).href;

export type ToProjectors = { kind: 'wake' } | { kind: 'waiters'; name: string; count: number } | { kind: 'stop' };
export type FromProjectors =
  /** The runners that changed since the last report, all in one message (each message wakes the main thread). */
  | { kind: 'states'; states: { name: string; status: RunnerStatus; position: number; lastError: string | null }[] }
  | { kind: 'started' }
  | { kind: 'stopped' }
  | { kind: 'failed'; message: string };

/** A thread that died within this time of starting is restarted after a pause, so a crash loop does not spin. */
const EARLY_DEATH_MS = 5000;
const RESTART_PAUSE_MS = 1000;
const RESTART_PAUSE_MAX_MS = 30_000;
/** How long stop() lets the runners finish their batch and release their leases before it ends the thread. */
const STOP_TIMEOUT_MS = 10_000;

/** A projector of the thread, as the main thread sees it. */
class RemoteProjector implements Projector {
  status: RunnerStatus = 'standby';
  position = 0;
  lastError: string | null = null;
  private readonly progressed = new EventEmitter();
  private waiting = 0;

  constructor(
    readonly name: string,
    private readonly store: Store,
    private readonly tell: (m: ToProjectors) => void,
  ) {
    this.progressed.setMaxListeners(0);
  }

  /** A new thread knows nothing of the readers waiting here. */
  tellWaiters(): void {
    if (this.waiting > 0) this.tell({ kind: 'waiters', name: this.name, count: this.waiting });
  }

  update(s: { status: RunnerStatus; position: number; lastError: string | null }): void {
    this.status = s.status;
    this.position = Math.max(this.position, s.position);
    this.lastError = s.lastError;
    this.progressed.emit('progress');
  }

  async waitFor(position: number, timeoutMs: number): Promise<boolean> {
    if (this.position >= position) return true;
    const deadline = Date.now() + timeoutMs;
    if (this.waiting++ === 0) this.tell({ kind: 'waiters', name: this.name, count: 1 });
    try {
      while (this.position < position) {
        const left = deadline - Date.now();
        if (left <= 0 || this.status === 'stopped') return false;
        // Another process may hold the lease and project this view: read the shared checkpoint too.
        if (this.status === 'standby') this.position = Math.max(this.position, await this.store.views.checkpoint(this.name));
        await waitForWakeUp(this.progressed, 'progress', Math.min(left, this.status === 'standby' ? 50 : left));
      }
      return true;
    } finally {
      if (--this.waiting === 0) this.tell({ kind: 'waiters', name: this.name, count: 0 });
    }
  }
}

/**
 * The projectors (one runner per view, see ProjectionRunner, and the local delivery follower) in a
 * worker thread with a store connection of its own, so that folding the log into the views runs on
 * another core than SMTP and the API. The main thread wakes it after each append (`wake`), and
 * keeps a RemoteProjector per name that knows the thread's position, status and last error. A
 * thread that dies is started again; meanwhile its views count as parked.
 */
export class ProjectorThread {
  readonly projectors: Map<string, RemoteProjector>;
  private worker: Worker | null = null;
  private stopping = false;
  private wakeQueued = false;
  /** Once the first thread has started, a dead one is replaced (before that, start() fails instead). */
  private started = false;
  /** Threads in a row that died early or could not start: the pause before the next grows. */
  private failures = 0;
  private restart: NodeJS.Timeout | null = null;

  private constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    store: Store,
    names: string[],
  ) {
    this.projectors = new Map(names.map((name) => [name, new RemoteProjector(name, store, (m) => this.worker?.postMessage(m))]));
  }

  /** Starts the thread; resolves once every runner has started (read its checkpoint). */
  static async start(config: Config, logger: Logger, store: Store, names: string[]): Promise<ProjectorThread> {
    const thread = new ProjectorThread(config, logger, store, names);
    await thread.spawn();
    thread.started = true;
    return thread;
  }

  private spawn(): Promise<void> {
    const spawnedAt = Date.now();
    const worker = startModuleThread(THREAD_MODULE, { config: this.config });
    this.worker = worker;
    let running = false;
    return new Promise((resolve, reject) => {
      worker.on('message', (m: FromProjectors) => {
        if (m.kind === 'states') for (const state of m.states) this.projectors.get(state.name)?.update(state);
        else if (m.kind === 'started') {
          running = true;
          for (const p of this.projectors.values()) p.tellWaiters();
          resolve();
        } else if (m.kind === 'failed') {
          // The thread has stopped its runners and exits by itself.
          this.logger.error({ err: m.message }, 'the projector thread could not start');
          reject(new Error(`the projector thread could not start: ${m.message}`));
        }
      });
      worker.on('error', (error) => {
        this.logger.error({ err: error }, 'projector thread crashed');
        reject(error);
      });
      worker.on('exit', (code) => {
        if (this.worker === worker) this.worker = null;
        reject(new Error(`the projector thread exited (code ${code}) before it started`));
        if (this.stopping || !this.started) return;
        for (const p of this.projectors.values()) p.update({ status: 'parked', position: p.position, lastError: `the projector thread exited (code ${code})` });
        const early = !running || Date.now() - spawnedAt < EARLY_DEATH_MS;
        this.failures = early ? this.failures + 1 : 0;
        const pause = early ? Math.min(RESTART_PAUSE_MAX_MS, RESTART_PAUSE_MS * 2 ** (this.failures - 1)) : 0;
        this.logger.error({ code, restartInMs: pause }, 'projector thread exited; starting another');
        this.restart = setTimeout(() => {
          this.restart = null;
          if (this.stopping) return;
          this.spawn().then(
            () => undefined,
            () => undefined, // its exit schedules the next try
          );
        }, pause);
      });
    });
  }

  /** Something was appended: the runners look now, not at their next poll. One message per tick. */
  wake(): void {
    if (this.wakeQueued || !this.worker) return;
    this.wakeQueued = true;
    queueMicrotask(() => {
      this.wakeQueued = false;
      this.worker?.postMessage({ kind: 'wake' } satisfies ToProjectors);
    });
  }

  /** Stops the runners (each releases its lease) and the thread; a thread that does not stop in time is ended. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restart) clearTimeout(this.restart);
    const worker = this.worker;
    if (worker) {
      await new Promise<void>((resolve) => {
        const deadline = setTimeout(() => {
          this.logger.warn('the projector thread did not stop in time; ending it (its leases run out)');
          void worker.terminate();
        }, STOP_TIMEOUT_MS);
        worker.once('exit', () => {
          clearTimeout(deadline);
          resolve();
        });
        worker.on('message', (m: FromProjectors) => {
          if (m.kind === 'stopped') void worker.terminate();
        });
        worker.postMessage({ kind: 'stop' } satisfies ToProjectors);
      });
    }
    for (const p of this.projectors.values()) p.update({ status: 'stopped', position: p.position, lastError: p.lastError });
  }
}
