import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ProjectionRunner } from '../projection/runner.js';
import type { Store } from '../store/port.js';

export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

interface Deps {
  config: Config;
  logger: Logger;
  store: Store;
  projectors: Map<string, ProjectionRunner>;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/** 200 when the store answers and no projector has parked itself. */
async function health(deps: Deps): Promise<{ status: number; body: unknown }> {
  try {
    const head = await deps.store.events.head();
    const projectors = Object.fromEntries(
      [...deps.projectors].map(([name, r]) => [name, { status: r.status, position: r.position, lag: Math.max(0, head - r.position), error: r.lastError }]),
    );
    const parked = [...deps.projectors.values()].some((r) => r.status === 'parked');
    return { status: parked ? 503 : 200, body: { status: parked ? 'degraded' : 'ok', store: deps.store.kind, head, projectors } };
  } catch (error) {
    return { status: 503, body: { status: 'down', store: deps.store.kind, error: error instanceof Error ? error.message : String(error) } };
  }
}

export async function startHttpServer(deps: Deps): Promise<HttpServer> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'GET' && url.pathname === '/health') {
      health(deps).then(({ status, body }) => sendJson(res, status, body));
      return;
    }
    sendJson(res, 404, { error: 'not found' });
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
      }),
  };
}
