/**
 * A separate Postfix instance for benchmarking (as shared/research/perf/postfix-ctl.sh): own config
 * directory, queue and data directory, listening only on 127.0.0.1:<port>, accepting mail for one
 * domain and handing it to the discard: transport so the queue drains. Postfix's default durable
 * queue is kept (cleanup fsyncs each queue file before smtpd answers 250). The system instance is
 * not touched. Needs root and Debian's `postfix` package (installed here if missing, with the
 * debconf answer "No configuration", so no system instance is set up).
 */
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { note, run, sleep, waitForPort, which } from './proc.js';

/** Makes sure `postfix` and `smtp-source` are installed; returns why not if they cannot be. */
export async function ensurePostfix(): Promise<{ ok: true; version: string } | { ok: false; why: string }> {
  if (!(await which('smtp-source')) || !(await which('postfix'))) {
    if (process.getuid?.() !== 0) return { ok: false, why: 'postfix is not installed and this is not root (apt-get install postfix)' };
    note('installing postfix from Debian (debconf: No configuration) …');
    await run('sh', ['-c', 'echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections']);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    let r = await run('apt-get', ['install', '-y', '-q', 'postfix'], { env, timeoutMs: 600_000 });
    if (r.code !== 0) {
      await run('apt-get', ['update', '-q'], { env, timeoutMs: 600_000 });
      r = await run('apt-get', ['install', '-y', '-q', 'postfix'], { env, timeoutMs: 600_000 });
    }
    if (r.code !== 0 || !(await which('smtp-source'))) return { ok: false, why: `apt-get install postfix failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}` };
  }
  if (process.getuid?.() !== 0) return { ok: false, why: 'starting a Postfix instance needs root' };
  const v = await run('postconf', ['-d', 'mail_version']);
  return { ok: true, version: v.stdout.split('=')[1]?.trim() ?? 'unknown' };
}

export class PostfixInstance {
  readonly conf = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-postfix-etc-'));
  readonly queueDir = '/var/spool/postfix-mailtrail-bench';
  readonly dataDir = '/var/lib/postfix-mailtrail-bench';
  /** maillog_file must be under maillog_file_prefixes (/var, /dev/stdout). */
  readonly logFile = '/var/log/postfix-mailtrail-bench.log';

  constructor(
    readonly port: number,
    readonly domain: string,
  ) {}

  private writeConfig(): void {
    chmodSync(this.conf, 0o755);
    mkdirSync(this.dataDir, { recursive: true });
    mkdirSync(this.queueDir, { recursive: true });
    const postfixUser = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[0] === 'postfix');
    if (postfixUser) chownSync(this.dataDir, Number(postfixUser[2]), Number(postfixUser[3]));
    copyFileSync('/etc/postfix/master.cf', path.join(this.conf, 'master.cf'));
    if (existsSync('/etc/postfix/dynamicmaps.cf')) copyFileSync('/etc/postfix/dynamicmaps.cf', path.join(this.conf, 'dynamicmaps.cf'));
    writeFileSync(
      path.join(this.conf, 'main.cf'),
      [
        'compatibility_level = 3.6',
        'myhostname = postfix-bench.local',
        'mydomain = postfix-bench.local',
        'myorigin = $myhostname',
        'mydestination =',
        'inet_interfaces = 127.0.0.1',
        'inet_protocols = ipv4',
        'mynetworks = 127.0.0.0/8',
        `relay_domains = ${this.domain}`,
        `transport_maps = inline:{ ${this.domain}=discard:bench }`,
        'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination',
        `queue_directory = ${this.queueDir}`,
        `data_directory = ${this.dataDir}`,
        `maillog_file = ${this.logFile}`,
        'alias_maps =',
        'alias_database =',
        'biff = no',
        'smtputf8_enable = no',
        'message_size_limit = 52428800',
        '',
      ].join('\n'),
    );
    // Replace the port-25 listener by 127.0.0.1:<port>; no chroot (nothing copied into the queue dir).
    const master = readFileSync(path.join(this.conf, 'master.cf'), 'utf8').replace(/^smtp(\s+)inet/m, '#smtp$1inet');
    writeFileSync(path.join(this.conf, 'master.cf'), `${master}\n127.0.0.1:${this.port} inet n - n - - smtpd\n`);
  }

  /** Starts it; returns the master's pid. */
  async start(): Promise<number> {
    this.writeConfig();
    const chroot = await run('postconf', ['-c', this.conf, '-F', '*/*/chroot = n']);
    if (chroot.code !== 0) throw new Error(`postconf: ${chroot.stderr}`);
    const check = await run('postfix', ['-c', this.conf, 'check']);
    if (check.code !== 0) throw new Error(`postfix check: ${check.stderr}${check.stdout}${this.log(5)}`);
    const start = await run('postfix', ['-c', this.conf, 'start']);
    if (start.code !== 0) throw new Error(`postfix start: ${start.stderr}${start.stdout}`);
    await waitForPort(this.port, 15_000);
    return this.pid();
  }

  pid(): number {
    return Number(readFileSync(path.join(this.queueDir, 'pid/master.pid'), 'utf8').trim());
  }

  /** Messages still in the queue (not yet handed to discard:). */
  queued(): number {
    let n = 0;
    const walk = (dir: string): void => {
      if (!existsSync(dir)) return;
      for (const name of readdirSync(dir)) {
        const p = path.join(dir, name);
        try {
          if (statSync(p).isDirectory()) walk(p);
          else n++;
        } catch {
          // delivered meanwhile
        }
      }
    };
    for (const q of ['maildrop', 'incoming', 'active', 'deferred', 'hold']) walk(path.join(this.queueDir, q));
    return n;
  }

  /** Waits (bounded) until the queue has drained; returns what is left. */
  async drain(timeoutMs = 120_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let left = this.queued();
    while (left > 0 && Date.now() < deadline) {
      await sleep(200);
      left = this.queued();
    }
    return left;
  }

  /** The last lines of its log. */
  log(lines = 20): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-lines).join('\n') : '(no log)';
  }

  /** Stops it and removes its queue, data and config directories. */
  async stop(): Promise<void> {
    let pid = 0;
    try {
      pid = this.pid();
    } catch {
      // never started
    }
    await run('postfix', ['-c', this.conf, 'stop']);
    // The master exits asynchronously; wait for it before removing the queue.
    for (let i = 0; i < 100 && pid && existsSync(`/proc/${pid}`); i++) await sleep(100);
    rmSync(this.queueDir, { recursive: true, force: true });
    rmSync(this.dataDir, { recursive: true, force: true });
    rmSync(this.conf, { recursive: true, force: true });
    rmSync(this.logFile, { force: true });
  }
}
