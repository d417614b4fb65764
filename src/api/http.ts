import type http from 'node:http';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { v7 as uuidv7 } from 'uuid';
import type { MailDoc } from '../../projections/mails.js';
import { prependFields } from '../mail/headers.js';
import { isLoopback } from '../security/limits.js';
import { appRouter } from './router.js';
import { userFromToken, type AuthUser } from './tokens.js';
import type { ApiDeps, Context } from './trpc.js';

/** Largest JSON request body; base64 attachments make drafts the biggest requests. */
export const maxBodyBytes = (settings: ApiDeps['settings']): number => Math.ceil(settings.maxAttachmentBytes * 1.4) + 1024 * 1024;

const CORRELATION_ID = /^[A-Za-z0-9._-]{8,100}$/;

function bearer(req: http.IncomingMessage): string | null {
  const h = req.headers.authorization;
  return h?.startsWith('Bearer ') ? h.slice(7).trim() : null;
}

async function requestUser(deps: ApiDeps, req: http.IncomingMessage, connectionParams?: Record<string, string | undefined> | null): Promise<AuthUser | null> {
  // Subscriptions (EventSource) cannot send headers: they pass the token as a connection param.
  const token = bearer(req) ?? connectionParams?.token ?? null;
  return token ? userFromToken(deps.store, token, deps.settings.jwtSecret, deps.settings.adminEmails) : null;
}

function correlationId(req: http.IncomingMessage, res: http.ServerResponse): string {
  const given = req.headers['x-correlation-id'];
  const id = typeof given === 'string' && CORRELATION_ID.test(given) ? given : uuidv7();
  res.setHeader('x-correlation-id', id);
  return id;
}

/**
 * The client's address. Behind nginx on this host (TRUST_PROXY) every connection comes from
 * loopback and the proxy's X-Real-IP names the client; a connection from anywhere else is a
 * client talking to us directly, whose X-Real-IP is its own say-so and is ignored.
 */
export function clientAddress(peer: string | undefined, realIp: string | string[] | undefined, trustProxy: boolean): string {
  const address = peer ?? 'unknown';
  return trustProxy && isLoopback(address) && typeof realIp === 'string' && realIp ? realIp : address;
}

/** `text` with each unpaired surrogate (a broken UTF-16 name from a mail) as U+FFFD, so it can be URI-encoded. */
const wellFormed = (text: string): string => text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<boolean>;

const ATTACHMENT = /^\/attachments\/([0-9a-f-]{36})\/([A-Za-z0-9_-]{1,64})$/;
const ORIGINAL = /^\/original\/([0-9a-f-]{36})$/;

/**
 * `/trpc/*` (the typed API), and downloads for the owner of a mail only:
 * `/attachments/<mailId>/<attachmentId>` (the attachment's bytes) and `/original/<mailId>` (the
 * message as stored, with this server's Authentication-Results field on top for received mail).
 */
export function apiRoutes(deps: ApiDeps, trustProxy: boolean): RouteHandler {
  const clientIp = (req: http.IncomingMessage): string => clientAddress(req.socket.remoteAddress, req.headers['x-real-ip'], trustProxy);
  const trpc = createHTTPHandler({
    router: appRouter,
    basePath: '/trpc/',
    maxBodySize: maxBodyBytes(deps.settings),
    createContext: async ({ req, res, info }): Promise<Context> => {
      const seen = Number(req.headers['x-mailtrail-position']);
      return {
        deps,
        user: await requestUser(deps, req, info.connectionParams),
        ip: clientIp(req),
        correlationId: correlationId(req, res),
        seenPosition: Number.isSafeInteger(seen) && seen > 0 ? seen : 0,
      };
    },
  });

  const sendError = (res: http.ServerResponse, status: number, message: string): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: message }));
  };

  return async (req, res, url) => {
    if (url.pathname.startsWith('/trpc/')) {
      // Answers carry mail: never cached, never sniffed into something else.
      res.setHeader('cache-control', 'private, no-store');
      res.setHeader('x-content-type-options', 'nosniff');
      trpc(req, res);
      return true;
    }
    const attachmentPath = ATTACHMENT.exec(url.pathname);
    const originalPath = ORIGINAL.exec(url.pathname);
    if ((!attachmentPath && !originalPath) || req.method !== 'GET') return false;
    correlationId(req, res);
    const user = await requestUser(deps, req);
    if (!user) {
      sendError(res, 401, 'send Authorization: Bearer <token from auth.login>');
      return true;
    }
    const found = (await deps.store.views.get('mails', (attachmentPath ?? originalPath)![1]!)) as MailDoc | null;
    const mail = found?.userId === user.id ? found : null;
    if (originalPath) {
      if (!mail?.raw) {
        sendError(res, 404, 'no such message');
        return true;
      }
      const authResults = mail.authResults?.header.replaceAll('\r\n', '\n');
      const bytes = prependFields(await deps.store.blobs.get(mail.raw.sha256), authResults ? [authResults] : []);
      res.writeHead(200, {
        'content-type': 'message/rfc822',
        'content-length': bytes.length,
        'content-disposition': `attachment; filename="${mail.id}.eml"`,
        'x-content-type-options': 'nosniff',
        'cache-control': 'private, no-store',
      });
      res.end(bytes);
      return true;
    }
    const attachment = mail?.attachments.find((a) => a.id === attachmentPath![2]);
    if (!attachment) {
      sendError(res, 404, 'no such attachment');
      return true;
    }
    const bytes = await deps.store.blobs.get(attachment.sha256);
    const filename = wellFormed(attachment.filename ?? 'attachment').replace(/[\r\n"\\]/g, '_');
    res.writeHead(200, {
      // Served as a download, never rendered in our origin.
      'content-type': /^[\w.+-]+\/[\w.+-]+$/.test(attachment.contentType) ? attachment.contentType : 'application/octet-stream',
      'content-length': bytes.length,
      'content-disposition': `attachment; filename="${filename.replace(/[^\x20-\x7e]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(filename)}`,
      'x-content-type-options': 'nosniff',
      // Should a browser render it anyway (an HTML attachment opened in place): no scripts, no requests, its own origin.
      'content-security-policy': "default-src 'none'; sandbox",
      'cache-control': 'private, no-store',
    });
    res.end(bytes);
    return true;
  };
}
