// PM2, for operators who already run their services with it (systemd is the other way:
// deploy/systemd/mailtrail.service). From the checkout, after `npm ci` and with settings in .env:
//   pm2 start deploy/pm2/ecosystem.config.cjs && pm2 save && pm2 startup
// PM2 runs mailtrail as the user who starts it: with SMTP_PORT=25 that user needs root; keep
// SMTP_PORT=2525 and redirect port 25 with deploy/iptables.sh instead.
const path = require('node:path');

module.exports = {
  apps: [
    {
      name: 'mailtrail',
      // The checkout: `.env` is read from here, tsx is resolved from its node_modules.
      cwd: path.resolve(__dirname, '../..'),
      script: 'src/main.ts',
      interpreter: 'node',
      interpreter_args: '--import tsx',
      // One process per machine: the embedded store is one SQLite file, and SMTP binds one port.
      // (Several instances on one MongoDB: one PM2 app per machine, see docs/operations.md.)
      exec_mode: 'fork',
      instances: 1,
      env: { NODE_ENV: 'production' },
      // PM2 stops with SIGINT and kills after kill_timeout (1.6 s by default). mailtrail stops as
      // gracefully on SIGINT as on SIGTERM, but needs time to finish SMTP messages being received
      // (SMTP_SHUTDOWN_TIMEOUT_MS, 30 s) and relay attempts (RELAY_SHUTDOWN_GRACE_MS, 10 s).
      kill_timeout: 60_000,
      autorestart: true,
      restart_delay: 5_000,
      // Restarts that come faster than this are counted as crash loops and stopped after max_restarts.
      min_uptime: 10_000,
      max_restarts: 10,
      // mailtrail logs JSON lines (pino); PM2 adds no prefix so they stay parseable.
      time: false,
      merge_logs: true,
    },
  ],
};
