import type { Config } from './config.js';
import type { Logger } from './log.js';
import { startHttpServer, type HttpServer } from './http/server.js';
import { ProjectionRunner } from './projection/runner.js';
import { openStore } from './store/open.js';
import type { Store } from './store/port.js';
import { allProjections } from '../projections/index.js';

export interface App {
  store: Store;
  projectors: Map<string, ProjectionRunner>;
  http: HttpServer;
  stop(): Promise<void>;
}

/** Starts the whole server: the store, one runner per view, the HTTP endpoints. */
export async function startApp(config: Config, logger: Logger): Promise<App> {
  const store = await openStore(config);
  const projectors = new Map(
    allProjections.map((p) => [
      p.spec.name,
      new ProjectionRunner(store, p, { owner: config.INSTANCE_ID, logger, leaseTtlMs: config.PROJECTOR_LEASE_TTL_MS }),
    ]),
  );
  for (const runner of projectors.values()) await runner.start();
  const http = await startHttpServer({ config, logger, store, projectors });
  logger.info({ store: store.kind, port: http.port, dataDir: store.kind === 'sqlite' ? config.DATA_DIR : undefined }, 'mailtrail started');
  return {
    store,
    projectors,
    http,
    async stop() {
      await http.close();
      for (const runner of projectors.values()) await runner.stop();
      await store.close();
    },
  };
}
