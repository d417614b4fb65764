/**
 * HTML mail, made safe to show. Three layers, each enough against what the ones before miss:
 *  1. DOMPurify (HTML profile only: no SVG/MathML) drops scripts, event handlers, forms, frames,
 *     <meta>, <base>, <link>; hooks below rewrite links to open in a new tab without opener or
 *     referrer, and take out remote (and same-origin relative) images and CSS url()s unless the
 *     reader allowed remote content for this message.
 *  2. The document gets its own CSP: `default-src 'none'`, images from data: only (plus http/https
 *     once allowed), fonts from data:, inline styles only; nothing else loads, whatever the CSS.
 *     Images the mail carries itself (`cid:` references to its parts) come in as data: URLs.
 *  3. It is shown in an iframe sandboxed without allow-scripts, allow-same-origin or allow-forms
 *     (see MailBody): nothing runs, nothing submits, and the frame's origin is opaque, so it can
 *     read neither the app's storage (the session token) nor its DOM.
 */
import DOMPurify from 'dompurify';

export interface MailDocument {
  /** The complete document for the iframe's srcdoc. */
  srcdoc: string;
  /** Remote images and CSS url()s taken out (0 when remote content is allowed). */
  blocked: number;
  /**
   * A guess at the height the content needs, in CSS pixels. The frame runs no script and is
   * cross-origin to the app, so neither side can measure it; the reader can resize the frame.
   */
  height: number;
}

function estimateHeight(body: string): number {
  const blocks = (body.match(/<(?:p|div|br|tr|li|h[1-6]|blockquote|pre|hr)\b/gi) ?? []).length;
  const text = body.replace(/<style[\s\S]*?<\/style>/gi, '').replace(/<[^>]*>/g, '').replace(/\s+/g, ' ').length;
  const images = (body.match(/<img\b/gi) ?? []).length;
  return Math.round(Math.min(1400, Math.max(120, 48 + 24 * (blocks + Math.ceil(text / 90)) + 160 * images)));
}

const REMOTE_URL = /^\s*(?:https?:)?\/\//i;
const SAFE_LINK = /^\s*(?:https?:|mailto:)/i;
const DATA_IMAGE = /^\s*data:image\/(?:png|gif|jpe?g|webp|bmp|avif);/i;
/** url(...) in CSS, quoted or not. */
const CSS_URL = /url\(\s*(?:"([^"]*)"|'([^']*)'|([^)]*))\s*\)/gi;
const CSS_IMPORT = /@import\b[^;]*;?/gi;

const FORBID_TAGS = [
  'form', 'input', 'button', 'textarea', 'select', 'option', 'optgroup', 'datalist', 'output', 'fieldset', 'legend', 'label',
  'dialog', 'base', 'link', 'meta', 'iframe', 'frame', 'frameset', 'object', 'embed', 'applet', 'portal', 'template',
  'audio', 'video', 'source', 'track', 'picture', 'noscript', 'script', 'slot',
];
const FORBID_ATTR = ['action', 'formaction', 'srcset', 'ping', 'poster', 'usemap', 'autofocus', 'tabindex', 'accesskey', 'contenteditable', 'draggable', 'popover'];

/** The CSP of the mail document. */
export function mailCsp(allowRemote: boolean): string {
  return [
    "default-src 'none'",
    `img-src data:${allowRemote ? ' https: http:' : ''}`,
    "style-src 'unsafe-inline'",
    'font-src data:',
    "form-action 'none'",
    "base-uri 'none'",
  ].join('; ');
}

/** Rewrites url()s in CSS text: remote ones stay only when allowed; relative ones (our origin) never. */
function cleanCss(css: string, allowRemote: boolean, count: () => void): string {
  return css.replace(CSS_IMPORT, () => {
    count();
    return '';
  }).replace(CSS_URL, (whole, dq?: string, sq?: string, bare?: string) => {
    const url = (dq ?? sq ?? bare ?? '').trim();
    if (DATA_IMAGE.test(url)) return whole;
    if (allowRemote && REMOTE_URL.test(url)) return whole;
    count();
    return 'none';
  });
}

/** A content id as a `cid:` URL gives it or a Content-ID header does, in one form for lookups (RFC 2392). */
export function cidKey(ref: string): string {
  const id = ref.trim().replace(/^cid:/i, '').replace(/^<(.*)>$/, '$1');
  try {
    return decodeURIComponent(id).toLowerCase();
  } catch {
    return id.toLowerCase();
  }
}

const escapeAttr = (s: string): string => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/**
 * Sanitises a mail's HTML and wraps it in a document with its own CSP. `inline`: data: URLs of the
 * mail's own images by cidKey; a `cid:` image without one is dropped.
 */
export function mailDocument(html: string, opts: { allowRemote: boolean; inline?: ReadonlyMap<string, string> }): MailDocument {
  const purify = DOMPurify(window);
  let blocked = 0;
  const count = (): void => {
    blocked++;
  };

  purify.addHook('uponSanitizeElement', (node, data) => {
    if (data.tagName === 'style' && node.textContent) node.textContent = cleanCss(node.textContent, opts.allowRemote, count);
  });

  purify.addHook('afterSanitizeAttributes', (node) => {
    if (!(node instanceof Element)) return;
    if (node.tagName === 'A' || node.tagName === 'AREA') {
      const href = node.getAttribute('href');
      if (href !== null && !SAFE_LINK.test(href)) node.removeAttribute('href');
      if (node.hasAttribute('href')) {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer');
        node.setAttribute('referrerpolicy', 'no-referrer');
      }
    }
    for (const attr of ['src', 'background', 'lowsrc', 'dynsrc']) {
      const value = node.getAttribute(attr);
      if (value === null) continue;
      if (DATA_IMAGE.test(value) && node.tagName === 'IMG') continue;
      if (opts.allowRemote && REMOTE_URL.test(value)) continue;
      const part = node.tagName === 'IMG' && attr === 'src' && /^\s*cid:/i.test(value) ? opts.inline?.get(cidKey(value)) : undefined;
      if (part && DATA_IMAGE.test(part)) {
        node.setAttribute('src', part);
        continue;
      }
      node.removeAttribute(attr);
      // A relative src would load from the app's origin. Neither it nor a cid: counts as remote.
      if (REMOTE_URL.test(value)) {
        count();
        if (node.tagName === 'IMG' && !node.getAttribute('alt')) node.setAttribute('alt', '[remote image]');
      }
    }
    if (node.tagName === 'IMG') {
      node.setAttribute('referrerpolicy', 'no-referrer');
      node.setAttribute('loading', 'lazy');
    }
    const style = node.getAttribute('style');
    if (style !== null) node.setAttribute('style', cleanCss(style, opts.allowRemote, count));
  });

  const body = purify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS,
    FORBID_ATTR,
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: true,
    FORCE_BODY: true,
    WHOLE_DOCUMENT: false,
    SANITIZE_DOM: true,
    ADD_ATTR: ['target'],
  });

  const srcdoc = [
    '<!doctype html><html><head><meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="${escapeAttr(mailCsp(opts.allowRemote))}">`,
    '<meta name="referrer" content="no-referrer">',
    '<style>html{color-scheme:light}body{margin:0;padding:12px;font:15px/1.5 system-ui,sans-serif;color:#111;background:#fff;overflow-wrap:anywhere}img{max-width:100%;height:auto}table{max-width:100%}pre{white-space:pre-wrap}</style>',
    '</head><body>',
    body,
    '</body></html>',
  ].join('');
  return { srcdoc, blocked, height: estimateHeight(body) };
}

/**
 * Plain text of HTML (quoting an HTML mail in a reply; the text part of a formatted message):
 * parsed inert, nothing loads or runs. List items get a bullet or their number, links their address,
 * quotes a "> " before each line.
 */
export function htmlToText(html: string): string {
  const doc = new DOMParser().parseFromString(html, 'text/html');
  doc.querySelectorAll('script, style, head, title').forEach((n) => n.remove());
  const blocks = new Set('P DIV TR LI H1 H2 H3 H4 H5 H6 BLOCKQUOTE PRE TABLE UL OL SECTION ARTICLE HEADER FOOTER'.split(' '));
  let out = '';
  // Preformatted text is kept aside as it is and put back after the whitespace is tidied, which
  // must not touch its blank lines or indentation.
  const kept: string[] = [];
  const tidy = (s: string): string =>
    s
      .replace(/[ \t]+\n/g, '\n')
      .replace(/\n{3,}/g, '\n\n')
      .trim()
      .replace(/\u0000(\d+)\u0000/g, (_, i: string) => kept[Number(i)]!.replace(/\n+$/, ''));
  const walk = (node: Node): void => {
    if (node.nodeType === Node.TEXT_NODE) {
      out += (node.textContent ?? '').replace(/\s+/g, ' ');
      return;
    }
    if (!(node instanceof Element)) return;
    if (node.tagName === 'BR') {
      out += '\n';
      return;
    }
    const block = blocks.has(node.tagName);
    if (block && !out.endsWith('\n')) out += '\n';
    if (node.tagName === 'PRE') {
      kept.push(node.textContent ?? '');
      out += `\u0000${kept.length - 1}\u0000\n`;
      return;
    }
    if (node.tagName === 'BLOCKQUOTE') {
      // Quoted text, quoted the plain-text way: "> " before each line.
      const before = out;
      out = '';
      node.childNodes.forEach(walk);
      out = `${before}${tidy(out).split('\n').map((line) => (line ? `> ${line}` : '>')).join('\n')}\n`;
      return;
    }
    if (node.tagName === 'LI') out += node.parentElement?.tagName === 'OL' ? `${[...node.parentElement.children].indexOf(node) + 1}. ` : '- ';
    node.childNodes.forEach(walk);
    // A link keeps its address in the text, unless its text is the address.
    const href = node.tagName === 'A' ? node.getAttribute('href') : null;
    if (href && SAFE_LINK.test(href) && (node.textContent ?? '').trim() !== href.replace(/^mailto:/i, '')) out += ` <${href.replace(/^mailto:/i, '')}>`;
    if (block && !out.endsWith('\n')) out += '\n';
  };
  walk(doc.body);
  return tidy(out);
}

/** What the compose editor keeps of HTML: text formatting, lists, quotes and links; nothing that loads or runs. */
const EDITABLE_TAGS = ['b', 'strong', 'i', 'em', 'u', 's', 'a', 'p', 'br', 'div', 'span', 'ul', 'ol', 'li', 'blockquote', 'pre', 'code', 'h1', 'h2', 'h3'];

/**
 * HTML made fit for the compose editor (a draft's, or what is pasted or dropped into it), which
 * lives in the app's own page: DOMPurify with only the tags above and `href` (http, https and
 * mailto). No images, styles or classes: the message stays what the toolbar can make.
 */
export function editableHtml(html: string): string {
  const purify = DOMPurify(window);
  purify.addHook('afterSanitizeAttributes', (node) => {
    if (node instanceof Element && node.tagName === 'A') {
      const href = node.getAttribute('href');
      if (href !== null && !SAFE_LINK.test(href)) node.removeAttribute('href');
    }
  });
  const clean = purify.sanitize(html, { ALLOWED_TAGS: EDITABLE_TAGS, ALLOWED_ATTR: ['href'], ALLOW_DATA_ATTR: false, FORCE_BODY: true });
  // A link whose address was dropped is just its text (a template's content is inert).
  const t = document.createElement('template');
  t.innerHTML = clean;
  t.content.querySelectorAll('a:not([href])').forEach((a) => a.replaceWith(...a.childNodes));
  return t.innerHTML;
}

/** Plain text as editor HTML: escaped, one line per line. */
export function textToHtml(text: string): string {
  const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return text.split('\n').map((line) => `<div>${line ? escape(line) : '<br>'}</div>`).join('');
}
