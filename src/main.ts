import 'dotenv/config';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger } from './log.js';
import { startApp } from './app.js';

/** What to do about a failed start, naming the setting behind it where the error says which. */
function startupHint(error: unknown, config: Config | null): string {
  const e = (error ?? {}) as { code?: string; port?: number; message?: string };
  const message = e.message ?? String(error);
  if (!config) return message;
  // A failed listen names its port; the same codes from the file system do not.
  if ((e.code === 'EADDRINUSE' || e.code === 'EACCES') && typeof e.port === 'number') {
    const setting = (['PORT', 'SMTP_PORT', 'SMTPS_PORT'] as const).find((name) => config[name] === e.port) ?? 'PORT, SMTP_PORT or SMTPS_PORT';
    return e.code === 'EADDRINUSE'
      ? `${setting}=${e.port}: the port is already in use on ${config.HOST} (another mailtrail or another server?); stop it or choose another port`
      : `${setting}=${e.port}: binding it needs privileges; use a port above 1023 and redirect (deploy/iptables.sh), or see docs/deploy.md`;
  }
  if (e.code === 'ENOTFOUND' || e.code === 'EADDRNOTAVAIL') return `HOST=${config.HOST}: not an address of this machine (${e.code}); use 0.0.0.0, 127.0.0.1 or one of its addresses`;
  if (!config.MONGODB_URI && (['EEXIST', 'ENOTDIR', 'EACCES', 'EPERM', 'EROFS', 'ENOSPC'].includes(e.code ?? '') || e.code?.startsWith('SQLITE_CANTOPEN') || e.code === 'SQLITE_READONLY')) {
    return `DATA_DIR=${config.DATA_DIR}: ${message}; it must be a folder this user can write (it is created if missing)`;
  }
  return message;
}

let config: Config | null = null;
try {
  config = loadConfig();
  const logger = createLogger(config);
  let stopping = false;
  let stop: () => Promise<void> = async () => undefined;
  const shutdown = (signal: string, code = 0): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    stop().then(
      () => process.exit(code),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // A store that can no longer write: stop and exit non-zero, so that systemd or Docker restarts it.
  const app = await startApp(config, logger, { onFatal: () => setImmediate(() => shutdown('store failure', 1)) });
  stop = () => app.stop();
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`mailtrail: ${error.message}\nFix the variables above (see .env.example) and start again.`);
  } else {
    console.error(`mailtrail: could not start: ${startupHint(error, config)}`);
  }
  process.exit(1);
}
