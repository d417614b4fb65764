import { mkdirSync } from 'node:fs';
import { apiRoutes } from './api/http.js';
import { apiSettings } from './api/settings.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { startHttpServer, type HttpServer } from './http/server.js';
import { LOCAL_DELIVERY } from './mail/local-delivery.js';
import { Metrics } from './metrics.js';
import type { Projector } from './projection/runner.js';
import { ProjectorThread } from './projection/thread.js';
import { Relay, type RelayDeps } from './relay/relay.js';
import { systemResolver, type DnsResolver } from './smtp/dns.js';
import { FailureLimiter } from './security/limits.js';
import { SMTP_VIEWS, startSmtpServer, type SmtpObserver, type SmtpService } from './smtp/server.js';
import { startSmtpWorkers } from './smtp/workers.js';
import { ensureWebBuild, webRoutes } from './web/serve.js';
import { openStore } from './store/open.js';
import { lockDataDir } from './store/sqlite/server-lock.js';
import type { Store } from './store/port.js';
import { allProjections } from '../projections/index.js';

export interface App {
  store: Store;
  projectors: Map<string, Projector>;
  http: HttpServer;
  smtp: SmtpService;
  relay: Relay | null;
  metrics: Metrics;
  stop(): Promise<void>;
}

/** What tests (and the metrics wiring) may plug in. */
export interface AppOverrides {
  /** DNS for the SMTP mail authentication checks (default: the system resolver). */
  resolver?: DnsResolver;
  /** Told of SMTP connections and transactions (besides the metrics). */
  smtpObserver?: SmtpObserver;
  /** MX lookups of the relay (default: the system resolver). */
  mxResolver?: RelayDeps['resolver'];
  /**
   * The store can no longer write (the embedded store's writer thread died): nothing more can be
   * accepted. The server (main.ts) stops and exits with an error, for its supervisor to restart it.
   */
  onFatal?: (error: Error) => void;
}

/** Starts the whole server: the store, the projectors' thread, the HTTP endpoints, SMTP. */
export async function startApp(config: Config, logger: Logger, overrides: AppOverrides = {}): Promise<App> {
  const metrics = new Metrics();
  // The embedded store is one server's: a second one on the same folder is refused here.
  const lock = config.MONGODB_URI ? null : (mkdirSync(config.DATA_DIR, { recursive: true }), lockDataDir(config.DATA_DIR));
  try {
    return await startUnlocked(config, logger, overrides, metrics, () => lock?.release());
  } catch (error) {
    lock?.release();
    throw error;
  }
}

async function startUnlocked(config: Config, logger: Logger, overrides: AppOverrides, metrics: Metrics, unlock: () => void): Promise<App> {
  let storeFailure: Error | null = null;
  const store = await openStore(config, {
    writerThread: true,
    onWriterFailure: (error) => {
      storeFailure = error;
      logger.fatal({ err: error }, 'the store cannot write any more; every message and change is refused until mailtrail restarts');
      overrides.onFatal?.(error);
    },
  });
  metrics.instrumentStore(store);
  let thread: ProjectorThread;
  try {
    thread = await ProjectorThread.start(config, logger, store, [...allProjections.map((p) => p.spec.name), LOCAL_DELIVERY]);
  } catch (error) {
    await store.close();
    throw error;
  }
  // The views, and the follower of the thread that stores local copies a send left out: /health
  // and the metrics show it like a projector, /ready and read-your-writes do not wait for it.
  const projectors = new Map<string, Projector>([...thread.projectors].filter(([name]) => name !== LOCAL_DELIVERY));
  const followers = new Map<string, Projector>([[LOCAL_DELIVERY, thread.projectors.get(LOCAL_DELIVERY)!]]);
  // Every append of this process wakes the projectors at once (appends of others: at their next poll).
  const append = store.events.append.bind(store.events);
  store.events.append = async (...args) => {
    const result = await append(...args);
    thread.wake();
    return result;
  };
  const viewsCurrent = async (timeoutMs: number): Promise<boolean> => {
    const head = await store.events.head();
    const caughtUp = await Promise.all(SMTP_VIEWS.map((v) => projectors.get(v)?.waitFor(head, timeoutMs) ?? true));
    return caughtUp.every(Boolean);
  };
  const relay = config.RELAY_ENABLED
    ? new Relay(store, config, logger, { owner: config.INSTANCE_ID, ...(overrides.mxResolver ? { resolver: overrides.mxResolver } : {}) })
    : null;
  metrics.watchProjectors(store, thread.projectors);
  const api = {
    store,
    projectors,
    settings: apiSettings(config, logger),
    logger,
    loginFailures: new FailureLimiter(config.LOGIN_MAX_FAILURES, config.LOGIN_FAILURE_WINDOW_MS),
    resolver: overrides.resolver ?? systemResolver(config.SMTP_DNS_TIMEOUT_MS),
    metrics,
  };
  const observer: SmtpObserver = {
    connection() {
      metrics.smtpConnections.inc();
      overrides.smtpObserver?.connection?.();
    },
    transaction(t) {
      metrics.smtpMessages.inc({ outcome: t.outcome, reason: t.reason });
      metrics.smtpDataBytes.inc(t.bytes);
      overrides.smtpObserver?.transaction?.(t);
    },
  };
  let started: HttpServer | null = null;
  let smtp: SmtpService | undefined;
  try {
    const web = await ensureWebBuild({ log: (message, details) => logger.info(details ?? {}, message) });
    // HTTP at once, so that /ready can say the views are catching up (e.g. while a crashed
    // instance's leases run out) instead of refusing connections.
    started = await startHttpServer({ config, logger, store, projectors, followers, metrics, storeFailure: () => storeFailure, routes: [apiRoutes(api, config.TRUST_PROXY), webRoutes(web.distDir)] });
    // SMTP answers "no such mailbox" from the views: let them catch up with the log first.
    if (!(await viewsCurrent(30_000))) logger.warn('SMTP starts before the mailboxes view has caught up with the log');
    smtp =
      config.SMTP_WORKERS > 0
        ? await startSmtpWorkers({
            config,
            logger,
            observer,
            onStored: () => {
              thread.wake();
              store.events.wake(); // this process's own waiters: the relay, live updates
            },
          })
        : await startSmtpServer({ config, logger, store, resolver: overrides.resolver, viewsCurrent, observer });
    if (relay) {
      await relay.start();
      metrics.watchRelay(store, relay);
    }
  } catch (error) {
    // Nothing of a failed start stays behind (a port in use, a web build that fails, a store that
    // stops answering).
    await relay?.stop();
    await smtp?.close();
    await started?.close();
    await thread.stop();
    await store.close();
    throw error;
  }
  const http = started;
  logger.info(
    { store: store.kind, port: http.port, smtpPort: smtp.port, smtpsPort: smtp.securePort, dataDir: store.kind === 'sqlite' ? config.DATA_DIR : undefined },
    'mailtrail started',
  );
  return {
    store,
    projectors,
    http,
    smtp,
    relay,
    metrics,
    async stop() {
      // SMTP first: stop accepting and finish the messages being received while the store is up.
      await smtp.close();
      await relay?.stop();
      await http.close();
      await thread.stop();
      await store.close();
      unlock();
    },
  };
}
