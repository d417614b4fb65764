import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { MailParser, type HeaderLines, type Headers, type MessageText } from 'mailparser';
import type { Address, Attachment, BlobRef } from '../events/types.js';
import type { BlobStore } from '../store/port.js';
import { headerSectionEnd, isSimpleTextMessage, MAX_HEADER_SECTION, startsWithBody } from './headers.js';
import { headerBcc, summarize, type SummaryFields } from './summary.js';

/**
 * Takes a message in from a byte stream in one pass and in two phases:
 *
 * 1. receive: each chunk goes at once (with backpressure) to the stored copy (kept in memory up to
 *    1 MiB, streamed into the blob store past that), to mailparser (headers, text, html;
 *    attachments stream into their own blobs) and to any extra taps (e.g. mailauth). The message
 *    is never held whole in memory more than once. The caller then decides on it (policy,
 *    authentication results).
 * 2. commit or abort: commit finishes the blobs (the store makes each durable before it
 *    resolves); abort throws away what was written, so a refused message leaves no blob behind.
 */

/** Looks at every chunk as it passes; a non-null answer refuses the message (the rest is drained). */
export interface ChunkInspector<R> {
  feed(chunk: Buffer): R | null;
  end(): R | null;
}

export interface IntakeOptions<R> {
  blobs: BlobStore;
  inspector?: ChunkInspector<R>;
  /** Other consumers of the same bytes; ended with the message, destroyed if it is refused. */
  taps?: Writable[];
  /**
   * Rewrites the header section of the stored copy (the parser and taps see the bytes as received,
   * except for the blank line a message that starts with its body is given).
   */
  rewriteHeader?: (head: Buffer) => Buffer;
  /** More attachments than this: the message is refused as unparseable. */
  maxAttachments?: number;
  /**
   * Single-part plain-text messages (see isSimpleTextMessage) give mailparser only their header
   * section and have the body decoded directly: the same result without the per-byte MIME scan of
   * the body. Default on; off forces the full parse (tests compare the two).
   */
  simpleTextFastPath?: boolean;
}

export interface StoredBlobs {
  raw: BlobRef;
  text: BlobRef | null;
  html: BlobRef | null;
  attachments: Attachment[];
}

export interface ReceivedMessage {
  /** Bytes received (after SMTP dot-unstuffing). */
  bytes: number;
  /** sha256 of the bytes as received; with a header rewrite the stored raw blob has another one. */
  receivedSha256: string | null;
  summary: SummaryFields;
  headers: Headers;
  /** Addresses of a Bcc header field, if the message had one. */
  headerBcc: Address[];
  /** Makes the raw message, text, html and attachments durable; resolves when all are. */
  commit(): Promise<StoredBlobs>;
  /** Throws away everything written for this message. */
  abort(): void;
}

export type IntakeOutcome<R> =
  | { kind: 'received'; message: ReceivedMessage }
  | { kind: 'refused'; reason: R; bytes: number }
  /** `source`: the sender went away mid-message; `parse`: unparseable MIME; `store`: the blob store failed. */
  | { kind: 'failed'; stage: 'source' | 'parse' | 'store'; error: Error; bytes: number };

export class UnparseableMessageError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'UnparseableMessageError';
  }
}

const CRLF = Buffer.from('\r\n');

/**
 * Where the header section is rewritten, the stored copy and the parser get the blank line that a
 * message starting with its body lacks, so that its first lines are not read as header fields
 * (taps, such as DKIM, see the bytes as received).
 */
const withBlankLineIfBodyFirst = (start: Buffer): Buffer => (startsWithBody(start) ? Buffer.concat([CRLF, start]) : start);

const ABORTED = (): Error => Object.assign(new Error('message not accepted'), { code: 'EABORTED' });

/** Waits until a sink can take more, or is gone. */
function writeTo(sink: Writable, chunk: Buffer): Promise<void> | null {
  if (sink.destroyed || sink.writableEnded) return null;
  if (sink.write(chunk)) return null;
  return new Promise((resolve) => {
    const done = (): void => {
      sink.off('drain', done);
      sink.off('close', done);
      sink.off('error', done);
      resolve();
    };
    sink.on('drain', done);
    sink.on('close', done);
    sink.on('error', done);
  });
}

interface PendingAttachment {
  meta: Omit<Attachment, 'sha256' | 'size'>;
  gate: PassThrough;
  put: Promise<BlobRef>;
}

interface Parsing {
  sink: Writable;
  done: Promise<{ headers: Headers; lines: HeaderLines | false; text: MessageText | null }>;
  attachments: PendingAttachment[];
  abort(err: Error): void;
}

function startParser(blobs: BlobStore, maxAttachments: number): Parsing {
  const parser = new MailParser({
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipImageLinks: true,
    skipTextLinks: true,
    checksumAlgo: false,
  });
  let headers: Headers = new Map();
  let lines: HeaderLines | false = false;
  let text: MessageText | null = null;
  const attachments: PendingAttachment[] = [];
  const contents: Readable[] = [];
  parser.on('headers', (h: Headers) => (headers = h));
  parser.on('headerLines', (l: HeaderLines) => (lines = l));
  parser.on('data', (d) => {
    if (d.type === 'text') {
      text = d;
      return;
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      d.release?.();
    };
    if (attachments.length >= maxAttachments) {
      parser.destroy(new UnparseableMessageError(`more than ${maxAttachments} attachments`));
      d.content.resume();
      release();
      return;
    }
    // The blob is written while the attachment streams, but only finished (fsync'd, renamed into
    // place) when the whole message is committed: the gate's end is held back until then.
    const gate = new PassThrough();
    const put = blobs.put(gate);
    put.catch(() => undefined);
    d.content.pipe(gate, { end: false });
    d.content.once('end', release);
    d.content.once('error', (err: Error) => {
      gate.destroy(err);
      release();
    });
    contents.push(d.content);
    attachments.push({
      meta: {
        id: `att${attachments.length + 1}`,
        filename: d.filename ?? null,
        contentType: d.contentType,
        contentId: d.contentId ?? null,
      },
      gate,
      put,
    });
  });
  const done = new Promise<{ headers: Headers; lines: HeaderLines | false; text: MessageText | null }>((resolve, reject) => {
    parser.once('end', () => resolve({ headers, lines, text }));
    parser.once('error', reject);
    parser.once('close', () => reject(new UnparseableMessageError('parser closed before the end of the message')));
  });
  done.catch(() => undefined);
  return {
    sink: parser,
    done,
    attachments,
    abort(err) {
      parser.destroy(err);
      for (const c of contents) c.destroy(err);
      for (const a of attachments) a.gate.destroy(err);
    },
  };
}

/** Raw messages up to this size are kept in memory and stored with one `put(Buffer)`. */
const RAW_IN_MEMORY = 1024 * 1024;

/**
 * The stored copy of the message. Small messages are collected and handed to the blob store as
 * one buffer at commit (the cheapest path); past RAW_IN_MEMORY the bytes stream into the store,
 * which finishes the blob only when the stream ends, i.e. at commit.
 */
class RawCopy {
  private chunks: Buffer[] = [];
  private size = 0;
  private gate: PassThrough | null = null;
  private put: Promise<BlobRef> | null = null;

  constructor(
    private readonly blobs: BlobStore,
    private readonly onError: (err: Error) => void,
  ) {}

  write(part: Buffer): Promise<void> | null {
    if (part.length === 0) return null;
    if (this.gate) return writeTo(this.gate, part);
    this.chunks.push(part);
    this.size += part.length;
    if (this.size <= RAW_IN_MEMORY) return null;
    const gate = (this.gate = new PassThrough());
    gate.on('error', this.onError);
    this.put = this.blobs.put(gate);
    this.put.catch(() => undefined);
    const held = this.chunks;
    this.chunks = [];
    return writeTo(gate, Buffer.concat(held));
  }

  commit(): Promise<BlobRef> {
    if (!this.gate) {
      const whole = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [];
      return this.blobs.put(whole);
    }
    this.gate.end();
    return this.put!;
  }

  abort(err: Error): void {
    this.chunks = [];
    this.gate?.destroy(err);
  }
}

/** Bodies of simple messages kept for direct decoding up to this size; larger ones go to mailparser. */
const SIMPLE_BODY_LIMIT = 1024 * 1024;

/**
 * What mailparser is given: first the header section is held until it is complete; then either
 * everything (the full parse) or, for a simple text message, nothing more - the body is kept here
 * and decoded at the end as mailparser would (UTF-8, CRLF to LF).
 */
class ParserFeed {
  private state: 'head' | 'simple' | 'full';
  private held: Buffer = Buffer.alloc(0);
  private scanFrom = 0;
  private body: Buffer[] = [];
  private bodySize = 0;

  constructor(
    private readonly sink: Writable,
    fastPath: boolean,
  ) {
    this.state = fastPath ? 'head' : 'full';
  }

  write(chunk: Buffer): Promise<void> | null {
    if (this.state === 'full') return writeTo(this.sink, chunk);
    if (this.state === 'simple') {
      this.body.push(chunk);
      this.bodySize += chunk.length;
      return this.bodySize > SIMPLE_BODY_LIMIT ? this.goFull(Buffer.concat(this.body)) : null;
    }
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const end = headerSectionEnd(buf, this.scanFrom);
    if (end >= 0 && isSimpleTextMessage(buf.subarray(0, end))) {
      this.state = 'simple';
      this.held = Buffer.alloc(0);
      const rest = buf.subarray(end);
      if (rest.length) {
        this.body.push(rest);
        this.bodySize = rest.length;
      }
      return writeTo(this.sink, buf.subarray(0, end));
    }
    if (end >= 0 || buf.length > MAX_HEADER_SECTION) return this.goFull(buf);
    this.held = buf;
    this.scanFrom = Math.max(0, buf.length - 3);
    return null;
  }

  private goFull(pending: Buffer): Promise<void> | null {
    this.state = 'full';
    this.held = Buffer.alloc(0);
    this.body = [];
    return writeTo(this.sink, pending);
  }

  /**
   * Ends mailparser's input. For a simple message: its text as UTF-8 bytes with CRLF turned into
   * LF (what mailparser's text would be, re-encoded), and the start of that text for the snippet.
   */
  end(): { bytes: Buffer; start: string } | null {
    if (this.state === 'head' && this.held.length) void writeTo(this.sink, this.held);
    this.sink.end();
    if (this.state !== 'simple') return null;
    const body = this.body.length === 1 ? this.body[0]! : Buffer.concat(this.body);
    this.body = [];
    if (isUtf8(body)) {
      const bytes = crlfToLf(body);
      return { bytes, start: bytes.subarray(0, SNIPPET_SOURCE_BYTES).toString('utf8') };
    }
    // Invalid UTF-8 decodes to U+FFFD, as mailparser does; then the same line-ending rule.
    const text = body.toString('utf8').replace(/\r?\n/g, '\n');
    return { bytes: Buffer.from(text, 'utf8'), start: text.slice(0, SNIPPET_SOURCE_BYTES) };
  }
}

/** Enough of the text for any snippet (4 bytes per character at most). */
const SNIPPET_SOURCE_BYTES = 4096;

/** `buf` without the CR of each CRLF (bytes; ASCII CR/LF never occur inside a UTF-8 sequence). */
function crlfToLf(buf: Buffer): Buffer {
  let i = buf.indexOf(0x0a);
  while (i !== -1 && buf[i - 1] !== 0x0d) i = buf.indexOf(0x0a, i + 1);
  if (i === -1) return buf;
  const out = Buffer.allocUnsafe(buf.length);
  let o = 0;
  let from = 0;
  while (i !== -1) {
    if (buf[i - 1] === 0x0d) {
      out.set(buf.subarray(from, i - 1), o);
      o += i - 1 - from;
      from = i; // the LF starts the next run
    }
    i = buf.indexOf(0x0a, i + 1);
  }
  out.set(buf.subarray(from), o);
  o += buf.length - from;
  return out.subarray(0, o);
}

export async function receiveMessage<R>(source: Readable, opts: IntakeOptions<R>): Promise<IntakeOutcome<R>> {
  const sinkErrors: { stage: 'parse' | 'store'; error: Error }[] = [];
  const raw = new RawCopy(opts.blobs, (error) => sinkErrors.push({ stage: 'store', error }));
  const parsing = startParser(opts.blobs, opts.maxAttachments ?? 500);
  const feed = new ParserFeed(parsing.sink, opts.simpleTextFastPath ?? true);
  const taps = opts.taps ?? [];
  parsing.sink.on('error', (error: Error) => sinkErrors.push({ stage: 'parse', error }));

  const hash = opts.rewriteHeader ? createHash('sha256') : null;
  let held: Buffer | null = opts.rewriteHeader ? Buffer.alloc(0) : null;
  let scanFrom = 0;
  let bytes = 0;
  /**
   * With a header rewrite, the start of the message until its first line is complete: whether it
   * starts with its body is known then. Without one, the message is stored as received.
   */
  let start: Buffer | null = opts.rewriteHeader ? Buffer.alloc(0) : null;
  let refusal: R | null = null;
  let aborted = false;

  const abortAll = (): void => {
    if (aborted) return;
    aborted = true;
    const err = ABORTED();
    raw.abort(err);
    parsing.abort(err);
    for (const t of taps) t.destroy(err);
  };

  /** The raw branch, with the header section held back until it can be rewritten. */
  const rawChunks = (chunk: Buffer, final: boolean): Buffer[] => {
    if (held === null) return [chunk];
    const buf = held.length ? Buffer.concat([held, chunk]) : chunk;
    const end = headerSectionEnd(buf, scanFrom);
    if (end >= 0) {
      held = null;
      return [opts.rewriteHeader!(buf.subarray(0, end)), buf.subarray(end)];
    }
    if (final) {
      held = null;
      return [opts.rewriteHeader!(buf)];
    }
    if (buf.length > MAX_HEADER_SECTION) {
      held = null; // no header section within the limit: stored as received (mailparser refuses it anyway)
      return [buf];
    }
    held = buf;
    scanFrom = Math.max(0, buf.length - 3);
    return [];
  };

  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (refusal !== null || aborted) continue; // drain what is left so the session can go on
      const verdict = opts.inspector?.feed(chunk) ?? null;
      if (verdict !== null) {
        refusal = verdict;
        abortAll();
        continue;
      }
      if (sinkErrors.length) {
        abortAll();
        continue;
      }
      hash?.update(chunk);
      let content = chunk;
      if (start !== null) {
        start = start.length ? Buffer.concat([start, chunk]) : chunk;
        content = start.indexOf(0x0a) === -1 && start.length < 1000 ? Buffer.alloc(0) : withBlankLineIfBodyFirst(start);
        if (content.length) start = null;
      }
      const waits: Promise<void>[] = [];
      for (const part of content.length ? rawChunks(content, false) : []) {
        const w = raw.write(part);
        if (w) waits.push(w);
      }
      const fed = content.length ? feed.write(content) : null;
      if (fed) waits.push(fed);
      for (const sink of taps) {
        const w = writeTo(sink, chunk);
        if (w) waits.push(w);
      }
      if (waits.length) await Promise.all(waits);
    }
  } catch (error) {
    abortAll();
    return { kind: 'failed', stage: 'source', error: error instanceof Error ? error : new Error(String(error)), bytes };
  }

  if (refusal !== null) return { kind: 'refused', reason: refusal, bytes };
  const lateVerdict = opts.inspector?.end() ?? null;
  if (lateVerdict !== null) {
    abortAll();
    return { kind: 'refused', reason: lateVerdict, bytes };
  }
  if (sinkErrors.length || aborted) {
    abortAll();
    const first = sinkErrors[0] ?? { stage: 'store' as const, error: ABORTED() };
    return { kind: 'failed', stage: first.stage, error: first.error, bytes };
  }
  if (start?.length) {
    // A message of one line without a line ending.
    const content = withBlankLineIfBodyFirst(start);
    for (const part of rawChunks(content, false)) void raw.write(part);
    void feed.write(content);
  }
  if (held !== null) for (const part of rawChunks(Buffer.alloc(0), true)) void raw.write(part);
  const direct = feed.end();
  for (const t of taps) t.end();

  let parsed: Awaited<Parsing['done']>;
  try {
    parsed = await parsing.done;
  } catch (error) {
    abortAll();
    const stage = sinkErrors.find((e) => e.stage === 'store') ? 'store' : 'parse';
    return { kind: 'failed', stage, error: error instanceof Error ? error : new Error(String(error)), bytes };
  }
  const { text, html } = parsed.text ?? {};
  const textBytes = direct ? (direct.bytes.length ? direct.bytes : null) : text ? Buffer.from(text, 'utf8') : null;
  const summary = summarize(parsed.headers, parsed.lines, direct ? { text: direct.start || undefined } : { text, html });
  const receivedSha256 = hash ? hash.digest('hex') : null;

  return {
    kind: 'received',
    message: {
      bytes,
      receivedSha256,
      summary,
      headers: parsed.headers,
      headerBcc: headerBcc(parsed.headers),
      async commit() {
        if (aborted) throw ABORTED();
        const rawPut = raw.commit();
        for (const a of parsing.attachments) a.gate.end();
        const [rawRef, textRef, htmlRef, attachments] = await Promise.all([
          rawPut,
          textBytes ? opts.blobs.put(textBytes) : null,
          !direct && html !== undefined ? opts.blobs.put(Buffer.from(html, 'utf8')) : null,
          Promise.all(parsing.attachments.map(async (a) => ({ ...a.meta, ...(await a.put) }))),
        ]);
        return { raw: rawRef, text: textRef, html: htmlRef, attachments };
      },
      abort: abortAll,
    },
  };
}
