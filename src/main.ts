import 'dotenv/config';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { startApp } from './app.js';

try {
  const config = loadConfig();
  const logger = createLogger(config);
  const app = await startApp(config, logger);
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`mailtrail: ${error.message}\nFix the variables above (see .env.example) and start again.`);
  } else {
    console.error(`mailtrail: could not start: ${error instanceof Error ? error.message : String(error)}`);
  }
  process.exit(1);
}
