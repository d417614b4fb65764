import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { bool, port, positiveInt } from './env.js';
import { checkRelaySettings, RelayEnvShape } from './relay/options.js';

/**
 * Every setting mailtrail reads, from the environment (and `.env`). `.env.example` documents each.
 * Keep the two in step: a test checks that every key here is listed there.
 */
export const ConfigSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: port.default(3000),
  DATA_DIR: z.string().min(1).default('./data'),
  DEFAULT_DOMAIN: z
    .string()
    // Addresses need a dot in their domain (localhost aside): a dotless one would refuse every address in it.
    .regex(/^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)$/i, 'must be a domain name with a dot, such as example.com, or localhost')
    .transform((d) => d.toLowerCase())
    .default('localhost'),
  /** Mail to bob+anything@ goes to bob@; `none`: off. */
  RECIPIENT_DELIMITER: z
    .enum(['+', '-', '_', '=', 'none'])
    .default('+')
    .transform((d) => (d === 'none' ? '' : d)),
  BCRYPT_COST: z.coerce.number().int().min(4).max(15).default(12),
  MONGODB_URI: z
    .string()
    .regex(/^mongodb(\+srv)?:\/\//, 'must start with mongodb:// or mongodb+srv://')
    .optional(),
  MONGODB_DB: z.string().regex(/^[A-Za-z0-9_-]+$/).default('mailtrail'),
  SQLITE_SYNCHRONOUS: z.enum(['FULL', 'NORMAL']).default('FULL'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PROJECTOR_LEASE_TTL_MS: z.coerce.number().int().min(1000).default(15_000),
  INSTANCE_ID: z.string().min(1).default(`${os.hostname()}-${process.pid}`),

  // SMTP (issue 3). Limits are per the values below; `.env.example` says what each one means.
  SMTP_PORT: port.default(2525),
  /** Implicit TLS (SMTPS) port; unset = no implicit-TLS listener. */
  SMTPS_PORT: port.optional(),
  SMTP_HOSTNAME: z
    .string()
    .regex(/^[A-Za-z0-9.-]+$/, 'must be a host name such as mail.example.com')
    .default(os.hostname()),
  MAX_MESSAGE_SIZE: positiveInt.default(25 * 1024 * 1024),
  TLS_KEY: z.string().min(1).optional(),
  TLS_CERT: z.string().min(1).optional(),
  SMTP_ALLOW_INSECURE_AUTH: bool.default(false),
  DMARC_REJECT: bool.default(false),
  SMTP_MAX_RECIPIENTS: positiveInt.default(100),
  SMTP_MAX_CONNECTIONS: positiveInt.default(1000),
  SMTP_CONNECTION_RATE_PER_IP: positiveInt.default(60),
  SMTP_MESSAGE_RATE_PER_IP: positiveInt.default(300),
  SMTP_MAX_COMMAND_LENGTH: z.coerce.number().int().min(512).max(65536).default(4096),
  SMTP_IDLE_TIMEOUT_MS: z.coerce.number().int().min(1000).default(300_000),
  SMTP_AUTH_MAX_FAILURES: positiveInt.default(5),
  SMTP_AUTH_MAX_FAILURES_PER_IP: positiveInt.default(20),
  SMTP_AUTH_FAILURE_WINDOW_MS: z.coerce.number().int().min(1000).default(900_000),
  SMTP_DNS_TIMEOUT_MS: z.coerce.number().int().min(100).max(2000).default(2000),
  SMTP_SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(0).default(30_000),
  /** SMTP acceptor processes besides the main one; 0 = SMTP runs in the main process. */
  SMTP_WORKERS: z.coerce.number().int().min(0).max(64).default(0),
  // HTTP API (tRPC)
  /** Signs session tokens. Required (≥ 32 characters) in production; elsewhere generated into DATA_DIR. */
  JWT_SECRET: z.string().min(1).optional(),
  JWT_EXPIRES_IN: z.string().regex(/^\d+\s*(s|m|h|d)$/, 'must be a duration such as 24h, 30m or 7d').default('24h'),
  ALLOW_REGISTRATION: bool.default(true),
  ADMIN_EMAILS: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((e) => e.trim().toLowerCase()).filter(Boolean)),
  MAX_ATTACHMENT_SIZE: positiveInt.default(25 * 1024 * 1024),
  LOGIN_MAX_FAILURES: positiveInt.default(5),
  LOGIN_FAILURE_WINDOW_MS: z.coerce.number().int().min(1000).default(900_000),
  /** Loopback clients are exempt from SMTP and login rate limits unless this is true. */
  RATE_LIMIT_LOOPBACK: bool.default(false),
  /** Behind a reverse proxy on loopback (deploy/nginx): take the client address from X-Real-IP. */
  TRUST_PROXY: bool.default(false),
  /** When set, GET /metrics needs Authorization: Bearer <METRICS_TOKEN>. */
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  /** GET /ready answers 503 while a view is more than this many events behind the log. */
  READY_MAX_LAG: z.coerce.number().int().min(0).default(1000),

  // Outbound relay
  ...RelayEnvShape,
}).superRefine((c, ctx) => {
  if ((c.TLS_KEY === undefined) !== (c.TLS_CERT === undefined)) {
    ctx.addIssue({ code: 'custom', path: [c.TLS_KEY === undefined ? 'TLS_KEY' : 'TLS_CERT'], message: 'TLS_KEY and TLS_CERT must be set together' });
  }
  if (c.NODE_ENV === 'production' && (!c.JWT_SECRET || c.JWT_SECRET.length < 32 || new Set(c.JWT_SECRET).size < 10)) {
    ctx.addIssue({ code: 'custom', path: ['JWT_SECRET'], message: 'production needs a strong secret of at least 32 random characters (e.g. openssl rand -base64 48)' });
  }
  checkRelaySettings(c, ctx);
});

export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Parses the environment; empty strings count as unset so `.env.example` can be copied as is. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = ConfigSchema.safeParse(cleaned);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  return { ...parsed.data, DATA_DIR: path.resolve(parsed.data.DATA_DIR) };
}
