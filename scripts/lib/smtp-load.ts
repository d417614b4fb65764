/**
 * SMTP load generators for the benchmarks: Postfix's `smtp-source` (C, no pipelining: the
 * throughput figure) and a nodemailer pool (Node, like shared/research/perf/nm-load.mjs: per-message
 * acceptance latency, from handing a message to the pool until the server's 250 after DATA).
 */
import { randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import { run } from './proc.js';

export const FROM = 'from@example.org';

/** A body of `size` bytes in 78-character lines (as smtp-source and nm-load.mjs build it). */
export function body(size: number): Buffer {
  const line = `${'X'.repeat(78)}\r\n`;
  let text = line.repeat(Math.floor(size / line.length));
  text += 'X'.repeat(size - text.length);
  return Buffer.from(`${text}\r\n`);
}

/** ~150 bytes of headers with a unique Message-ID, then `bodyBytes`. */
export function rawMessage(bodyBytes: Buffer, messageId: string, to: string, subject = 'bench'): Buffer {
  const head = `From: <${FROM}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${messageId}>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head), bodyBytes]);
}

export interface SourceResult {
  ok: boolean;
  /** Messages acknowledged: `count` when smtp-source exited 0, else unknown (null). */
  acked: number | null;
  secs: number;
  error: string | null;
}

/** `smtp-source -d -s SESSIONS -m COUNT -l SIZE -f from@example.org -t TO 127.0.0.1:PORT`; each session keeps its connection. */
export async function smtpSource(port: number, sessions: number, count: number, size: number, to: string, timeoutMs = 120_000): Promise<SourceResult> {
  const args = ['-d', '-s', String(sessions), '-m', String(count), '-l', String(size), '-M', 'bench.local', '-f', FROM, '-t', to, `127.0.0.1:${port}`];
  const r = await run('smtp-source', args, { timeoutMs });
  const ok = r.code === 0;
  return { ok, acked: ok ? count : null, secs: r.secs, error: ok ? null : `smtp-source exited ${r.code}: ${(r.stderr + r.stdout).trim().split('\n').slice(-2).join(' ')}` };
}

export const SMTP_SOURCE_COMMAND = 'smtp-source -d -s SESSIONS -m COUNT -l SIZE -M bench.local -f from@example.org -t to@bench.test 127.0.0.1:PORT';

export interface LoadResult {
  sent: number;
  errors: number;
  firstError: string | null;
  secs: number;
  /** Per-message acceptance latency in ms, sorted. */
  latencies: number[];
}

function pool(port: number, connections: number) {
  return nodemailer.createTransport({
    pool: true,
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    name: 'bench.local',
    maxConnections: connections,
    maxMessages: Infinity,
    connectionTimeout: 30_000,
    socketTimeout: 60_000,
  });
}

/**
 * `sessions` workers, each with one message in flight on its own pooled connection, for `seconds`
 * (or until `maxCount` messages). Every message has its own Message-ID (mailtrail would store a
 * retry of the same message once).
 */
export async function nodemailerLoad(opts: { port: number; sessions: number; size: number; seconds: number; to: string; maxCount?: number }): Promise<LoadResult> {
  const transport = pool(opts.port, opts.sessions);
  const bytes = body(opts.size);
  const tag = randomBytes(6).toString('hex');
  const latencies: number[] = [];
  let started = 0;
  let errors = 0;
  let firstError: string | null = null;
  const max = opts.maxCount ?? Number.POSITIVE_INFINITY;
  const t0 = performance.now();
  const deadline = t0 + opts.seconds * 1000;
  const worker = async (): Promise<void> => {
    while (started < max && performance.now() < deadline && errors <= 100) {
      const raw = rawMessage(bytes, `${tag}.${started++}@bench.local`, opts.to);
      const t = performance.now();
      try {
        await transport.sendMail({ envelope: { from: FROM, to: [opts.to] }, raw });
        latencies.push(performance.now() - t);
      } catch (error) {
        errors++;
        firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.sessions }, worker));
  const secs = (performance.now() - t0) / 1000;
  transport.close();
  latencies.sort((a, b) => a - b);
  return { sent: latencies.length, errors, firstError, secs, latencies };
}

export interface PacedMessage {
  messageId: string;
  /** performance.now() when handed to the pool, and when the 250 arrived (null: refused or failed). */
  sentAt: number;
  ackAt: number | null;
  error: string | null;
}

/**
 * Sends `rate` messages per second for `seconds` over a pool of `connections`, on a fixed schedule
 * (message i is handed to the pool at t0 + i / rate, whether or not earlier ones were answered).
 * `messageId(i)` names each message (without angle brackets).
 */
export async function pacedSend(opts: {
  port: number;
  connections: number;
  rate: number;
  seconds: number;
  size: number;
  to: string;
  messageId: (i: number) => string;
  /** Called when a message has been answered (ackAt set) or has failed (error set). */
  onSettled?: (m: PacedMessage) => void;
}): Promise<{ messages: PacedMessage[]; secs: number }> {
  const transport = pool(opts.port, opts.connections);
  const bytes = body(opts.size);
  const total = Math.round(opts.rate * opts.seconds);
  const messages: PacedMessage[] = [];
  const inFlight: Promise<void>[] = [];
  const t0 = performance.now();
  let i = 0;
  while (i < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * opts.rate) + 1);
    for (; i < due; i++) {
      const m: PacedMessage = { messageId: opts.messageId(i), sentAt: performance.now(), ackAt: null, error: null };
      messages.push(m);
      const raw = rawMessage(bytes, m.messageId, opts.to, `lag ${i}`);
      inFlight.push(
        transport.sendMail({ envelope: { from: FROM, to: [opts.to] }, raw }).then(
          () => {
            m.ackAt = performance.now();
            opts.onSettled?.(m);
          },
          (error: unknown) => {
            m.error = error instanceof Error ? error.message : String(error);
            opts.onSettled?.(m);
          },
        ),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(inFlight);
  const secs = (performance.now() - t0) / 1000;
  transport.close();
  return { messages, secs };
}
