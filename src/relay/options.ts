import os from 'node:os';
import { z } from 'zod';
import { bool, hostName, port, positiveInt } from '../env.js';

/**
 * Settings of the outbound relay, keyed by the environment variables that set them (the lead merges
 * `RelayEnvShape` into `src/config.ts`). Empty strings count as unset, as in `loadConfig`.
 */

export const RelayEnvShape = {
  /** false = this process does not deliver outbound mail (another process does). */
  RELAY_ENABLED: bool.default(true),
  /** Smart host (SendGrid, Gmail, the ISP's relay …). Unset = deliver direct to each recipient domain's MX. */
  SMTP_RELAY_HOST: hostName.optional(),
  SMTP_RELAY_PORT: port.default(587),
  /** true = implicit TLS (port 465); false = STARTTLS when the server offers it. */
  SMTP_RELAY_SECURE: bool.default(false),
  SMTP_RELAY_USER: z.string().min(1).optional(),
  SMTP_RELAY_PASS: z.string().min(1).optional(),
  /** Refuse to talk to the smart host without TLS (implicit or STARTTLS). Default: true when a login is set, so a password never crosses in clear. */
  SMTP_RELAY_REQUIRE_TLS: bool.optional(),
  /** Verify the smart host's certificate (direct-to-MX delivery checks one only under an enforced MTA-STS policy; otherwise opportunistic TLS). */
  SMTP_RELAY_TLS_REJECT_UNAUTHORIZED: bool.default(true),
  /**
   * Honour recipient domains' MTA-STS policies (RFC 8461) when delivering straight to their MX:
   * under `enforce`, only the MX hosts a policy names, over TLS with a valid certificate.
   */
  RELAY_MTA_STS: bool.default(true),
  /** A PEM file of extra certificate authorities trusted for verified TLS (MTA-STS), e.g. a private CA. */
  RELAY_TLS_CA: z.string().min(1).optional(),
  /** Port of the recipients' MX hosts; 25 except in tests. */
  RELAY_MX_PORT: port.default(25),
  /** Name the relay gives in EHLO; should be this host's public name (its PTR). */
  RELAY_HELO_NAME: hostName.default(os.hostname()),
  /** DKIM signing of outgoing mail: all three or none. The key is PEM text (`\n` escapes allowed) or a file path. */
  DKIM_DOMAIN: hostName.optional(),
  DKIM_SELECTOR: z.string().regex(/^[A-Za-z0-9._-]+$/, 'must be a DKIM selector such as mail').optional(),
  DKIM_PRIVATE_KEY: z.string().min(1).optional(),
  /** Messages delivered at the same time by one process. */
  RELAY_CONCURRENCY: positiveInt.default(8),
  /** Outbox entries looked at per scan. */
  RELAY_BATCH_SIZE: positiveInt.default(100),
  /** How often an idle relay looks for due work (appends wake it sooner). */
  RELAY_POLL_INTERVAL_MS: z.coerce.number().int().min(10).default(1000),
  /** Upper bound of one delivery attempt (DNS, connect, whole SMTP dialogue); it is then abandoned as a temporary failure. */
  RELAY_SMTP_TIMEOUT_MS: z.coerce.number().int().min(100).default(300_000),
  /** How long a claim on a message keeps other relays off it. Must exceed RELAY_SMTP_TIMEOUT_MS. */
  RELAY_CLAIM_TTL_MS: z.coerce.number().int().min(200).default(600_000),
  /** First retry delay after a temporary failure; doubles per attempt. */
  RELAY_RETRY_BASE_MS: z.coerce.number().int().min(1).default(300_000),
  RELAY_RETRY_MAX_DELAY_MS: z.coerce.number().int().min(1).default(4 * 3600_000),
  /** After this long since the mail was sent, a temporary failure becomes permanent (and bounces). */
  RELAY_RETRY_DEADLINE_MS: z.coerce.number().int().min(1).default(5 * 24 * 3600_000),
  /** On shutdown, attempts in flight get this long to finish before they are abandoned. */
  RELAY_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
};

/** Checks across relay settings; `src/config.ts` applies the same to the whole configuration. */
export function checkRelaySettings(o: z.infer<z.ZodObject<typeof RelayEnvShape>>, ctx: z.RefinementCtx): void {
  if (o.RELAY_CLAIM_TTL_MS <= o.RELAY_SMTP_TIMEOUT_MS) {
    ctx.addIssue({ code: 'custom', path: ['RELAY_CLAIM_TTL_MS'], message: 'must be greater than RELAY_SMTP_TIMEOUT_MS (a claim must outlive the attempt it protects)' });
  }
  const dkim = [o.DKIM_DOMAIN, o.DKIM_SELECTOR, o.DKIM_PRIVATE_KEY].filter((v) => v !== undefined).length;
  if (dkim !== 0 && dkim !== 3) {
    for (const key of ['DKIM_DOMAIN', 'DKIM_SELECTOR', 'DKIM_PRIVATE_KEY'] as const) {
      if (o[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY must be set together' });
    }
  }
  if ((o.SMTP_RELAY_USER === undefined) !== (o.SMTP_RELAY_PASS === undefined)) {
    ctx.addIssue({ code: 'custom', path: [o.SMTP_RELAY_USER === undefined ? 'SMTP_RELAY_USER' : 'SMTP_RELAY_PASS'], message: 'SMTP_RELAY_USER and SMTP_RELAY_PASS must be set together' });
  }
}

export const RelayOptionsSchema = z.object(RelayEnvShape).superRefine(checkRelaySettings);

export type RelayOptions = z.infer<typeof RelayOptionsSchema>;

/** Parses relay settings from an environment (empty = unset); a bad value throws naming the variable. */
export function relayOptionsFromEnv(env: Record<string, string | undefined> = process.env): RelayOptions {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([k, v]) => k in RelayEnvShape && v !== undefined && v !== ''));
  const parsed = RelayOptionsSchema.safeParse(cleaned);
  if (!parsed.success) {
    throw new Error(`invalid relay configuration:\n${parsed.error.issues.map((i) => `  - ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  }
  return parsed.data;
}
