/**
 * Child processes, ports and CPU accounting for the benchmark scripts (bench:smtp, bench:api).
 * Linux only (reads /proc).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

/** The repository root (scripts/lib/../..). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port; rejects after `timeoutMs` or if `child` exits. */
export async function waitForPort(port: number, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode() !== undefined) throw new Error(`${child.name} exited (${child.exitCode()}) before listening on ${port}:\n${child.output().slice(-3000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms${child ? `:\n${child.output().slice(-3000)}` : ''}`);
}

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** stdout + stderr so far (last 200 KB). */
  output(): string;
  /** undefined while running; the exit code (null if killed by a signal) once exited. */
  exitCode(): number | null | undefined;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/**
 * The environment of a mailtrail server under benchmark: the embedded store in `dataDir`, durable
 * before every 250, whatever the caller's environment or .env says; loopback clients not rate
 * limited; no outbound delivery.
 */
export function benchServerEnv(opts: { dataDir: string; httpPort: number; smtpPort: number; domain: string; smtpWorkers?: number }): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATA_DIR: opts.dataDir,
    PORT: String(opts.httpPort),
    SMTP_PORT: String(opts.smtpPort),
    HOST: '127.0.0.1',
    DEFAULT_DOMAIN: opts.domain,
    LOG_LEVEL: 'warn',
    RELAY_ENABLED: 'false',
    MONGODB_URI: '',
    SQLITE_SYNCHRONOUS: 'FULL',
    RATE_LIMIT_LOOPBACK: 'false',
    SMTP_WORKERS: String(opts.smtpWorkers ?? 0),
  };
}

/** Starts a long-running child (stdout and stderr collected, not shown). */
export function startChild(name: string, command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Child {
  const proc = spawn(command, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 400_000) out = out.slice(-200_000);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    proc.on('error', (err) => {
      keep(Buffer.from(`\n${name}: ${err.message}\n`));
      code = -1;
      resolve(-1);
    });
    proc.on('close', (c) => {
      code = c;
      resolve(c);
    });
  });
  return {
    name,
    proc,
    pid: proc.pid ?? -1,
    output: () => out,
    exitCode: () => code,
    exited,
    async stop(graceMs = 30_000) {
      if (code !== undefined) return code;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const c = await exited;
      clearTimeout(timer);
      return c;
    },
  };
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall time. */
  secs: number;
}

/** Runs a command to completion (killed after `timeoutMs`). */
export function run(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const started = performance.now();
    const proc = spawn(command, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = opts.timeoutMs ? setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs) : null;
    proc.on('error', (err) => {
      if (timer) clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}${err.message}`, secs: (performance.now() - started) / 1000 });
    });
    proc.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, stdout, stderr, secs: (performance.now() - started) / 1000 });
    });
    if (proc.stdin) {
      proc.stdin.on('error', () => undefined);
      proc.stdin.end(opts.input);
    }
  });
}

/** `command -v` */
export async function which(command: string): Promise<string | null> {
  const r = await run('sh', ['-c', `command -v ${command}`]);
  return r.code === 0 ? r.stdout.trim() : null;
}

const TICK = 100; // USER_HZ on Linux

/** [pid, ppid, utime+stime+cutime+cstime ticks] of every process. */
function allProcesses(): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const line = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = line.slice(line.lastIndexOf(')') + 2).split(' ');
      out.push([Number(name), Number(f[1]), Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])]);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * CPU seconds used so far by a process, its live descendants and the children it has reaped
 * (so a Postfix master counts the daemons it ran and reaped).
 */
export function treeCpuSeconds(root: number): number {
  const procs = allProcesses();
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of procs) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const ticks = new Map(procs.map(([pid, , t]) => [pid, t]));
  let total = 0;
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    total += ticks.get(pid) ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return total / TICK;
}

/** Whole-machine CPU counters from /proc/stat: busy and total jiffies over all cores. */
export function machineCpu(): { busy: number; total: number } {
  const [, ...f] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  const n = f.map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = [n[0]!, n[1]!, n[2]!, n[3]!, n[4]!, n[5]!, n[6]!, n[7] ?? 0];
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/** Samples the machine and a server's process tree around a measurement. */
export class CpuMeter {
  private readonly m0 = machineCpu();
  private readonly s0: number;
  private readonly t0 = performance.now();
  constructor(private readonly serverPid: number | null) {
    this.s0 = serverPid ? treeCpuSeconds(serverPid) : 0;
  }
  /** Server CPU in % of one core, machine busy in % of all cores (n × 100). */
  stop(): { serverPct: number | null; machinePct: number } {
    const secs = (performance.now() - this.t0) / 1000;
    const m1 = machineCpu();
    const serverPct = this.serverPid ? (100 * (treeCpuSeconds(this.serverPid) - this.s0)) / secs : null;
    const machinePct = (100 * os.cpus().length * (m1.busy - this.m0.busy)) / Math.max(1, m1.total - this.m0.total);
    return { serverPct, machinePct };
  }
}

export const loadAvg = (): string =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');

/** A short line on stderr. */
export const note = (message: string): void => {
  process.stderr.write(`${message}\n`);
};
