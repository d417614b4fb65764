/**
 * The message intake on its own (no sockets): the simple-text fast path gives exactly what the
 * full mailparser parse gives; refusals and aborts leave no blob behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import type { BlobRef } from '../src/events/types.js';
import { isSimpleTextMessage } from '../src/mail/headers.js';
import { receiveMessage } from '../src/mail/intake.js';
import { DataGuard } from '../src/smtp/data-guard.js';
import type { BlobStore } from '../src/store/port.js';
import { HOSTILE_MESSAGES } from './support/smtp-corpus.js';

/** An in-memory blob store that records what was stored. */
function memoryBlobs(): BlobStore & { stored: Map<string, Buffer> } {
  const stored = new Map<string, Buffer>();
  return {
    stored,
    async put(data): Promise<BlobRef> {
      const chunks: Buffer[] = [];
      if (Buffer.isBuffer(data)) chunks.push(data);
      else for await (const c of data) chunks.push(c as Buffer);
      const b = Buffer.concat(chunks);
      const sha256 = createHash('sha256').update(b).digest('hex');
      stored.set(sha256, b);
      return { sha256, size: b.length };
    },
    async get(sha) {
      return stored.get(sha)!;
    },
    async has(sha) {
      return stored.has(sha);
    },
  };
}

/** Feeds the message in chunks of `chunk` bytes; returns summary, text and html as the store has them. */
async function intake(raw: Buffer, fast: boolean, chunk = 1000) {
  const blobs = memoryBlobs();
  const parts: Buffer[] = [];
  for (let i = 0; i < raw.length; i += chunk) parts.push(raw.subarray(i, i + chunk));
  const o = await receiveMessage(Readable.from(parts), { blobs, inspector: new DataGuard(1 << 26), simpleTextFastPath: fast });
  if (o.kind !== 'received') return { kind: o.kind };
  const stored = await o.message.commit();
  const text = stored.text ? blobs.stored.get(stored.text.sha256)!.toString() : null;
  const html = stored.html ? blobs.stored.get(stored.html.sha256)!.toString() : null;
  assert.ok(blobs.stored.get(stored.raw.sha256)!.equals(raw), 'the raw blob is the message as received');
  return { kind: o.kind, summary: o.message.summary, text, html, attachments: stored.attachments.map((a) => [a.filename, a.contentType, a.size]) };
}

const crlf = (s: string): Buffer => Buffer.from(s.replace(/\r?\n/g, '\r\n'), 'latin1');

const simple: [string, Buffer][] = [
  ['no MIME headers', crlf('From: A <a@example.org>\nTo: b@mail.test, "Group": c@x.example, d@x.example;\nSubject: =?utf-8?B?w6ljbGFpcg==?= plain\nDate: Sun, 23 Nov 2026 10:00:00 +0100\nMessage-ID: <s1@example.org>\n\nline one\nline two\n')],
  ['UTF-8 8bit body', Buffer.from('Subject: utf8\r\nContent-Type: text/plain; charset="UTF-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncafé ☕ 🎉\r\nend\r\n', 'utf8')],
  ['invalid UTF-8 bytes under us-ascii', Buffer.concat([crlf('Subject: bytes\nContent-Type: text/plain; charset=us-ascii\n\nab'), Buffer.from([0xff, 0xc3, 0x28, 0x0d, 0x0a])])],
  ['bare LF line endings', Buffer.from('Subject: lf\nContent-Type: text/plain\n\none\ntwo\n\nthree', 'latin1')],
  ['bare CR inside lines', crlf('Subject: cr\n\na\rb\nc\r')],
  ['empty body', crlf('Subject: empty\n\n')],
  ['blank body', crlf('Subject: blank\n\n\n')],
  ['no blank line at all (headers only)', crlf('Subject: only headers\nFrom: a@example.org')],
  // Under 1 MiB of bytes, but over mailparser's header limit (each line counts for at least 64 bytes).
  ['a header section over the parser\'s limit', crlf(`Subject: many lines\n${'To: a@b.example\n'.repeat(17_000)}\nbody\n`)],
  [
    'fields the summary does not read, around the ones it does',
    crlf(
      'Received: from mx.example.org (mx.example.org [203.0.113.5])\n\tby mail.test; Sun, 23 Nov 2026 10:00:00 +0100\nDKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s;\n h=from:to; bh=abc; b=def\nList-Id: <list.example.org>\nList-Unsubscribe: <mailto:u@example.org>\nFrom: =?utf-8?Q?Ren=C3=A9?= <r@example.org>\nX-Priority: 1\nTo: a@mail.test\nReferences: <r1@example.org>\n <r2@example.org>\nTo: b@mail.test\nIn-Reply-To: <r2@example.org>\nCc: c@mail.test\nBcc: d@mail.test\nReply-To: z@example.org\nMessage-ID: <m@example.org>\nSubject: =?utf-8?B?w6ljbGFpcg==?=\nDate: Sun, 23 Nov 2026 10:00:00 +0100\nMIME-Version: 1.0\n\nbody\n',
    ),
  ],
  ['folded header fields', crlf('Subject: folded\n subject\nTo: a@example.org,\n\tb@example.org\nContent-Type: text/plain;\n charset=utf-8\n\nbody\n')],
];

describe('simple text fast path', () => {
  for (const [name, raw] of simple) {
    test(`${name}: same summary, text and html as the full parse, whatever the chunking`, async () => {
      const full = await intake(raw, false);
      for (const chunk of [1, 7, 64, 100_000]) assert.deepEqual(await intake(raw, true, chunk), full, `chunks of ${chunk}`);
    });
  }

  test('a large simple body (past the in-memory limit) falls back to the full parse with the same result', async () => {
    const raw = crlf(`Subject: large\n\n${'0123456789abcdef'.repeat(80_000)}\n`);
    assert.deepEqual(await intake(raw, true, 65_536), await intake(raw, false, 65_536));
  });

  test('every message of the corpora gives the same result either way', async () => {
    const corpus = [...cpythonCorpus(), ...HOSTILE_MESSAGES.map((m) => Buffer.from(m.raw, 'latin1'))];
    let simpleCount = 0;
    for (const raw of corpus) {
      const end = raw.indexOf('\r\n\r\n');
      if (end >= 0 && isSimpleTextMessage(raw.subarray(0, end + 4))) simpleCount += 1;
      assert.deepEqual(await intake(raw, true), await intake(raw, false));
    }
    assert.ok(simpleCount > 0, 'the corpus has simple messages');
  });
});

describe('refusals leave nothing', () => {
  test('a refusal by the inspector mid-stream stores no blob, attachments included', async () => {
    const blobs = memoryBlobs();
    const raw = crlf(`Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=a.bin\n\n${'A'.repeat(5000)}\n--b\nContent-Type: text/plain\n\n${'z'.repeat(50_000)}\n--b--\n`);
    const parts: Buffer[] = [];
    for (let i = 0; i < raw.length; i += 512) parts.push(raw.subarray(i, i + 512));
    const o = await receiveMessage(Readable.from(parts), { blobs, inspector: new DataGuard(20_000) });
    assert.equal(o.kind, 'refused');
    await new Promise((r) => setImmediate(r));
    assert.equal(blobs.stored.size, 0);
  });

  test('abort() after receiving stores nothing; commit() stores raw, text and attachments', async () => {
    const raw = crlf('Subject: y\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b--\n');
    const blobs = memoryBlobs();
    const o = await receiveMessage(Readable.from([raw]), { blobs });
    assert.equal(o.kind, 'received');
    if (o.kind !== 'received') return;
    o.message.abort();
    await new Promise((r) => setImmediate(r));
    assert.equal(blobs.stored.size, 0);
    const again = memoryBlobs();
    const o2 = await receiveMessage(Readable.from([raw]), { blobs: again });
    assert.equal(o2.kind, 'received');
    if (o2.kind !== 'received') return;
    const stored = await o2.message.commit();
    assert.equal(again.stored.get(stored.attachments[0]!.sha256)!.toString(), '%PDF-1.4\n');
    assert.equal(again.stored.get(stored.text!.sha256)!.toString(), 'hello');
    assert.equal(again.stored.size, 3);
  });

  test('a source that breaks mid-message fails as "source" and stores nothing', async () => {
    const blobs = memoryBlobs();
    const source = new Readable({ read() {} });
    const done = receiveMessage(source, { blobs });
    source.push(crlf('Subject: z\n\npartial'));
    source.destroy(Object.assign(new Error('connection closed'), { code: 'ECONNECTION' }));
    const o = await done;
    assert.equal(o.kind === 'failed' && o.stage, 'source');
    assert.equal(blobs.stored.size, 0);
  });
});

function cpythonCorpus(): Buffer[] {
  const roots = ['/root/.pyenv/versions', '/usr/local/lib', '/usr/lib'];
  for (const base of roots) {
    if (!existsSync(base)) continue;
    for (const v of readdirSync(base)) {
      for (const dir of [path.join(base, v, 'lib', v.replace(/^(\d+\.\d+).*/, 'python$1'), 'test/test_email/data'), path.join(base, v, 'test/test_email/data')]) {
        if (!existsSync(dir)) continue;
        return readdirSync(dir)
          .filter((f) => f.startsWith('msg_'))
          .map((f) => Buffer.from(readFileSync(path.join(dir, f), 'latin1').replace(/\r?\n/g, '\r\n'), 'latin1'));
      }
    }
  }
  return [];
}
