import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RouteHandler } from '../api/http.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Projector } from '../projection/runner.js';
import type { Store } from '../store/port.js';

export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

interface Deps {
  config: Config;
  logger: Logger;
  store: Store;
  projectors: Map<string, Projector>;
  /** Other followers of the log (the local delivery follower): /health shows them, /ready does not wait for them. */
  followers?: Map<string, Projector>;
  metrics: Metrics;
  /** Why the store can no longer write, once it cannot (reads may still work). */
  storeFailure?: () => Error | null;
  /** Tried in order; each says whether it answered the request. */
  routes?: RouteHandler[];
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function projectorStates(deps: Deps): Promise<{ head: number; projectors: Record<string, { status: string; position: number; lag: number; error: string | null }> }> {
  const head = await deps.store.events.head();
  const entries = await Promise.all(
    [...deps.projectors, ...(deps.followers ?? [])].map(async ([name, r]) => {
      // The shared checkpoint: on MongoDB another instance may be the one projecting this view.
      const position = Math.max(r.position, await deps.store.views.checkpoint(name));
      return [name, { status: r.status, position, lag: Math.max(0, head - position), error: r.lastError }] as const;
    }),
  );
  return { head, projectors: Object.fromEntries(entries) };
}

type ProjectorStates = Awaited<ReturnType<typeof projectorStates>>['projectors'];

/**
 * Liveness: 200 when the store answers (and can write) and no projector has parked itself.
 * `only`: judge these projectors alone (readiness leaves out the followers that views do not need).
 */
async function health(deps: Deps, only?: Map<string, Projector>): Promise<{ status: number; body: unknown }> {
  const failure = deps.storeFailure?.();
  if (failure) return { status: 503, body: { status: 'down', store: deps.store.kind, error: failure.message } };
  try {
    const { head, projectors } = await projectorStates(deps);
    const parked = Object.entries(projectors).some(([name, p]) => (only ? only.has(name) : true) && p.status === 'parked');
    return { status: parked ? 503 : 200, body: { status: parked ? 'degraded' : 'ok', store: deps.store.kind, head, projectors } };
  } catch (error) {
    return { status: 503, body: { status: 'down', store: deps.store.kind, error: error instanceof Error ? error.message : String(error) } };
  }
}

/** Readiness: live, and every view within READY_MAX_LAG events of the log. */
async function ready(deps: Deps): Promise<{ status: number; body: unknown }> {
  const live = await health(deps, deps.projectors);
  if (live.status !== 200) return live;
  const { projectors } = live.body as { projectors: ProjectorStates };
  const behind = Object.entries(projectors).filter(([name, p]) => deps.projectors.has(name) && p.lag > deps.config.READY_MAX_LAG).map(([name]) => name);
  return behind.length ? { status: 503, body: { status: 'catching up', behind, projectors } } : { status: 200, body: { status: 'ready', projectors } };
}

async function metrics(deps: Deps, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const token = deps.config.METRICS_TOKEN;
  if (token && req.headers.authorization !== `Bearer ${token}`) return sendJson(res, 401, { error: 'send Authorization: Bearer <METRICS_TOKEN>' });
  res.writeHead(200, { 'content-type': deps.metrics.registry.contentType, 'cache-control': 'no-store' });
  res.end(await deps.metrics.registry.metrics());
}

/** How long requests in flight at shutdown may take before their connections are closed. */
const HTTP_SHUTDOWN_GRACE_MS = 5000;

export async function startHttpServer(deps: Deps): Promise<HttpServer> {
  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'GET' && (url.pathname === '/health' || url.pathname === '/ready')) {
      const { status, body } = await (url.pathname === '/health' ? health(deps) : ready(deps));
      return sendJson(res, status, body);
    }
    if (req.method === 'GET' && url.pathname === '/metrics') return metrics(deps, req, res);
    for (const route of deps.routes ?? []) if (await route(req, res, url)) return;
    sendJson(res, 404, { error: 'not found' });
  };
  /** Live streams (server-sent events) open now: they never finish by themselves. */
  const streams = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    if (/text\/event-stream/.test(req.headers.accept ?? '') || /^\/trpc\/mails\.changes\b/.test(req.url ?? '')) {
      streams.add(res);
      res.once('close', () => streams.delete(res));
    }
    handle(req, res).catch((err: unknown) => {
      deps.logger.error({ err, url: req.url }, 'http request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error; see the server log' });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(deps.config.PORT, deps.config.HOST, resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // A live stream would hold the close forever: its client reconnects (to another instance, or
        // to this one when it is back). Requests in flight get a moment to finish.
        for (const res of streams) res.destroy();
        setTimeout(() => server.closeAllConnections(), HTTP_SHUTDOWN_GRACE_MS).unref();
      }),
  };
}
