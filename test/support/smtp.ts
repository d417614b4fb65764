/**
 * Helpers for the SMTP tests: a server on a temporary DATA_DIR with random ports, a DNS resolver
 * that never leaves the machine, a raw line-level SMTP client for protocol abuse, store queries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import nodemailer from 'nodemailer';
import { registerAccount } from '../../src/accounts/accounts.js';
import { startApp, type App, type AppOverrides } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { systemMeta, type EventOf, type StoredEvent } from '../../src/events/envelope.js';
import { createLogger } from '../../src/log.js';
import type { DnsResolver } from '../../src/smtp/dns.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/port.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DOMAIN = 'mail.test';
export const PASSWORD = 'correct horse battery staple';

export interface TestServer {
  app: App;
  config: Config;
  port: number;
  store: Store;
  dataDir: string;
  /** sha256 of every blob the server stored (each resolved `blobs.put`), in order. */
  blobPuts: string[];
  stop(): Promise<void>;
}

/** A DNS that answers from `records` (name -> type -> answer) and says ENOTFOUND to the rest. */
export function fakeResolver(records: Record<string, Record<string, unknown>> = {}, opts: { hang?: RegExp } = {}): DnsResolver {
  return async (name, rrtype) => {
    if (opts.hang?.test(name)) return new Promise(() => undefined);
    const answer = records[name.toLowerCase()]?.[rrtype];
    if (answer === undefined) throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    return answer;
  };
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `mailtrail-${prefix}-`));
}

/** Opens the store a server process with `env` uses (while it runs, or after), for `fn`. */
export async function withStore<T>(env: Record<string, string>, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(loadConfig(env));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function testEnv(dataDir: string, env: Record<string, string> = {}): Record<string, string> {
  return {
    DATA_DIR: dataDir,
    HOST: '127.0.0.1',
    PORT: '0',
    SMTP_PORT: '0',
    BCRYPT_COST: '4',
    DEFAULT_DOMAIN: DOMAIN,
    SMTP_HOSTNAME: 'mx.mail.test',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    INSTANCE_ID: `test-${process.pid}`,
    // Outbound delivery only where a test asks for it (and points it at a sink): nothing leaves the machine.
    RELAY_ENABLED: 'false',
    ...env,
  };
}

export async function startTestServer(env: Record<string, string> = {}, resolver: DnsResolver = fakeResolver(), overrides: Omit<AppOverrides, 'resolver'> = {}): Promise<TestServer> {
  const dataDir = tempDir('smtp');
  const config = loadConfig(testEnv(dataDir, env));
  const app = await startApp(config, createLogger(config), { ...overrides, resolver });
  const blobPuts: string[] = [];
  const put = app.store.blobs.put.bind(app.store.blobs);
  app.store.blobs.put = async (data) => {
    const ref = await put(data);
    blobPuts.push(ref.sha256);
    return ref;
  };
  return {
    app,
    config,
    port: app.smtp.port,
    store: app.store,
    dataDir,
    blobPuts,
    async stop() {
      await app.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Registers a user with a mailbox and waits until the views SMTP reads know it. */
export async function addUser(server: TestServer, email: string, password = PASSWORD): Promise<{ userId: string; mailboxId: string; email: string }> {
  const r = await registerAccount(server.store, { email, password, name: email.split('@')[0]! }, { bcryptCost: 4, meta: systemMeta() });
  await waitForViews(server, r.position);
  return { userId: r.user.id, mailboxId: r.mailboxId, email };
}

export async function waitForViews(server: TestServer, position?: number): Promise<void> {
  const head = position ?? (await server.store.events.head());
  for (const runner of server.app.projectors.values()) {
    if (!(await runner.waitFor(head, 15_000))) throw new Error(`projector ${runner.name} did not reach ${head}`);
  }
}

export async function allEvents(store: Store): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for (;;) {
    const batch = await store.events.readAll({ after: out.at(-1)?.position ?? 0, limit: 5000 });
    if (batch.length === 0) return out;
    out.push(...batch);
  }
}

export async function received(store: Store): Promise<EventOf<'MailReceived'>[]> {
  return (await allEvents(store)).filter((e): e is EventOf<'MailReceived'> => e.type === 'MailReceived');
}

export async function sent(store: Store): Promise<EventOf<'MailSent'>[]> {
  return (await allEvents(store)).filter((e): e is EventOf<'MailSent'> => e.type === 'MailSent');
}

/** Mail events whose message has this Subject. */
export async function receivedWithSubject(store: Store, subject: string): Promise<EventOf<'MailReceived'>[]> {
  return (await received(store)).filter((e) => e.data.message.subject === subject);
}

export async function mailEventCount(store: Store): Promise<number> {
  return (await allEvents(store)).filter((e) => e.type === 'MailReceived' || e.type === 'MailSent').length;
}

export function transport(port: number, opts: { user?: string; pass?: string; secure?: boolean; ignoreTLS?: boolean; requireTLS?: boolean } = {}) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: opts.secure ?? false,
    ignoreTLS: opts.ignoreTLS ?? false,
    requireTLS: opts.requireTLS ?? false,
    tls: { rejectUnauthorized: false },
    auth: opts.user ? { user: opts.user, pass: opts.pass ?? PASSWORD } : undefined,
    name: 'client.example.org',
  });
}

/** A raw message with CRLF line endings. */
export function rawMessage(opts: { from?: string; to?: string; subject: string; messageId?: string | null; body?: string; headers?: string[] }): string {
  const lines = [
    `From: ${opts.from ?? 'Alice <alice@example.org>'}`,
    `To: ${opts.to ?? `bob@${DOMAIN}`}`,
    `Subject: ${opts.subject}`,
    'Date: Sun, 23 Nov 2026 10:00:00 +0000',
    ...(opts.messageId === null ? [] : [`Message-ID: ${opts.messageId ?? `<${Math.random().toString(36).slice(2)}@example.org>`}`]),
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    ...(opts.headers ?? []),
    '',
    opts.body ?? `Hello from ${opts.subject}`,
    '',
  ];
  return lines.join('\r\n');
}

export interface Reply {
  code: number;
  text: string;
  lines: string[];
}

/** A line-level SMTP client over a raw socket: for pipelining, smuggling and other abuse. */
export class SmtpTalk {
  private buffer = '';
  private readonly replies: Reply[] = [];
  private waiters: ((r: Reply | null) => void)[] = [];
  private closed = false;
  readonly closedPromise: Promise<void>;
  private socket: net.Socket | tls.TLSSocket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    this.attach(socket);
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w(null);
    });
  }

  static async open(port: number): Promise<{ talk: SmtpTalk; greeting: Reply }> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const talk = new SmtpTalk(socket);
    const greeting = await talk.reply();
    return { talk, greeting };
  }

  private onData(d: Buffer): void {
    this.buffer += d.toString('latin1');
    let nl: number;
    let lines: string[] = [];
    while ((nl = this.buffer.indexOf('\r\n')) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 2);
      lines.push(line);
      if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
        const reply = { code: Number(line.slice(0, 3)), text: line.slice(4), lines };
        lines = [];
        const w = this.waiters.shift();
        if (w) w(reply);
        else this.replies.push(reply);
      }
    }
    if (lines.length) this.buffer = lines.map((l) => `${l}\r\n`).join('') + this.buffer;
  }

  /** The next reply; a reply with code 0 when the server closed the connection instead. */
  async reply(): Promise<Reply> {
    const queued = this.replies.shift();
    if (queued) return queued;
    if (this.closed) return { code: 0, text: 'connection closed', lines: [] };
    const r = await new Promise<Reply | null>((resolve) => this.waiters.push(resolve));
    return r ?? { code: 0, text: 'connection closed', lines: [] };
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  async cmd(line: string): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  async starttls(): Promise<Reply> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) return r;
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain as net.Socket, rejectUnauthorized: false, servername: 'mx.mail.test' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return r;
  }

  peerCertificate(): tls.PeerCertificate | null {
    return this.socket instanceof tls.TLSSocket ? this.socket.getPeerCertificate() : null;
  }

  /** EHLO, MAIL, RCPT... with the replies; stops at the first reply that is not 2xx/3xx. */
  async envelope(from: string, to: string[]): Promise<Reply[]> {
    const out = [await this.cmd(`MAIL FROM:<${from}>`)];
    for (const r of to) out.push(await this.cmd(`RCPT TO:<${r}>`));
    return out;
  }

  /** DATA + body + end of data (no dot-stuffing: the caller's bytes go as they are). */
  async data(body: string | Buffer): Promise<Reply> {
    const go = await this.cmd('DATA');
    if (go.code !== 354) return go;
    this.write(body);
    const text = typeof body === 'string' ? body : body.toString('latin1');
    this.write(text.endsWith('\r\n') ? '.\r\n' : '\r\n.\r\n');
    return this.reply();
  }

  async quit(): Promise<void> {
    if (!this.closed) {
      this.write('QUIT\r\n');
      await Promise.race([this.closedPromise, new Promise((r) => setTimeout(r, 2000))]);
    }
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Dot-stuffs a body the way an SMTP client must. */
export const dotStuff = (body: string): string => body.replace(/(^|\r\n)\./g, '$1..');

/** Runs swaks and collects its transcript. */
export function swaks(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('swaks', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** Starts `src/main.ts` as a child process and resolves with its SMTP and HTTP ports once it logged "mailtrail started". */
export function startServerProcess(env: Record<string, string>): Promise<{ child: ChildProcess; smtpPort: number; httpPort: number; exited: Promise<number | null>; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env: { ...process.env, ...env, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"mailtrail started"'));
      if (line) {
        child.stdout.off('data', onData);
        child.stdout.on('data', (more: Buffer) => (out += more.toString()));
        const started = JSON.parse(line) as { smtpPort: number; port: number };
        resolve({ child, smtpPort: started.smtpPort, httpPort: started.port, exited, output: () => out });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((code) => reject(new Error(`server exited (${code}) before it started:\n${out}`)));
  });
}
