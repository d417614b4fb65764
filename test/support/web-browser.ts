/**
 * Real Chromium for the web client's end-to-end tests: Debian's `chromium` driven by
 * playwright-core (Playwright's own browser download is not available here). Each launch gets a
 * fresh profile (Playwright makes a new temporary user-data-dir per launch).
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ROOT } from './process.js';

export const SCREENSHOTS = path.join(ROOT, 'docs', 'screenshots');

const CANDIDATES = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].filter((p): p is string => !!p);

export function chromiumPath(): string {
  const found = CANDIDATES.find((p) => existsSync(p));
  if (!found) throw new Error(`no Chromium found (tried ${CANDIDATES.join(', ')}): apt-get install -y chromium, or set CHROMIUM_PATH`);
  return found;
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
}

export interface Watched {
  page: Page;
  /** Uncaught page errors and console errors, for assertions and failure messages. */
  errors: string[];
  /** JavaScript dialogs (alert/confirm/prompt) that opened. */
  dialogs: string[];
  /** How the next confirm() dialogs are answered, first first (true: OK); when empty, OK. */
  confirmAnswers: boolean[];
}

/** A new page whose errors and dialogs are recorded (confirm() dialogs answered from confirmAnswers, else accepted; others dismissed). */
export async function watchedPage(context: BrowserContext): Promise<Watched> {
  const page = await context.newPage();
  const errors: string[] = [];
  const dialogs: string[] = [];
  const confirmAnswers: boolean[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  // The console's "Failed to load resource" does not say which: this line does, in the same words.
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`response: the server responded with a status of ${r.status()} (${r.statusText()}) to ${r.request().method()} ${r.url()}`);
  });
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    void (d.type() === 'confirm' && (confirmAnswers.shift() ?? true) ? d.accept() : d.dismiss());
  });
  return { page, errors, dialogs, confirmAnswers };
}

/** Saves a screenshot of the viewport into docs/screenshots (iframes are in it, unlike full-page shots). */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), animations: 'disabled', caret: 'hide' });
}
