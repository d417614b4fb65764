import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import path from 'node:path';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ApiSettings } from './trpc.js';

/**
 * The key that signs session tokens. Production must set JWT_SECRET (the config refuses to start
 * without a strong one); elsewhere a random key is made once and kept in DATA_DIR, so sessions
 * survive restarts of a development server.
 */
function jwtSecret(config: Config, logger: Logger): Uint8Array {
  if (config.JWT_SECRET) return new TextEncoder().encode(config.JWT_SECRET);
  const file = path.join(config.DATA_DIR, 'jwt-secret');
  if (!existsSync(file)) {
    mkdirSync(config.DATA_DIR, { recursive: true });
    writeFileSync(file, randomBytes(48).toString('base64url'), { mode: 0o600 });
  }
  logger.warn({ file }, 'JWT_SECRET is not set: using a generated key from DATA_DIR (set JWT_SECRET when several instances serve the API)');
  return new TextEncoder().encode(readFileSync(file, 'utf8').trim());
}

function dkimPublicKey(config: Config): ApiSettings['dkim'] {
  if (!config.DKIM_SELECTOR || !config.DKIM_PRIVATE_KEY) return null;
  const pem = existsSync(config.DKIM_PRIVATE_KEY) ? readFileSync(config.DKIM_PRIVATE_KEY, 'utf8') : config.DKIM_PRIVATE_KEY.replace(/\\n/g, '\n');
  return { selector: config.DKIM_SELECTOR, publicKey: createPublicKey(pem).export({ type: 'spki', format: 'pem' }).toString() };
}

export function apiSettings(config: Config, logger: Logger): ApiSettings {
  return {
    jwtSecret: jwtSecret(config, logger),
    jwtExpiresIn: config.JWT_EXPIRES_IN,
    allowRegistration: config.ALLOW_REGISTRATION,
    adminEmails: config.ADMIN_EMAILS,
    bcryptCost: config.BCRYPT_COST,
    defaultDomain: config.DEFAULT_DOMAIN,
    recipientDelimiter: config.RECIPIENT_DELIMITER,
    maxAttachmentBytes: config.MAX_ATTACHMENT_SIZE,
    rateLimitLoopback: config.RATE_LIMIT_LOOPBACK,
    readYourWritesMs: 2000,
    smtpHostname: config.SMTP_HOSTNAME,
    dkim: dkimPublicKey(config),
  };
}
