/**
 * node --import tsx scripts/lib/bare-smtp.ts <port> [domain]
 *
 * The reference point of bench:smtp: the bare `smtp-server` stack, which only drains DATA and
 * answers 250 (nothing parsed, nothing stored) - the upper bound of any Node SMTP server on this
 * machine (as shared/research/perf/node-server.mjs `bare`). Listens on 127.0.0.1 only; accepts
 * recipients in <domain> (default bench.test). Logs nothing per message.
 */
import { SMTPServer } from 'smtp-server';

const port = Number(process.argv[2]);
const domain = (process.argv[3] ?? 'bench.test').toLowerCase();
if (!port) {
  console.error('usage: node --import tsx scripts/lib/bare-smtp.ts <port> [domain]');
  process.exit(2);
}

const server = new SMTPServer({
  name: 'bare.bench.local',
  banner: 'bare smtp-server',
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  disableReverseLookup: true,
  logger: false,
  size: 50 * 1024 * 1024,
  maxClients: 1000,
  onRcptTo(address, _session, cb) {
    if (!address.address.toLowerCase().endsWith(`@${domain}`)) return cb(Object.assign(new Error('Relay denied'), { responseCode: 550 }));
    cb();
  },
  onData(stream, _session, cb) {
    stream.on('data', () => undefined);
    stream.on('end', () => cb(null, 'Message accepted'));
  },
});
server.on('error', (err) => console.error('server error', err.message));
server.listen(port, '127.0.0.1', () => console.log(`bare smtp-server listening on 127.0.0.1:${port} pid ${process.pid}`));
const stop = (): void => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
