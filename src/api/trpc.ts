import { initTRPC, TRPCError } from '@trpc/server';
import { TRPC_ERROR_CODES_BY_KEY } from '@trpc/server/rpc';
import { CommandError } from '../compose/decide.js';
import type { Meta } from '../events/envelope.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { WrongExpectedVersionError, type Store } from '../store/port.js';
import type { Projector } from '../projection/runner.js';
import type { DnsResolver } from '../smtp/dns.js';
import type { FailureLimiter } from '../security/limits.js';
import type { AuthUser } from './tokens.js';

export interface ApiSettings {
  jwtSecret: Uint8Array;
  jwtExpiresIn: string;
  allowRegistration: boolean;
  /** Lower-case addresses that are admins whatever their registration says. */
  adminEmails: string[];
  bcryptCost: number;
  defaultDomain: string;
  /** Mail to bob+anything@ goes to bob@ (empty: off). */
  recipientDelimiter: string;
  maxAttachmentBytes: number;
  /** Loopback clients are rate-limited too (default: exempt, so local tools and tests are not locked out). */
  rateLimitLoopback: boolean;
  /** How long a query waits for the views to catch up with writes made before it. */
  readYourWritesMs: number;
  /** This server's host name: what MX records of local domains must point to. */
  smtpHostname: string;
  /** The DKIM key the relay signs with, if any: domains.verify checks it is published. */
  dkim: { selector: string; publicKey: string } | null;
}

export interface ApiDeps {
  store: Store;
  projectors: Map<string, Projector>;
  settings: ApiSettings;
  logger: Logger;
  loginFailures: FailureLimiter;
  /** DNS for domains.verify; injectable so tests run offline. */
  resolver: DnsResolver;
  metrics: Metrics;
}

export interface Context {
  deps: ApiDeps;
  user: AuthUser | null;
  ip: string;
  correlationId: string;
  /** A position the caller has seen (X-Mailtrail-Position): on MongoDB queries wait for the views to reach it (the embedded store waits for its head). */
  seenPosition: number;
}

/** Zod issues as "field.path: message", so a client knows which field was wrong. */
function describeIssues(cause: unknown): string | null {
  const issues = (cause as { issues?: { path: PropertyKey[]; message: string }[] } | undefined)?.issues;
  if (!Array.isArray(issues)) return null;
  return issues.map((i) => `${i.path.map(String).join('.') || 'input'}: ${i.message}`).join('; ');
}

const t = initTRPC.context<Context>().create({
  // Subscriptions: a ping keeps proxies from closing an idle event stream; clients reconnect after silence.
  sse: { ping: { enabled: true, intervalMs: 15_000 }, client: { reconnectAfterInactivityMs: 40_000 } },
  errorFormatter({ shape, error }) {
    // tRPC reports a body or ?input= that is not JSON as BAD_REQUEST caused by a SyntaxError.
    if (error.code === 'BAD_REQUEST' && error.cause instanceof SyntaxError) {
      return { ...shape, code: TRPC_ERROR_CODES_BY_KEY.PARSE_ERROR, message: `malformed JSON: ${error.cause.message}`, data: { code: 'PARSE_ERROR' as const, httpStatus: 400, path: shape.data.path } };
    }
    const fields = error.code === 'BAD_REQUEST' ? describeIssues(error.cause) : null;
    // Stack traces stay in the log, never in a response.
    return { ...shape, message: fields ?? shape.message, data: { code: shape.data.code, httpStatus: shape.data.httpStatus, path: shape.data.path } };
  },
});

export const router = t.router;

/** Domain errors that are the caller's to fix, as the tRPC codes clients expect. */
function clientError(cause: unknown): TRPCError | null {
  if (cause instanceof CommandError) return new TRPCError({ code: cause.code, message: cause.message });
  if (cause instanceof WrongExpectedVersionError) return new TRPCError({ code: 'CONFLICT', message: 'the mail changed meanwhile; reload it and try again' });
  return null;
}

export const publicProcedure = t.procedure.use(async ({ ctx, path, type, next }) => {
  const started = performance.now();
  const result = await next();
  const ms = Math.round((performance.now() - started) * 10) / 10;
  const log = { correlationId: ctx.correlationId, procedure: path, type, ms, userId: ctx.user?.id ?? null, ip: ctx.ip };
  const mapped = result.ok ? null : clientError(result.error.cause);
  const outcome = result.ok ? 'ok' : (mapped?.code ?? result.error.code);
  // Subscriptions last as long as the client listens: their duration is no latency.
  if (type !== 'subscription') ctx.deps.metrics.apiSeconds.observe({ procedure: path, outcome }, ms / 1000);
  if (result.ok) {
    ctx.deps.logger.info(log, 'api request');
    return result;
  }
  if (outcome === 'INTERNAL_SERVER_ERROR') ctx.deps.logger.error({ ...log, err: result.error.cause ?? result.error }, 'api request failed');
  else ctx.deps.logger.info({ ...log, error: outcome }, 'api request refused');
  if (mapped) throw mapped;
  return result;
});

/** The meta of the events a request appends: its correlation id, the signed-in user as actor (null: registering). */
export const requestMeta = (ctx: Pick<Context, 'correlationId'>, userId: string | null): Meta => ({ correlationId: ctx.correlationId, causationId: null, actor: { kind: 'user', id: userId } });

export const authedProcedure = publicProcedure.use(({ ctx, next }) => {
  if (!ctx.user) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'sign in first: send Authorization: Bearer <token from auth.login>' });
  return next({ ctx: { ...ctx, user: ctx.user } });
});

export const adminProcedure = authedProcedure.use(({ ctx, next }) => {
  if (ctx.user.role !== 'admin') throw new TRPCError({ code: 'FORBIDDEN', message: 'admins only' });
  return next();
});
