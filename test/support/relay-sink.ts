/**
 * A relay sink for tests: a real SMTP server (smtp-server) on 127.0.0.1 that stands for the
 * outside world. It counts the copies of each message (per Message-ID and recipient), answers each
 * RCPT with 250 / 451 / 550 as the test decides, and can hold a message after DATA without ever
 * answering (to kill the sender while the message is in flight).
 */
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export type Verdict = 250 | 451 | 550;

export interface SinkDelivery {
  /** Without angle brackets. */
  messageId: string;
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  /** Authenticated user, if the client logged in. */
  user: string | null;
  /** The message came over TLS (STARTTLS). */
  secure: boolean;
  /** DSN parameters as received (a sink that offers DSN only): MAIL's RET and ENVID, each RCPT's NOTIFY and ORCPT. */
  dsn: { ret: string | null; envid: string | null; recipients: { address: string; notify: string[] | null; orcpt: string | null }[] } | null;
  /** MAIL gave REQUIRETLS (RFC 8689). */
  requireTls: boolean;
}

export interface RcptCall {
  rcpt: string;
  verdict: Verdict;
  at: number;
}

const REPLIES: Record<Exclude<Verdict, 250>, string> = {
  451: '4.3.0 Temporary failure, try again later',
  550: '5.1.1 No such user here',
};

export function messageIdOf(raw: Buffer): string {
  const head = raw.subarray(0, Math.max(0, raw.indexOf('\r\n\r\n')) || raw.length).toString('latin1').replace(/\r?\n[ \t]+/g, ' ');
  const m = /^message-id:\s*<?([^>\r\n]+)>?/im.exec(head);
  return m ? m[1]!.trim() : '';
}

export interface SinkOptions {
  dsn?: boolean;
  requireTls?: boolean;
}

export class RelaySink extends EventEmitter {
  readonly deliveries: SinkDelivery[] = [];
  readonly rcptCalls: RcptCall[] = [];
  /** The answer to RCPT TO for this recipient; `attempt` counts this recipient's RCPTs so far (1-based). */
  rcptPolicy: (rcpt: string, attempt: number) => Verdict = () => 250;
  /** true = receive this message but never answer its DATA. */
  holdPolicy: (d: SinkDelivery) => boolean = () => false;
  /** Answer DATA only after this many ms (to widen races in tests). */
  replyDelayMs = 0;
  /** Logins the sink accepts (user → pass); empty = any login. */
  readonly users = new Map<string, string>();
  private readonly held: (() => void)[] = [];
  private readonly rcptCount = new Map<string, number>();
  private readonly server: SMTPServer;
  port = 0;

  /** `tls`: offer STARTTLS with this key and certificate (PEM); without, the sink speaks no TLS. `dsn`: offer DSN (RFC 3461); `requireTls`: offer REQUIRETLS (RFC 8689, over TLS). */
  constructor(tls?: { key: string; cert: string }, options: SinkOptions = {}) {
    super();
    this.server = new SMTPServer({
      logger: false,
      hideDSN: !options.dsn,
      hideREQUIRETLS: !options.requireTls,
      ...(tls ? { key: tls.key, cert: tls.cert } : { disabledCommands: ['STARTTLS'] }),
      authOptional: true,
      allowInsecureAuth: true,
      disableReverseLookup: true,
      closeTimeout: 100,
      size: 50 * 1024 * 1024,
      onAuth: (auth, _session, cb) => {
        const expected = this.users.get(auth.username ?? '');
        if (this.users.size && expected !== auth.password) return cb(Object.assign(new Error('5.7.8 Authentication failed'), { responseCode: 535 }));
        cb(null, { user: auth.username });
      },
      onRcptTo: (address, _session, cb) => {
        const key = address.address.toLowerCase();
        const n = (this.rcptCount.get(key) ?? 0) + 1;
        this.rcptCount.set(key, n);
        const verdict = this.rcptPolicy(address.address, n);
        this.rcptCalls.push({ rcpt: address.address, verdict, at: Date.now() });
        if (verdict === 250) return cb();
        cb(Object.assign(new Error(REPLIES[verdict]), { responseCode: verdict }));
      },
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const raw = Buffer.concat(chunks);
          const d: SinkDelivery = {
            messageId: messageIdOf(raw),
            mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            rcptTo: session.envelope.rcptTo.map((r) => r.address),
            raw,
            user: typeof session.user === 'string' ? session.user : null,
            secure: session.secure,
            dsn: options.dsn
              ? {
                  ret: session.envelope.dsn?.ret ?? null,
                  envid: session.envelope.dsn?.envid ?? null,
                  recipients: session.envelope.rcptTo.map((r) => ({ address: r.address, notify: r.dsn?.notify ?? null, orcpt: r.dsn?.orcpt ?? null })),
                }
              : null,
            requireTls: session.envelope.requireTLS === true,
          };
          this.deliveries.push(d);
          const answer = (): void => {
            cb(null, `2.0.0 Ok: queued as ${this.deliveries.length}`);
            this.emit('delivery', d);
          };
          if (this.holdPolicy(d)) {
            this.held.push(answer);
            this.emit('held', d);
            return;
          }
          if (this.replyDelayMs > 0) setTimeout(answer, this.replyDelayMs);
          else answer();
        });
      },
    });
  }

  /** Connection errors, e.g. ECONNRESET from a relay killed mid-session (kept, never thrown). */
  readonly connectionErrors: Error[] = [];

  async listen(): Promise<number> {
    // smtp-server re-emits each connection's socket errors on the server: without a listener, a
    // client killed mid-session (what the crash tests do) would be an uncaught exception here.
    this.server.on('error', (error: Error) => this.connectionErrors.push(error));
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.server.address() as AddressInfo).port;
    return this.port;
  }

  /** Copies received of a message (one per recipient per transaction). */
  copies(messageId: string, rcpt?: string): number {
    const id = messageId.replace(/^<|>$/g, '');
    return this.deliveries
      .filter((d) => d.messageId === id)
      .reduce((n, d) => n + (rcpt ? d.rcptTo.filter((r) => r.toLowerCase() === rcpt.toLowerCase()).length : d.rcptTo.length), 0);
  }

  /** Copies beyond the first, summed over every (message, recipient). */
  duplicates(): number {
    const seen = new Map<string, number>();
    for (const d of this.deliveries) for (const r of d.rcptTo) seen.set(`${d.messageId}\n${r.toLowerCase()}`, (seen.get(`${d.messageId}\n${r.toLowerCase()}`) ?? 0) + 1);
    return [...seen.values()].reduce((n, c) => n + c - 1, 0);
  }

  /** Answers every held message (a dead client's connection is gone; its answer goes nowhere). */
  releaseHeld(): void {
    for (const answer of this.held.splice(0)) answer();
  }

  async close(): Promise<void> {
    this.releaseHeld();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A server's environment that relays through `sink` as its smart host, retrying soon. */
export const relayThrough = (sink: RelaySink): Record<string, string> => ({
  RELAY_ENABLED: 'true',
  SMTP_RELAY_HOST: '127.0.0.1',
  SMTP_RELAY_PORT: String(sink.port),
  RELAY_HELO_NAME: 'relay.mail.test',
  RELAY_POLL_INTERVAL_MS: '100',
  RELAY_RETRY_BASE_MS: '200',
  RELAY_SMTP_TIMEOUT_MS: '60000',
  RELAY_CLAIM_TTL_MS: '120000',
});

export async function startSink(tls?: { key: string; cert: string }, options: SinkOptions = {}): Promise<RelaySink> {
  const sink = new RelaySink(tls, options);
  await sink.listen();
  return sink;
}
