/**
 * node --import tsx scripts/lib/lag-sender.ts <port> <connections> <rate> <seconds> <bodyBytes> <to> <messageIdPrefix>
 *
 * The sending half of bench:api's lag measurement, in its own process so that its event loop and
 * the poller's do not delay each other's timestamps. Sends <rate> msgs/s for <seconds> with
 * nodemailer (pacedSend) and prints one JSON line per message as it is answered:
 * {"id": Message-ID without brackets, "sent": ms, "ack": ms | null, "error": string | null}, times on
 * the shared clock performance.timeOrigin + performance.now(); then {"done": true, "secs": …}.
 */
import { pacedSend } from './smtp-load.js';

const [port, connections, rate, seconds, size] = process.argv.slice(2, 7).map(Number);
const [to, prefix] = process.argv.slice(7, 9);
if (!port || !connections || !rate || !seconds || !size || !to || !prefix) {
  console.error('usage: lag-sender.ts <port> <connections> <rate> <seconds> <bodyBytes> <to> <messageIdPrefix>');
  process.exit(2);
}
const clock = (t: number): number => performance.timeOrigin + t;
const out: string[] = [];
const flush = (): void => {
  if (out.length) process.stdout.write(`${out.splice(0).join('\n')}\n`);
};
const timer = setInterval(flush, 50);
const r = await pacedSend({
  port,
  connections,
  rate,
  seconds,
  size,
  to,
  messageId: (i) => `${prefix}${i}@${to.split('@')[1]}`,
  onSettled: (m) => out.push(JSON.stringify({ id: m.messageId, sent: clock(m.sentAt), ack: m.ackAt === null ? null : clock(m.ackAt), error: m.error })),
});
clearInterval(timer);
flush();
process.stdout.write(`${JSON.stringify({ done: true, secs: r.secs })}\n`);
