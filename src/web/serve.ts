/**
 * Serves the built web client (src/web/dist) at `/`, next to the API, with the security headers the
 * app relies on, and builds it when it is missing or older than its sources.
 *
 * Server-side code (node), not part of the browser bundle.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import type http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import type { RouteHandler } from '../api/http.js';

const gzip = promisify(gzipCb);

/** src/web: the app's sources, its Vite config and (built) dist. */
export const WEB_DIR = path.dirname(fileURLToPath(import.meta.url));
export const DIST_DIR = path.join(WEB_DIR, 'dist');

/**
 * The app's Content-Security-Policy. Scripts only from the app's own files (no inline script, no
 * eval). The mail viewer is an `srcdoc` iframe, which inherits this policy on top of its own
 * stricter one (see src/web/src/sanitize.ts); hence:
 * - `style-src 'unsafe-inline'`: HTML mail is styled with inline styles; without it every mail
 *   would render unstyled. No script can run, so inline CSS is the only thing this opens.
 * - `img-src http: https:`: only reachable once the reader allows a message's remote images;
 *   until then the mail's own CSP allows data: images only.
 * - `frame-src 'none'`: an srcdoc frame loads nothing by URL, so it needs no source; no page can be framed.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob: https: http:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "frame-src 'none'",
  "child-src 'none'",
  "worker-src 'none'",
  "manifest-src 'self'",
  "media-src 'none'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};
const COMPRESSIBLE = new Set(['.html', '.js', '.mjs', '.css', '.svg', '.json', '.webmanifest', '.txt']);

/** Paths the web client never answers, whatever order the routes are in. */
const NOT_OURS = /^\/(?:trpc|attachments|original)(?:\/|$)|^\/(?:health|ready|metrics)$/;

/** Hashed build output: its name changes when its content does. */
const IMMUTABLE = /^\/assets\/[^/]+-[A-Za-z0-9_-]{8,}\.[a-z0-9]+$/;

interface Cached {
  mtimeMs: number;
  size: number;
  body: Buffer;
  gz: Buffer | null;
  etag: string;
}

/**
 * The app at `/`: files from `distDir`; any other path without a file extension (a client route
 * such as /inbox or /mail/<id>) gets index.html. Hashed assets are cached for a year, index.html is
 * revalidated every time, and every answer carries the security headers.
 */
export function webRoutes(distDir: string = DIST_DIR): RouteHandler {
  const root = path.resolve(distDir);
  const cache = new Map<string, Cached>();

  const load = async (file: string): Promise<Cached | null> => {
    let st;
    try {
      st = await stat(file);
    } catch {
      return null;
    }
    if (!st.isFile()) return null;
    const hit = cache.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit;
    const body = await readFile(file);
    const ext = path.extname(file).toLowerCase();
    const entry: Cached = {
      mtimeMs: st.mtimeMs,
      size: st.size,
      body,
      gz: COMPRESSIBLE.has(ext) && body.length > 1024 ? await gzip(body, { level: 9 }) : null,
      etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
    };
    cache.set(file, entry);
    return entry;
  };

  const send = (req: http.IncomingMessage, res: http.ServerResponse, file: string, entry: Cached, cacheControl: string, status = 200): void => {
    const ext = path.extname(file).toLowerCase();
    const headers: Record<string, string | number> = {
      ...SECURITY_HEADERS,
      'content-type': TYPES[ext] ?? 'application/octet-stream',
      'cache-control': cacheControl,
      etag: entry.etag,
      vary: 'accept-encoding',
    };
    if (status === 200 && req.headers['if-none-match'] === entry.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const useGz = entry.gz !== null && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = useGz ? entry.gz! : entry.body;
    if (useGz) headers['content-encoding'] = 'gzip';
    headers['content-length'] = body.length;
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  const notFound = (res: http.ServerResponse, message = 'not found'): void => {
    res.writeHead(404, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(message);
  };

  return async (req, res, url) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    if (NOT_OURS.test(url.pathname)) return false;
    let decoded: string;
    try {
      decoded = decodeURIComponent(url.pathname);
    } catch {
      notFound(res);
      return true;
    }
    if (decoded.includes('\0') || decoded.includes('\\')) {
      notFound(res);
      return true;
    }
    const rel = path.posix.normalize(decoded);
    const index = path.join(root, 'index.html');
    if (rel === '/' || rel === '/index.html') {
      const entry = await load(index);
      if (!entry) return notFound(res, 'the web client is not built: run npm run build:web'), true;
      send(req, res, index, entry, 'no-cache');
      return true;
    }
    const file = path.join(root, rel);
    if (!file.startsWith(root + path.sep)) {
      notFound(res);
      return true;
    }
    const entry = await load(file);
    if (entry) {
      send(req, res, file, entry, IMMUTABLE.test(rel) ? 'public, max-age=31536000, immutable' : 'no-cache');
      return true;
    }
    // A missing file (an old asset, a typo) is a 404, never the app: a script tag must not get HTML.
    if (rel.startsWith('/assets/') || path.posix.extname(rel) !== '') {
      notFound(res);
      return true;
    }
    const app = await load(index);
    if (!app) return notFound(res, 'the web client is not built: run npm run build:web'), true;
    send(req, res, index, app, 'no-cache');
    return true;
  };
}

/** Newest modification time among the app's sources (not dist). */
async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === 'dist' || entry.name.startsWith('dist.') || entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, await newestSource(full));
    else if (entry.isFile()) newest = Math.max(newest, (await stat(full)).mtimeMs);
  }
  return newest;
}

function viteBin(): string {
  const require = createRequire(import.meta.url);
  const pkgFile = require.resolve('vite/package.json');
  const pkg = require(pkgFile) as { bin?: string | Record<string, string> };
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin?.vite;
  if (!bin) throw new Error('vite has no bin entry');
  return path.join(path.dirname(pkgFile), bin);
}

/** Runs `vite build` for the app into `outDir` in a child process. */
export function buildWeb(outDir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let bin: string;
    try {
      bin = viteBin();
    } catch (error) {
      reject(new Error(`cannot build the web client: vite is not installed (npm ci installs it): ${error instanceof Error ? error.message : String(error)}`));
      return;
    }
    const child = spawn(process.execPath, [bin, 'build', '--config', path.join(WEB_DIR, 'vite.config.ts'), '--outDir', outDir, '--emptyOutDir', '--logLevel', 'warn'], {
      cwd: WEB_DIR,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_ENV: 'production' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`vite build failed (exit ${code}):\n${out.slice(-4000)}`))));
  });
}

export interface EnsureWebBuildOptions {
  distDir?: string;
  /** Build even when dist looks current. */
  force?: boolean;
  /** Told when a build starts, ends or fails. */
  log?: (message: string, details?: Record<string, unknown>) => void;
}

/**
 * Builds the web client when `dist` is missing (a fresh clone after `npm ci --ignore-scripts`, or
 * a deleted dist) or older than its sources (a `git pull` without `npm run build:web`). The build
 * goes to a temporary folder and is moved into place, so a crash or a concurrent start never
 * leaves a half-built dist. When a rebuild of an existing dist fails (a read-only install, say),
 * the old one keeps being served.
 */
export async function ensureWebBuild(opts: EnsureWebBuildOptions = {}): Promise<{ built: boolean; distDir: string }> {
  const distDir = path.resolve(opts.distDir ?? DIST_DIR);
  const index = path.join(distDir, 'index.html');
  const log = opts.log ?? (() => undefined);
  const present = existsSync(index);
  if (present && !opts.force) {
    const builtAt = (await stat(index)).mtimeMs;
    const newest = await newestSource(WEB_DIR).catch(() => 0);
    if (newest <= builtAt) return { built: false, distDir };
  }
  const started = Date.now();
  const tmp = `${distDir}.tmp-${process.pid}-${started}`;
  log(present ? 'rebuilding the web client: its sources changed' : 'building the web client (first start)', { distDir });
  try {
    await mkdir(path.dirname(distDir), { recursive: true });
    await buildWeb(tmp);
    if (!existsSync(path.join(tmp, 'index.html'))) throw new Error(`vite build wrote no index.html to ${tmp}`);
    const old = `${distDir}.old-${process.pid}-${started}`;
    if (existsSync(distDir)) await rename(distDir, old).catch(() => undefined);
    try {
      await rename(tmp, distDir);
    } catch (error) {
      // Another process put its build in place first: use that one.
      if (!existsSync(index)) throw error;
    }
    await rm(old, { recursive: true, force: true });
    log('web client built', { distDir, ms: Date.now() - started });
    return { built: true, distDir };
  } catch (error) {
    if (present) {
      log('could not rebuild the web client; serving the previous build', { error: error instanceof Error ? error.message : String(error) });
      return { built: false, distDir };
    }
    throw error;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
