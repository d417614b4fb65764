/**
 * npm run bench:smtp [-- --sizes 4096,65536 --sessions 1,10,50 --servers mailtrail,postfix,bare
 *                       --runs 3 --seconds 4 --latency-seconds 3 --quick true --write true|false]
 *
 * SMTP acceptance on loopback: how many messages per second are answered 250 after DATA, and how
 * long each waits for it, for mailtrail (child process `node --import tsx src/main.ts`, embedded
 * store in a temporary DATA_DIR, every 250 durable, default checks on) and, in the same run, two
 * reference points: Postfix from Debian (a separate instance with its own queue, discard:
 * transport; its queue files are fsync'd before 250) and a bare `smtp-server` that only drains DATA.
 *
 * Per server, message size and session count: smtp-source calibrates (runs growing until one lasts
 * ≥ 1 s), then `--runs` timed runs of ~`--seconds` each (throughput = messages / wall time; the
 * median is reported); then a nodemailer pool with the same number of sessions sends for
 * `--latency-seconds`, one message in flight per connection, for p50/p99 acceptance latency.
 * Afterwards the MailReceived events in mailtrail's store are counted against the messages it
 * acknowledged. `--quick true`: one short run of each (a smoke test; numbers not for comparison).
 * Method and scripts after shared/research/perf (bench.sh, postfix-ctl.sh, nm-load.mjs).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseFlagsOrExit } from '../src/cli/run.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { ensurePostfix, PostfixInstance } from './lib/postfix.js';
import { benchServerEnv, CpuMeter, freePort, loadAvg, note, ROOT, run, sleep, startChild, waitForPort } from './lib/proc.js';
import { machine, percentile, table, writeSection } from './lib/report.js';
import { nodemailerLoad, SMTP_SOURCE_COMMAND, smtpSource } from './lib/smtp-load.js';

const USAGE =
  'npm run bench:smtp [-- --sizes 4096,65536 --sessions 1,10,50 --servers mailtrail,mailtrail-workers,postfix,bare --smtp-workers 2 --runs 3 --seconds 4 --latency-seconds 3 --quick true|false --write true|false]';
const flags = parseFlagsOrExit(process.argv.slice(2), ['sizes', 'sessions', 'servers', 'smtp-workers', 'runs', 'seconds', 'latency-seconds', 'quick', 'write'], USAGE);
const QUICK = flags.quick === 'true';
const SIZES = (flags.sizes ?? '4096,65536').split(',').map(Number);
const SESSIONS = (flags.sessions ?? '1,10,50').split(',').map(Number);
const SERVERS = (flags.servers ?? 'mailtrail,mailtrail-workers,postfix,bare').split(',');
/** SMTP_WORKERS of the mailtrail-workers server. */
const SMTP_WORKERS = Number(flags['smtp-workers'] ?? 2);
const RUNS = Number(flags.runs ?? (QUICK ? 1 : 3));
const SECONDS = Number(flags.seconds ?? (QUICK ? 1.5 : 4));
const LATENCY_SECONDS = Number(flags['latency-seconds'] ?? (QUICK ? 1 : 3));
for (const [name, values] of Object.entries({ sizes: SIZES, sessions: SESSIONS, 'smtp-workers': [SMTP_WORKERS], runs: [RUNS], seconds: [SECONDS], 'latency-seconds': [LATENCY_SECONDS] })) {
  if (values.some((v) => !Number.isFinite(v) || v <= 0)) {
    console.error(`--${name} must be positive numbers\nusage: ${USAGE}`);
    process.exit(2);
  }
}
for (const s of SERVERS) {
  if (!['mailtrail', 'mailtrail-workers', 'postfix', 'bare'].includes(s)) {
    console.error(`unknown server ${s}\nusage: ${USAGE}`);
    process.exit(2);
  }
}

const DOMAIN = 'bench.test';
const TO = `to@${DOMAIN}`;
const LABEL: Record<string, string> = { mailtrail: 'mailtrail', 'mailtrail-workers': `mailtrail, ${SMTP_WORKERS} SMTP workers`, postfix: 'Postfix', bare: 'bare smtp-server' };
const isMailtrail = (name: string): boolean => name.startsWith('mailtrail');
const kb = (size: number): string => `${Math.round(size / 1024)} KB`;
const version = (pkg: string): string => (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;

interface Server {
  name: string;
  port: number;
  pid: number;
  /** After each client run: e.g. wait for Postfix's queue to drain. Returns a problem, if any. */
  settle(): Promise<string | null>;
  stop(): Promise<void>;
}

interface Measurement {
  server: string;
  size: number;
  sessions: number;
  /** msgs/s of each timed throughput run. */
  rates: number[];
  serverCpu: number[];
  machineBusy: number[];
  load: number;
  latency: { rate: number; p50: number; p99: number; sent: number; errors: number } | null;
  problems: string[];
}

// --- servers ----------------------------------------------------------------------------------

/** mailtrail's acknowledgements, to check against its store at the end. */
const mailtrailAcks = new Map<string, { acked: number; unknownRuns: number; stored: number | null }>();
const acksOf = (name: string): { acked: number; unknownRuns: number; stored: number | null } => {
  let a = mailtrailAcks.get(name);
  if (!a) mailtrailAcks.set(name, (a = { acked: 0, unknownRuns: 0, stored: null }));
  return a;
};

async function startMailtrail(name: string, smtpWorkers: number): Promise<Server> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-bench-smtp-'));
  const smtpPort = await freePort();
  const env = benchServerEnv({ dataDir, httpPort: 0, smtpPort, domain: DOMAIN, smtpWorkers });
  const add = await run('npm', ['run', '-s', 'user:add', '--', '--email', TO, '--name', 'To', '--password', 'benchpassword'], { env, timeoutMs: 120_000 });
  if (add.code !== 0) throw new Error(`npm run user:add failed: ${add.stderr}${add.stdout}`);
  const child = startChild('mailtrail', process.execPath, ['--import', 'tsx', 'src/main.ts'], { env });
  await waitForPort(smtpPort, 300_000, child);
  return {
    name,
    port: smtpPort,
    pid: child.pid,
    settle: async () => (child.exitCode() !== undefined ? `mailtrail exited: ${child.output().slice(-2000)}` : null),
    async stop() {
      const code = await child.stop();
      if (code !== 0) note(`mailtrail exited with ${code}:\n${child.output().slice(-3000)}`);
      note('counting MailReceived events in the store …');
      const store = await openSqliteStore({ dataDir });
      try {
        let events = 0;
        let after = 0;
        for (;;) {
          const batch = await store.events.readAll({ after, limit: 5000 });
          if (batch.length === 0) break;
          events += batch.filter((e) => e.type === 'MailReceived').length;
          after = batch.at(-1)!.position;
        }
        acksOf(name).stored = events;
      } finally {
        await store.close();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}

async function startBare(): Promise<Server> {
  const port = await freePort();
  const child = startChild('bare smtp-server', process.execPath, ['--import', 'tsx', 'scripts/lib/bare-smtp.ts', String(port), DOMAIN]);
  await waitForPort(port, 60_000, child);
  return {
    name: 'bare',
    port,
    pid: child.pid,
    settle: async () => (child.exitCode() !== undefined ? `bare smtp-server exited: ${child.output().slice(-2000)}` : null),
    async stop() {
      await child.stop();
    },
  };
}

let postfixVersion: string | null = null;
let postfixMissing: string | null = null;

async function startPostfix(): Promise<Server | null> {
  const ok = await ensurePostfix();
  if (!ok.ok) {
    postfixMissing = ok.why;
    return null;
  }
  postfixVersion = ok.version;
  const port = await freePort();
  const pf = new PostfixInstance(port, DOMAIN);
  let pid: number;
  try {
    pid = await pf.start();
  } catch (error) {
    postfixMissing = `could not start Postfix: ${error instanceof Error ? error.message : String(error)}`;
    note(`${postfixMissing}\n${pf.log()}`);
    await pf.stop().catch(() => undefined);
    return null;
  }
  return {
    name: 'postfix',
    port,
    pid,
    async settle() {
      const left = await pf.drain();
      return left > 0 ? `${left} messages still queued after 120 s` : null;
    },
    stop: () => pf.stop(),
  };
}

// --- measurement ------------------------------------------------------------------------------

let haveSmtpSource = false;

async function throughputRun(server: Server, size: number, sessions: number, count: number): Promise<{ ok: boolean; acked: number | null; secs: number; error: string | null; rate: number }> {
  if (haveSmtpSource) {
    const r = await smtpSource(server.port, sessions, count, size, TO);
    return { ...r, rate: r.ok ? count / r.secs : 0 };
  }
  // Without smtp-source: the nodemailer pool, bounded by count (its numbers measure the client too).
  const r = await nodemailerLoad({ port: server.port, sessions, size, seconds: 120, to: TO, maxCount: count });
  return { ok: r.errors === 0, acked: r.sent, secs: r.secs, error: r.firstError, rate: r.sent / r.secs };
}

async function measure(server: Server, size: number, sessions: number): Promise<Measurement> {
  const m: Measurement = { server: server.name, size, sessions, rates: [], serverCpu: [], machineBusy: [], load: os.loadavg()[0]!, latency: null, problems: [] };
  const ack = (acked: number | null): void => {
    if (!isMailtrail(server.name)) return;
    if (acked === null) acksOf(server.name).unknownRuns++;
    else acksOf(server.name).acked += acked;
  };
  const settle = async (): Promise<void> => {
    const problem = await server.settle();
    if (problem) m.problems.push(problem);
    await sleep(300);
  };
  // Calibration (also the warm-up): grow until one run lasts ≥ 1 s, then size the timed runs.
  let count = Math.max(sessions * 20, 200);
  let rate = 0;
  for (let attempt = 0; attempt < 6; attempt++) {
    const r = await throughputRun(server, size, sessions, count);
    ack(r.acked);
    await settle();
    if (!r.ok) {
      m.problems.push(`calibration: ${r.error}`);
      return m;
    }
    rate = r.rate;
    if (r.secs >= 1) break;
    count = Math.max(count * 2, Math.round(rate * 2.5));
  }
  count = Math.max(sessions * 10, Math.round(rate * SECONDS));
  for (let i = 0; i < RUNS; i++) {
    const meter = new CpuMeter(server.pid);
    const r = await throughputRun(server, size, sessions, count);
    const cpu = meter.stop();
    ack(r.acked);
    await settle();
    if (!r.ok) {
      m.problems.push(`run ${i + 1}: ${r.error}`);
      continue;
    }
    m.rates.push(r.rate);
    m.serverCpu.push(cpu.serverPct ?? 0);
    m.machineBusy.push(cpu.machinePct);
    note(`  ${LABEL[server.name]} ${kb(size)} ${sessions} sessions run ${i + 1}/${RUNS}: ${count} msgs in ${r.secs.toFixed(2)} s = ${Math.round(r.rate)} msgs/s, server CPU ${Math.round(cpu.serverPct ?? 0)} %, machine ${Math.round(cpu.machinePct)} %`);
  }
  const lat = await nodemailerLoad({ port: server.port, sessions, size, seconds: LATENCY_SECONDS, to: TO });
  ack(lat.sent);
  if (isMailtrail(server.name) && lat.errors > 0) acksOf(server.name).unknownRuns++;
  await settle();
  m.latency = { rate: lat.sent / lat.secs, p50: percentile(lat.latencies, 50), p99: percentile(lat.latencies, 99), sent: lat.sent, errors: lat.errors };
  if (lat.errors) m.problems.push(`nodemailer: ${lat.errors} errors (${lat.firstError})`);
  note(`  ${LABEL[server.name]} ${kb(size)} ${sessions} sessions nodemailer: ${lat.sent} msgs, ${Math.round(m.latency.rate)} msgs/s, p50 ${m.latency.p50.toFixed(1)} ms, p99 ${m.latency.p99.toFixed(1)} ms`);
  return m;
}

// --- main -------------------------------------------------------------------------------------

const loadAtStart = loadAvg();
const startedAt = Date.now();
// smtp-source comes with Debian's postfix: install it if missing (every server is loaded with it).
haveSmtpSource = (await ensurePostfix()).ok || (await run('sh', ['-c', 'command -v smtp-source'])).code === 0;
const results: Measurement[] = [];
const skipped: string[] = [];

for (const name of SERVERS) {
  note(`\n== ${LABEL[name]}`);
  let server: Server | null;
  try {
    server = isMailtrail(name) ? await startMailtrail(name, name === 'mailtrail' ? 0 : SMTP_WORKERS) : name === 'bare' ? await startBare() : await startPostfix();
  } catch (error) {
    server = null;
    skipped.push(`${LABEL[name]}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
    note(`could not start ${LABEL[name]}: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!server) {
    if (name === 'postfix' && postfixMissing) skipped.push(`Postfix: ${postfixMissing}`);
    continue;
  }
  note(`listening on 127.0.0.1:${server.port}, pid ${server.pid}; load average ${loadAvg()}`);
  try {
    for (const size of SIZES) for (const sessions of SESSIONS) results.push(await measure(server, size, sessions));
  } finally {
    await server.stop();
  }
}

// --- report -----------------------------------------------------------------------------------

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en') : '–');
const ms = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '–' : n < 10 ? n.toFixed(2) : n.toFixed(1));
const find = (server: string, size: number, sessions: number): Measurement | undefined => results.find((r) => r.server === server && r.size === size && r.sessions === sessions);
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–');
const lat = (m: Measurement | undefined): string => (m?.latency && m.latency.sent > 0 ? `${ms(m.latency.p50)} / ${ms(m.latency.p99)}` : '–');

const summaryRows: (string | number)[][] = [];
for (const size of SIZES) {
  for (const sessions of SESSIONS) {
    const [mt, mw, pf, bare] = ['mailtrail', 'mailtrail-workers', 'postfix', 'bare'].map((s) => find(s, size, sessions));
    const [rMt, rMw, rPf, rBare] = [mt, mw, pf, bare].map((m) => median(m?.rates ?? []));
    const best = Math.max(rMt || 0, rMw || 0);
    summaryRows.push([kb(size), sessions, int(rMt!), int(rMw!), int(rPf!), int(rBare!), ratio(best, rPf!), ratio(best, rBare!), lat(mt), lat(mw), lat(pf), lat(bare)]);
  }
}
const detailRows = results.map((m) => {
  const rates = m.rates.map(Math.round);
  return [
    LABEL[m.server]!,
    kb(m.size),
    m.sessions,
    `${m.rates.length}/${RUNS}`,
    `**${int(median(m.rates))}**`,
    rates.length > 1 ? `${int(Math.min(...rates))}–${int(Math.max(...rates))}` : '',
    int(median(m.serverCpu)),
    int(median(m.machineBusy)),
    m.latency ? int(m.latency.rate) : '–',
    m.latency ? ms(m.latency.p50) : '–',
    m.latency ? ms(m.latency.p99) : '–',
    m.load.toFixed(2),
    m.problems.join('; ').replace(/\|/g, '/').slice(0, 300),
  ];
});

const verifications = [...mailtrailAcks].map(([name, a]) => {
  const label = LABEL[name]!;
  if (a.stored === null) return `${label}: the store could not be read after the run.`;
  if (a.unknownRuns > 0)
    return `${label}: ${int(a.stored)} \`MailReceived\` events in the store; ${int(a.acked)} messages acknowledged in the client runs that completed, and ${a.unknownRuns} run(s) failed part-way (their acknowledgements are not known), so stored ≥ acknowledged is all that can be checked: ${a.stored >= a.acked ? 'it holds' : '**it does not hold**'}.`;
  return `${label} acknowledged ${int(a.acked)} messages (calibration, timed and latency runs) and its store holds ${int(a.stored)} \`MailReceived\` events afterwards: ${a.stored === a.acked ? 'every acknowledged message was stored, each once' : `**${a.stored > a.acked ? 'more' : 'fewer'} than acknowledged**`}.`;
});
const verification = verifications.length ? verifications.join(' ') : 'mailtrail was not measured.';

const notes: string[] = [];
if (!haveSmtpSource) notes.push('`smtp-source` (Debian `postfix`) was not available: throughput comes from the nodemailer pool instead, which at a few thousand msgs/s measures the client as much as the server.');
for (const s of skipped) notes.push(`Not measured — ${s}`);
if (QUICK) notes.push('`--quick true`: one short run per row, a smoke test; do not compare these numbers.');

const command = `npm run bench:smtp${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
const markdown = [
  '## SMTP acceptance (`npm run bench:smtp`)',
  '',
  `Machine: ${machine()}. Date: ${new Date().toISOString().slice(0, 10)}. Load average (1/5/15 min) at start ${loadAtStart}, at end ${loadAvg()}; the machine is shared, other processes may have used CPU during the runs (see "machine busy"). Whole command: ${Math.round((Date.now() - startedAt) / 1000)} s.`,
  `Command: \`${command}\`. Versions: smtp-server ${version('smtp-server')}, nodemailer ${version('nodemailer')}, mailparser ${version('mailparser')}, mailauth ${version('mailauth')}${postfixVersion ? `, Postfix ${postfixVersion}` : ''}.`,
  '',
  `Servers, all on 127.0.0.1: **mailtrail** (\`node --import tsx src/main.ts\`, embedded store in a fresh DATA_DIR with \`SQLITE_SYNCHRONOUS=FULL\`, so a 250 is sent only once the message's blob and event are fsync'd; default checks on: policy, smuggling guard, mailauth SPF/DKIM/DMARC/ARC for these unauthenticated senders — this machine's DNS answers at once with "not found", so look-ups cost little; relay off) — once with SMTP in the main process (the default) and once with \`SMTP_WORKERS=${SMTP_WORKERS}\` (SMTP in ${SMTP_WORKERS} worker processes sharing the port and the store, the main process projecting); **Postfix** from Debian, a separate instance with its own queue, relaying ${DOMAIN} to the \`discard:\` transport (its queue file is fsync'd before 250; the queue is drained between runs); **bare smtp-server**, the \`smtp-server\` package alone, draining DATA and answering 250 (the ceiling of the Node SMTP stack).`,
  `Throughput: \`${SMTP_SOURCE_COMMAND}\` (Postfix's C client, no pipelining, each session keeps its connection). For each row a calibration run (grown until it lasts ≥ 1 s, also the warm-up) sizes COUNT to ~${SECONDS} s, then ${RUNS} timed run(s); msgs/s = COUNT / wall time of smtp-source, median shown. Message = ~120 B of headers + SIZE bytes of body. Latency: a nodemailer pool (\`maxConnections\` = sessions, one message in flight per connection, a unique Message-ID each) sends for ${LATENCY_SECONDS} s; p50/p99 of the time from handing a message to the pool to the 250 after DATA. Server CPU is the server's process tree in % of one core; machine busy is all CPU use on the machine in % (max ${os.cpus().length * 100}). Each server handles 4 KB first, then 64 KB.`,
  '',
  table(['size', 'sessions', 'mailtrail msgs/s', `mailtrail, ${SMTP_WORKERS} SMTP workers, msgs/s`, 'Postfix msgs/s', 'bare smtp-server msgs/s', 'best mailtrail ÷ Postfix', 'best mailtrail ÷ bare', 'mailtrail p50 / p99 ms', `${SMTP_WORKERS} workers p50 / p99 ms`, 'Postfix p50 / p99 ms', 'bare p50 / p99 ms'], summaryRows),
  '',
  'Every measurement:',
  '',
  table(['server', 'size', 'sessions', 'runs ok', 'smtp-source msgs/s (median)', 'min–max', 'server CPU %', 'machine busy %', 'nodemailer msgs/s', 'p50 ms', 'p99 ms', 'load avg 1 min', 'problems'], detailRows),
  '',
  `Durability check: ${verification}`,
  ...(notes.length ? ['', ...notes.map((n) => `- ${n}`)] : []),
].join('\n');

console.log(`\n${markdown}`);
if (flags.write !== 'false') {
  writeSection('bench:smtp', markdown);
  note('\nwritten to docs/benchmarks.md');
}
