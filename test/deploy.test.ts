/**
 * The deployment kit: the shipped nginx config run by Debian's nginx in front of a real mailtrail
 * (HTTPS, the API, SSE, redirects, certbot's path, body limit), the systemd unit, the PM2 file,
 * docker-compose.yml and the Dockerfile, and deploy/iptables.sh against a stand-in iptables.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { loadConfig } from '../src/config.js';
import { ROOT, startServer } from './support/process.js';

const deploy = (...p: string[]): string => path.join(ROOT, 'deploy', ...p);
const defaults = loadConfig({});
/** Longest a graceful stop may take by default: SMTP messages being received, then relay attempts (RELAY_SHUTDOWN_GRACE_MS default). */
const gracefulStopMs = defaults.SMTP_SHUTDOWN_TIMEOUT_MS + 10_000;

/** A binary on PATH or in the sbin folders (where Debian puts nginx), else null. */
function findBinary(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  return dirs.map((d) => path.join(d, name)).find(existsSync) ?? null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `text` with `from` replaced; the shipped file must contain it, so a changed file breaks the test loudly. */
function replaceAll(text: string, from: string, to: string): string {
  assert.ok(text.includes(from), `deploy/nginx/mailtrail.conf no longer contains ${JSON.stringify(from)}`);
  return text.split(from).join(to);
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function collect(res: http.IncomingMessage): Promise<Response> {
  return new Promise((resolve, reject) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => (body += d));
    res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    res.on('error', reject);
  });
}

interface Nginx {
  httpPort: number;
  httpsPort: number;
  /** The self-signed certificate, trusted by the test's requests. */
  ca: Buffer;
  webroot: string;
  checkOutput: string;
  stop(): Promise<void>;
}

/**
 * The shipped config with test ports, a self-signed certificate and a temporary webroot, run by the
 * machine's nginx (after `nginx -t`) with everything else in a temporary prefix.
 */
async function startNginx(nginx: string, openssl: string, upstreamPort: number): Promise<Nginx> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-nginx-'));
  // Workers run as nobody when the master is root: they must reach the webroot.
  chmodSync(dir, 0o755);
  const webroot = path.join(dir, 'webroot');
  mkdirSync(webroot, { recursive: true });
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(openssl, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=mail.example.com', '-addext', 'subjectAltName=DNS:mail.example.com'], { stdio: 'pipe' });
  const [httpPort, httpsPort] = [await freePort(), await freePort()];
  let site = readFileSync(deploy('nginx', 'mailtrail.conf'), 'utf8');
  site = replaceAll(site, 'server 127.0.0.1:3000;', `server 127.0.0.1:${upstreamPort};`);
  site = replaceAll(site, '    listen [::]:80;\n', '');
  site = replaceAll(site, '    listen [::]:443 ssl http2;\n', '');
  site = replaceAll(site, 'listen 80;', `listen 127.0.0.1:${httpPort};`);
  site = replaceAll(site, 'listen 443 ssl http2;', `listen 127.0.0.1:${httpsPort} ssl http2;`);
  site = replaceAll(site, '/etc/letsencrypt/live/mail.example.com/fullchain.pem', cert);
  site = replaceAll(site, '/etc/letsencrypt/live/mail.example.com/privkey.pem', key);
  site = replaceAll(site, '/var/www/certbot', webroot);
  writeFileSync(path.join(dir, 'mailtrail.conf'), site);
  // What /etc/nginx/nginx.conf gives a site file on Debian, with every path inside `dir`.
  const temp = (name: string): string => `${name}_temp_path ${path.join(dir, name)};`;
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    [
      'daemon off;',
      'worker_processes 1;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      `error_log ${path.join(dir, 'error.log')} info;`,
      'events { worker_connections 64; }',
      'http {',
      `  access_log ${path.join(dir, 'access.log')};`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${temp(t)}`),
      `  include ${path.join(dir, 'mailtrail.conf')};`,
      '}',
      '',
    ].join('\n'),
  );
  const args = ['-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')];
  const check = spawnSync(nginx, ['-t', ...args], { encoding: 'utf8' });
  const checkOutput = `${check.stdout}${check.stderr}`;
  assert.equal(check.status, 0, `nginx -t failed:\n${checkOutput}`);

  const child: ChildProcess = spawn(nginx, args, { stdio: 'ignore' });
  let exited: number | null | undefined;
  const done = new Promise<void>((resolve) => child.on('exit', (code) => ((exited = code), resolve())));
  // nginx writes its pid into the pid file after it has bound its ports: from then on connections
  // are queued. (`nginx -t` leaves an empty pid file behind, hence the comparison.)
  const pidFile = path.join(dir, 'nginx.pid');
  while (!existsSync(pidFile) || readFileSync(pidFile, 'utf8').trim() !== String(child.pid)) {
    if (exited !== undefined) assert.fail(`nginx exited with ${exited}:\n${readFileSync(path.join(dir, 'error.log'), 'utf8')}`);
    await sleep(20);
  }
  return {
    httpPort,
    httpsPort,
    ca: readFileSync(cert),
    webroot,
    checkOutput,
    async stop() {
      if (exited === undefined) child.kill('SIGTERM');
      await done;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function viaHttps(n: Nginx, method: string, urlPath: string, headers: http.OutgoingHttpHeaders = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: n.httpsPort, servername: 'mail.example.com', ca: n.ca, method, path: urlPath, headers: { host: 'mail.example.com', ...headers } }, (res) =>
      collect(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.end();
  });
}

function viaHttp(port: number, urlPath: string, host = 'mail.example.com'): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, headers: { host } }, (res) => collect(res).then(resolve, reject));
    req.on('error', reject);
    req.end();
  });
}

const nginxBin = findBinary('nginx');
const opensslBin = findBinary('openssl');
const skipNginx = !nginxBin ? 'nginx is not installed (Debian: apt-get install nginx)' : !opensslBin ? 'openssl is not installed (Debian: apt-get install openssl)' : false;

describe('nginx with deploy/nginx/mailtrail.conf in front of a running mailtrail', { skip: skipNginx }, () => {
  let server: Awaited<ReturnType<typeof startServer>>;
  let proxy: Nginx;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-deploy-'));

  before(async () => {
    server = await startServer({ DATA_DIR: dataDir, PORT: '0', SMTP_PORT: '0', HOST: '127.0.0.1' });
    proxy = await startNginx(nginxBin!, opensslBin!, server.port);
  });
  after(async () => {
    await proxy?.stop();
    server?.child.kill('SIGTERM');
    await server?.exited;
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('nginx -t accepts the config', () => {
    assert.match(proxy.checkOutput, /syntax is ok/);
    assert.match(proxy.checkOutput, /test is successful/);
  });

  test('HTTPS /health reaches mailtrail, with the security headers', async () => {
    const res = await viaHttps(proxy, 'GET', '/health');
    assert.equal(res.status, 200);
    assert.equal((JSON.parse(res.body) as { status: string }).status, 'ok');
    assert.equal(res.headers['strict-transport-security'], 'max-age=63072000');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['x-frame-options'], 'DENY');
    assert.equal(res.headers['referrer-policy'], 'no-referrer');
    assert.match(String(res.headers['content-security-policy']), /frame-ancestors 'none'/);
  });

  test('/metrics is not served to the public side', async () => {
    assert.equal((await viaHttps(proxy, 'GET', '/metrics')).status, 403);
  });

  test('a tRPC call through nginx gets exactly what mailtrail answers', async (t) => {
    const direct = await viaHttp(server.port, '/trpc/auth.me');
    const proxied = await viaHttps(proxy, 'GET', '/trpc/auth.me');
    assert.equal(proxied.status, direct.status);
    assert.deepEqual(JSON.parse(proxied.body), JSON.parse(direct.body));
    if (direct.status === 404) t.diagnostic('the API is not wired into the server yet: compared its 404 answer');
    else assert.equal(proxied.status, 401, 'auth.me without a token');
  });

  test('HTTP redirects to HTTPS, except certbot\'s challenge path, served from the webroot', async () => {
    const redirect = await viaHttp(proxy.httpPort, '/inbox?page=2');
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.location, 'https://mail.example.com/inbox?page=2');
    mkdirSync(path.join(proxy.webroot, '.well-known', 'acme-challenge'), { recursive: true });
    writeFileSync(path.join(proxy.webroot, '.well-known', 'acme-challenge', 'tok3n'), 'tok3n.thumbprint');
    const challenge = await viaHttp(proxy.httpPort, '/.well-known/acme-challenge/tok3n');
    assert.equal(challenge.status, 200);
    assert.equal(challenge.body, 'tok3n.thumbprint');
    assert.equal(challenge.headers['content-type'], 'text/plain');
  });

  test('a body over the attachment limit is refused by nginx before it is sent', async () => {
    const status = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'mail.example.com', ca: proxy.ca }, () => {
        socket.write('POST /trpc/mails.send HTTP/1.1\r\nHost: mail.example.com\r\nContent-Type: application/json\r\nContent-Length: 41943040\r\n\r\n');
      });
      let head = '';
      socket.on('data', (d: Buffer) => {
        head += d.toString();
        if (head.includes('\r\n')) {
          resolve(head.slice(0, head.indexOf('\r\n')));
          socket.destroy();
        }
      });
      socket.on('error', reject);
    });
    assert.equal(status, 'HTTP/1.1 413 Request Entity Too Large');
  });
});

describe('server-sent events through the /trpc/ location', { skip: skipNginx }, () => {
  /** Stands in for a tRPC subscription: one event, then the next only once the client has the first. */
  let upstream: http.Server;
  let proxy: Nginx;
  let firstArrived: () => void = () => undefined;
  let seenHeaders: http.IncomingHttpHeaders = {};

  before(async () => {
    upstream = http.createServer((req, res) => {
      seenHeaders = req.headers;
      // No X-Accel-Buffering header: the config alone must keep nginx from buffering.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('data: 1\n\n');
      new Promise<void>((resolve) => (firstArrived = resolve)).then(() => res.end('data: 2\n\n'));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    proxy = await startNginx(nginxBin!, opensslBin!, (upstream.address() as net.AddressInfo).port);
  });
  after(async () => {
    await proxy?.stop();
    upstream?.closeAllConnections();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  test('each event reaches the client while the stream stays open, with the forwarding headers set', { timeout: 60_000 }, async () => {
    const events = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = [];
      const req = https.request(
        { host: '127.0.0.1', port: proxy.httpsPort, servername: 'mail.example.com', ca: proxy.ca, path: '/trpc/mails.onChange?input=%7B%7D', headers: { host: 'mail.example.com', accept: 'text/event-stream' } },
        (res) => {
          res.setEncoding('utf8');
          let buffer = '';
          res.on('data', (d: string) => {
            buffer += d;
            for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
              got.push(buffer.slice(0, i));
              buffer = buffer.slice(i + 2);
              // The upstream sends the rest only now: a buffering proxy would never deliver this first event.
              if (got.length === 1) firstArrived();
            }
          });
          res.on('end', () => resolve(got));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.deepEqual(events, ['data: 1', 'data: 2']);
    assert.equal(seenHeaders.host, 'mail.example.com');
    assert.equal(seenHeaders['x-forwarded-proto'], 'https');
    assert.equal(seenHeaders['x-real-ip'], '127.0.0.1');
    assert.equal(seenHeaders['x-forwarded-for'], '127.0.0.1');
  });
});

/** `[Section]` → key → values (a key may repeat), as systemd reads a unit file. */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const sections: Record<string, Record<string, string[]>> = {};
  let current: Record<string, string[]> | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = sections[section[1]!] = {};
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `not a unit file line: ${line}`);
    (current[line.slice(0, eq)] ??= []).push(line.slice(eq + 1));
  }
  return sections;
}

describe('deploy/systemd/mailtrail.service', () => {
  const text = readFileSync(deploy('systemd', 'mailtrail.service'), 'utf8');

  test('runs src/main.ts unprivileged, hardened, with port 25 allowed and a graceful stop', () => {
    const unit = parseUnit(text);
    const service = unit.Service!;
    const one = (key: string): string => {
      assert.equal(service[key]?.length, 1, `${key} is set once`);
      return service[key]![0]!;
    };
    assert.notEqual(one('User'), 'root');
    assert.match(one('ExecStart'), /^\/usr\/bin\/node --import tsx src\/main\.ts$/);
    assert.equal(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts.start, 'node --import tsx src/main.ts', 'the same command as npm start');
    assert.match(one('EnvironmentFile'), /^\/etc\/mailtrail\/mailtrail\.env$/);
    for (const [key, value] of Object.entries({
      NoNewPrivileges: 'true',
      ProtectSystem: 'strict',
      PrivateTmp: 'true',
      ProtectHome: 'true',
      CapabilityBoundingSet: 'CAP_NET_BIND_SERVICE',
      AmbientCapabilities: 'CAP_NET_BIND_SERVICE',
      Restart: 'on-failure',
      KillSignal: 'SIGTERM',
    })) {
      assert.equal(one(key), value, key);
    }
    const dataDir = service.Environment!.map((e) => /^DATA_DIR=(.+)$/.exec(e)?.[1]).find(Boolean);
    assert.equal(dataDir, '/var/lib/mailtrail');
    assert.ok(one('ReadWritePaths').split(/\s+/).includes(dataDir!), 'the data folder is writable');
    assert.ok(Number(one('TimeoutStopSec')) * 1000 > gracefulStopMs, 'systemd waits longer than a graceful stop takes');
    assert.deepEqual(unit.Install, { WantedBy: ['multi-user.target'] });
  });

  test('systemd-analyze verify finds nothing to complain about', (t) => {
    const analyze = findBinary('systemd-analyze');
    if (!analyze) return t.skip('systemd-analyze is not installed (Debian: systemd); the key checks above still ran');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-unit-'));
    try {
      // verify checks that ExecStart's binary exists: use this machine's node if it is not in /usr/bin.
      const unit = existsSync('/usr/bin/node') ? text : text.replace('/usr/bin/node', process.execPath);
      writeFileSync(path.join(dir, 'mailtrail.service'), unit);
      const r = spawnSync(analyze, ['verify', path.join(dir, 'mailtrail.service')], { encoding: 'utf8' });
      // It exits 0 even for unknown keys and bad values, which it only prints: any output is a finding.
      assert.equal(r.status, 0, r.stderr);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no warnings');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/pm2/ecosystem.config.cjs', () => {
  test('one mailtrail process from the checkout, with time for a graceful stop', () => {
    const config = createRequire(import.meta.url)(deploy('pm2', 'ecosystem.config.cjs')) as { apps: Record<string, unknown>[] };
    assert.equal(config.apps.length, 1);
    const app = config.apps[0]!;
    assert.equal(path.resolve(String(app.cwd)), path.resolve(ROOT));
    assert.equal(app.script, 'src/main.ts');
    assert.equal(app.interpreter_args, '--import tsx');
    assert.equal(app.instances, 1);
    assert.ok(Number(app.kill_timeout) > gracefulStopMs);
  });
});

/** docker-compose.yml as JSON, through a YAML parser of this machine; null if there is none. */
function parseYaml(file: string): unknown {
  for (const python of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(python, ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))', file], { encoding: 'utf8' });
    if (r.status === 0) return JSON.parse(r.stdout);
  }
  return null;
}

describe('deploy/docker-compose.yml and deploy/Dockerfile', () => {
  type Service = {
    build?: { context: string; dockerfile: string };
    command?: string[];
    environment?: Record<string, string>;
    env_file?: { path: string; required?: boolean }[];
    depends_on?: Record<string, { condition: string }>;
    healthcheck?: { test: string[] };
    ports?: string[];
    volumes?: string[];
    stop_grace_period?: string;
  };

  test('parses as YAML: MongoDB as an initialised one-member replica set, mailtrail on it, files present', (t) => {
    const compose = parseYaml(deploy('docker-compose.yml')) as { services: Record<string, Service>; volumes: Record<string, unknown> } | null;
    if (compose === null) return t.skip('no YAML parser on this machine (Debian: python3-yaml)');
    const { mongo, mailtrail } = compose.services;
    assert.ok(mongo && mailtrail);

    // The replica set: started with --replSet, initiated by the health check under the service's name.
    const replSet = mongo.command![mongo.command!.indexOf('--replSet') + 1];
    assert.equal(replSet, 'rs0');
    const healthcheck = mongo.healthcheck!.test.join(' ');
    assert.match(healthcheck, /rs\.initiate\(\{ _id: 'rs0', members: \[\{ _id: 0, host: 'mongo:27017' \}\] \}\)/);
    assert.match(healthcheck, /isWritablePrimary\) quit\(1\)/, 'healthy only once it is the primary');
    const uri = new URL(mailtrail.environment!.MONGODB_URI!);
    assert.equal(uri.host, 'mongo:27017');
    assert.equal(uri.searchParams.get('replicaSet'), 'rs0');
    assert.deepEqual(mailtrail.depends_on, { mongo: { condition: 'service_healthy' } });
    assert.ok(mailtrail.healthcheck!.test.join(' ').includes('/health'));

    // Ports lead to the ports the container's settings open.
    const containerPorts = mailtrail.ports!.map((p) => p.split(':').at(-1));
    assert.ok(containerPorts.includes(mailtrail.environment!.SMTP_PORT), 'SMTP published');
    assert.ok(containerPorts.includes(mailtrail.environment!.PORT), 'HTTP published');
    assert.ok(parseInt(mailtrail.stop_grace_period!, 10) * 1000 > gracefulStopMs, 'docker waits longer than a graceful stop takes');

    // Every referenced file exists; every named volume is declared.
    const context = path.resolve(deploy(), mailtrail.build!.context);
    assert.equal(context, path.resolve(ROOT));
    assert.ok(existsSync(path.join(context, mailtrail.build!.dockerfile)));
    for (const service of [mongo, mailtrail]) {
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('.') || source.startsWith('/')) assert.ok(existsSync(path.resolve(deploy(), source)), `bind mount ${source} exists`);
        else assert.ok(source in compose.volumes, `volume ${source} is declared`);
      }
    }
    for (const envFile of mailtrail.env_file ?? []) {
      assert.ok(envFile.required === false || existsSync(deploy(envFile.path)), `${envFile.path} exists or is optional`);
    }
  });

  test('the Dockerfile copies files that exist and runs what npm start runs', () => {
    const dockerfile = readFileSync(deploy('Dockerfile'), 'utf8');
    const copies = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    assert.ok(copies.length >= 5);
    for (const source of copies) assert.ok(existsSync(path.join(ROOT, source)), `COPY ${source}: exists in the build context`);
    assert.match(dockerfile, /^CMD \["node", "--import", "tsx", "src\/main\.ts"\]$/m);
    assert.match(dockerfile, /^HEALTHCHECK .*\n? *CMD .*\/health/m);
    assert.match(dockerfile, /^USER node$/m, 'not root');
  });
});

describe('deploy/iptables.sh', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailtrail-iptables-'));
  const state = path.join(dir, 'state');
  after(() => rmSync(dir, { recursive: true, force: true }));

  before(() => {
    mkdirSync(state);
    // Stand-ins that keep each table's rules in a file: -C checks, -I inserts, -D deletes.
    const fake = `#!/usr/bin/env bash
file="$FAKE_STATE/$(basename "$0")"; touch "$file"
[[ $1 == -t ]] && shift 2
op=$1; shift; rule="$*"
case $op in
  -C) grep -Fxq -- "$rule" "$file" ;;
  -I|-A) echo "$rule" >> "$file" ;;
  -D) grep -Fxv -- "$rule" "$file" > "$file.new" || true; mv "$file.new" "$file" ;;
  -L) exit 0 ;;
  *) echo "fake iptables: unexpected $op" >&2; exit 2 ;;
esac
`;
    for (const name of ['iptables', 'ip6tables']) writeFileSync(path.join(dir, name), fake, { mode: 0o755 });
    writeFileSync(path.join(dir, 'netfilter-persistent'), `#!/usr/bin/env bash\necho "$*" >> "$FAKE_STATE/persisted"\n`, { mode: 0o755 });
  });

  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync('bash', [deploy('iptables.sh'), ...args], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, FAKE_STATE: state, ...env } });
  const rules = (table: string): string[] => readFileSync(path.join(state, table), 'utf8').split('\n').filter(Boolean);

  test('adds the redirect once however often it runs, for IPv4 and IPv6, and persists it', () => {
    for (let i = 0; i < 2; i++) assert.equal(run([], { SMTP_PORT: '2525' }).status, 0);
    const expected = ['OUTPUT -o lo -p tcp --dport 25 -j REDIRECT --to-ports 2525', 'PREROUTING -p tcp --dport 25 -j REDIRECT --to-ports 2525'];
    assert.deepEqual(rules('iptables').sort(), expected);
    assert.deepEqual(rules('ip6tables').sort(), expected);
    assert.deepEqual(readFileSync(path.join(state, 'persisted'), 'utf8').split('\n').filter(Boolean), ['save', 'save']);
    assert.match(run([], { SMTP_PORT: '2525' }).stdout, /iptables: already present: PREROUTING/);
  });

  test('--remove takes the rules away; a bad port is refused', () => {
    assert.equal(run(['--remove'], { SMTP_PORT: '2525' }).status, 0);
    assert.deepEqual(rules('iptables'), []);
    assert.deepEqual(rules('ip6tables'), []);
    const bad = run([], { SMTP_PORT: '25x' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /SMTP_PORT must be a port number such as 2525/);
  });

  test('the shell scripts parse', () => {
    for (const script of ['iptables.sh', 'certbot-deploy-hook.sh']) {
      const r = spawnSync('bash', ['-n', deploy(script)], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${script}: ${r.stderr}`);
    }
  });
});
