import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { Headers as MailsplitHeaders } from '@zone-eu/mailsplit';
import { MailParser, type HeaderLines, type Headers, type MessageText } from 'mailparser';
import type { Address, Attachment, BlobRef } from '../events/types.js';
import type { BlobStore } from '../store/port.js';
import { headerSectionEnd, isSimpleTextMessage, MAX_HEADER_SECTION, startsWithBody } from './headers.js';
import { headerBcc, SUMMARY_FIELDS, summarize, type SummaryFields } from './summary.js';

/**
 * Takes a message in from a byte stream in one pass and in two phases:
 *
 * 1. receive: a message of up to 1 MiB (nearly all mail) is held in memory as it arrives and taken
 *    apart once it is complete: the stored copy, mailparser (headers, text, html; attachments into
 *    their own blobs) and any extra taps (e.g. mailauth) get it whole. Past 1 MiB each chunk goes
 *    at once (with backpressure) to the stored copy (streamed into the blob store), to mailparser
 *    and to the taps, and the message is never held whole. (A held message is copied a few times on
 *    its way into the store: at most a few MiB per message in flight.) The caller then decides on
 *    it (policy, authentication results).
 * 2. commit or abort: commit finishes the blobs (each stored as BlobStore.put promises: durable
 *    no later than the events appended after it); abort throws away what was written, so a
 *    refused message leaves no blob behind.
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
   * Single-part plain-text messages (see isSimpleTextMessage) held in memory have only their
   * header section read by mailparser and their body decoded directly: the same result without
   * the streams of a whole parse and the per-byte MIME scan of the body. Default on; off forces
   * the whole parse (tests compare the two).
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
  /** Addresses of a Bcc header field, if the message had one. */
  headerBcc: Address[];
  /** Stores the raw message, text, html and attachments (see BlobStore.put); resolves when all are. */
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

const PARSER_OPTIONS = {
  skipHtmlToText: true,
  skipTextToHtml: true,
  skipImageLinks: true,
  skipTextLinks: true,
  checksumAlgo: false,
} as const;

function startParser(blobs: BlobStore, maxAttachments: number): Parsing {
  const parser = new MailParser(PARSER_OPTIONS);
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

/**
 * mailparser's own reading of a header section (its `headers` and `headerLines`), without the
 * streams of a whole parse: mailsplit's Headers (the class mailparser's splitter uses) and the
 * parser's header processing, on one parser kept for it. Only the fields the summary reads are
 * decoded (mailparser decodes each field on its own, so theirs come out the same): a real
 * message's Received, DKIM and list fields cost most of the time otherwise. The simple-text tests
 * compare the result with mailparser's whole parse.
 */
const headerReader = new MailParser(PARSER_OPTIONS) as unknown as { processHeaders(lines: unknown): Headers };
function readHeaderSection(head: Buffer): { headers: Headers; lines: HeaderLines } {
  const section = new MailsplitHeaders(head);
  const list = section.getList().filter((line) => SUMMARY_FIELDS.has(line.key));
  return { headers: headerReader.processHeaders(list), lines: section.lines as HeaderLines };
}

/**
 * A header section as mailparser's splitter counts it against its 1 MiB limit: every line at
 * least 64 bytes (a parsed line costs more than its bytes), the blank line at its own length.
 * Past the limit the whole parse refuses the message, and so must the fast path.
 */
function headerCost(head: Buffer): number {
  let cost = 0;
  let from = 0;
  while (from < head.length) {
    const lf = head.indexOf(0x0a, from);
    const end = lf === -1 ? head.length : lf + 1;
    const blank = end - from <= 2 && (head[from] === 0x0a || (head[from] === 0x0d && head[from + 1] === 0x0a));
    cost += blank ? end - from : Math.max(end - from, 64);
    from = end;
  }
  return cost;
}

/** Messages up to this size are held in memory and taken apart once complete. */
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

/** Enough of the text for any snippet (4 bytes per character at most). */
const SNIPPET_SOURCE_BYTES = 4096;

/**
 * `buf` without the CR of each CRLF. Latin-1 maps bytes to characters one to one, so this is a
 * byte-exact rewrite of UTF-8 too (ASCII CR/LF never occur inside a UTF-8 sequence); one native
 * replaceAll is ~35 % faster than copying line by line.
 */
function crlfToLf(buf: Buffer): Buffer {
  const bytes = buf.toString('latin1');
  return bytes.includes('\r\n') ? Buffer.from(bytes.replaceAll('\r\n', '\n'), 'latin1') : buf;
}

/**
 * The text of a simple message (see isSimpleTextMessage) as mailparser would give it: UTF-8 with
 * CRLF turned into LF, as bytes, and its start for the snippet.
 */
function decodeSimpleBody(body: Buffer): { bytes: Buffer; start: string } {
  if (isUtf8(body)) {
    const bytes = crlfToLf(body);
    return { bytes, start: bytes.subarray(0, SNIPPET_SOURCE_BYTES).toString('utf8') };
  }
  // Invalid UTF-8 decodes to U+FFFD, as mailparser does; then the same line-ending rule.
  const text = body.toString('utf8').replace(/\r?\n/g, '\n');
  return { bytes: Buffer.from(text, 'utf8'), start: text.slice(0, SNIPPET_SOURCE_BYTES) };
}

/** What mailparser made of a message: its headers and either its text parts or a simple body decoded here. */
interface Parsed {
  headers: Headers;
  lines: HeaderLines | false;
  /** text and html of the whole parse (null: the simple body below). */
  text: MessageText | null;
  simple: { bytes: Buffer; start: string } | null;
  attachments: PendingAttachment[];
}

type Stage = 'parse' | 'store';

/** The end of both ways in: a received message ready to be committed or aborted. */
function received(opts: IntakeOptions<unknown>, input: { bytes: number; receivedSha256: string | null; raw: () => Promise<BlobRef>; parsed: Parsed; abort: () => void; aborted: () => boolean }): ReceivedMessage {
  const { parsed } = input;
  const { text, html } = parsed.text ?? {};
  const simple = parsed.simple;
  const textBytes = simple ? (simple.bytes.length ? simple.bytes : null) : text ? Buffer.from(text, 'utf8') : null;
  return {
    bytes: input.bytes,
    receivedSha256: input.receivedSha256,
    summary: summarize(parsed.headers, parsed.lines, simple ? { text: simple.start || undefined } : { text, html }),
    headerBcc: headerBcc(parsed.headers),
    async commit() {
      if (input.aborted()) throw ABORTED();
      const rawPut = input.raw();
      for (const a of parsed.attachments) a.gate.end();
      const [rawRef, textRef, htmlRef, attachments] = await Promise.all([
        rawPut,
        textBytes ? opts.blobs.put(textBytes) : null,
        !simple && html !== undefined ? opts.blobs.put(Buffer.from(html, 'utf8')) : null,
        Promise.all(parsed.attachments.map(async (a) => ({ ...a.meta, ...(await a.put) }))),
      ]);
      return { raw: rawRef, text: textRef, html: htmlRef, attachments };
    },
    abort: input.abort,
  };
}

/**
 * A whole message in memory: the stored copy is made, mailparser reads it (only its header section
 * when it is simple text, whose body is decoded here), the taps get it, all at once.
 */
async function receiveHeld<R>(message: Buffer, opts: IntakeOptions<R>, bytes: number, receivedSha256: string | null): Promise<IntakeOutcome<R>> {
  for (const tap of opts.taps ?? []) tap.end(message);
  // With a header rewrite, the stored copy and the parser get the blank line that a message
  // starting with its body lacks; without one, the message is stored as received.
  const content = opts.rewriteHeader ? withBlankLineIfBodyFirst(message) : message;
  const end = headerSectionEnd(content);
  const stored: Buffer[] = !opts.rewriteHeader
    ? [content]
    : end >= 0
      ? [opts.rewriteHeader(content.subarray(0, end)), content.subarray(end)]
      : content.length > MAX_HEADER_SECTION
        ? [content] // no header section within the limit: stored as received (mailparser refuses it anyway)
        : [opts.rewriteHeader(content)];
  let parsing: Parsing | null = null;
  let aborted = false;
  // Refused after all (a parse failure, DMARC, a submission's From): the taps stop too (mailauth's look-ups).
  const abort = (): void => {
    aborted = true;
    parsing?.abort(ABORTED());
    for (const tap of opts.taps ?? []) tap.destroy(ABORTED());
  };
  let parsed: Parsed;
  try {
    const head = end >= 0 ? content.subarray(0, end) : null;
    if ((opts.simpleTextFastPath ?? true) && head && headerCost(head) <= MAX_HEADER_SECTION && isSimpleTextMessage(head)) {
      parsed = { ...readHeaderSection(head), text: null, simple: decodeSimpleBody(content.subarray(end)), attachments: [] };
    } else {
      parsing = startParser(opts.blobs, opts.maxAttachments ?? 500);
      parsing.sink.on('error', () => undefined); // `done` rejects with it
      parsing.sink.end(content);
      const done = await parsing.done;
      parsed = { ...done, simple: null, attachments: parsing.attachments };
    }
  } catch (error) {
    abort();
    return { kind: 'failed', stage: 'parse', error: error instanceof Error ? error : new Error(String(error)), bytes };
  }
  const raw = (): Promise<BlobRef> => opts.blobs.put(stored.length === 1 ? stored[0]! : Buffer.concat(stored));
  return { kind: 'received', message: received(opts, { bytes, receivedSha256, raw, parsed, abort, aborted: () => aborted }) };
}

/**
 * A message past RAW_IN_MEMORY: from here on each chunk goes to the stored copy (streamed into
 * the blob store), to mailparser and to the taps as it arrives, with backpressure.
 */
class StreamingIntake<R> {
  readonly failures: { stage: Stage; error: Error }[] = [];
  private readonly raw: RawCopy;
  private readonly parsing: Parsing;
  private readonly taps: Writable[];
  /** With a header rewrite: the start of the message until its first line is complete (is its body first?). */
  private start: Buffer | null;
  /** With a header rewrite: the header section of the stored copy, held until it is complete. */
  private held: Buffer | null;
  private scanFrom = 0;
  private aborted = false;

  constructor(private readonly opts: IntakeOptions<R>) {
    this.raw = new RawCopy(opts.blobs, (error) => this.failures.push({ stage: 'store', error }));
    this.parsing = startParser(opts.blobs, opts.maxAttachments ?? 500);
    this.parsing.sink.on('error', (error: Error) => this.failures.push({ stage: 'parse', error }));
    this.taps = opts.taps ?? [];
    this.start = opts.rewriteHeader ? Buffer.alloc(0) : null;
    this.held = opts.rewriteHeader ? Buffer.alloc(0) : null;
  }

  /** The raw branch, with the header section held back until it can be rewritten. */
  private rawChunks(chunk: Buffer, final: boolean): Buffer[] {
    if (this.held === null) return [chunk];
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const end = headerSectionEnd(buf, this.scanFrom);
    if (end >= 0) {
      this.held = null;
      return [this.opts.rewriteHeader!(buf.subarray(0, end)), buf.subarray(end)];
    }
    if (final) {
      this.held = null;
      return [this.opts.rewriteHeader!(buf)];
    }
    if (buf.length > MAX_HEADER_SECTION) {
      this.held = null; // no header section within the limit: stored as received (mailparser refuses it anyway)
      return [buf];
    }
    this.held = buf;
    this.scanFrom = Math.max(0, buf.length - 3);
    return [];
  }

  async write(chunk: Buffer): Promise<void> {
    let content = chunk;
    if (this.start !== null) {
      this.start = this.start.length ? Buffer.concat([this.start, chunk]) : chunk;
      content = this.start.indexOf(0x0a) === -1 && this.start.length < 1000 ? Buffer.alloc(0) : withBlankLineIfBodyFirst(this.start);
      if (content.length) this.start = null;
    }
    const waits: Promise<void>[] = [];
    if (content.length) {
      for (const part of this.rawChunks(content, false)) {
        const w = this.raw.write(part);
        if (w) waits.push(w);
      }
      const fed = writeTo(this.parsing.sink, content);
      if (fed) waits.push(fed);
    }
    for (const sink of this.taps) {
      const w = writeTo(sink, chunk);
      if (w) waits.push(w);
    }
    if (waits.length) await Promise.all(waits);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const err = ABORTED();
    this.raw.abort(err);
    this.parsing.abort(err);
    for (const t of this.taps) t.destroy(err);
  }

  async finish(bytes: number, receivedSha256: string | null): Promise<IntakeOutcome<R>> {
    if (this.start?.length) {
      // A message of one line without a line ending.
      const content = withBlankLineIfBodyFirst(this.start);
      for (const part of this.rawChunks(content, false)) void this.raw.write(part);
      void writeTo(this.parsing.sink, content);
    }
    if (this.held !== null) for (const part of this.rawChunks(Buffer.alloc(0), true)) void this.raw.write(part);
    this.parsing.sink.end();
    for (const t of this.taps) t.end();
    let done: Awaited<Parsing['done']>;
    try {
      done = await this.parsing.done;
    } catch (error) {
      this.abort();
      const stage = this.failures.find((e) => e.stage === 'store') ? 'store' : 'parse';
      return { kind: 'failed', stage, error: error instanceof Error ? error : new Error(String(error)), bytes };
    }
    const parsed: Parsed = { ...done, simple: null, attachments: this.parsing.attachments };
    const message = received(this.opts, { bytes, receivedSha256, raw: () => this.raw.commit(), parsed, abort: () => this.abort(), aborted: () => this.aborted });
    return { kind: 'received', message };
  }
}

export async function receiveMessage<R>(source: Readable, opts: IntakeOptions<R>): Promise<IntakeOutcome<R>> {
  const hash = opts.rewriteHeader ? createHash('sha256') : null;
  let held: Buffer[] = [];
  let heldBytes = 0;
  let streaming: StreamingIntake<R> | null = null;
  let bytes = 0;
  let refusal: R | null = null;
  const refuse = (): void => {
    held = [];
    streaming?.abort();
    for (const t of opts.taps ?? []) t.destroy(ABORTED());
  };

  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (refusal !== null) continue; // drain what is left so the session can go on
      const verdict = opts.inspector?.feed(chunk) ?? null;
      if (verdict !== null) {
        refusal = verdict;
        refuse();
        continue;
      }
      hash?.update(chunk);
      if (streaming) {
        if (streaming.failures.length) continue;
        await streaming.write(chunk);
        continue;
      }
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes <= RAW_IN_MEMORY) continue;
      streaming = new StreamingIntake(opts);
      const first = Buffer.concat(held);
      held = [];
      await streaming.write(first);
    }
  } catch (error) {
    refuse();
    return { kind: 'failed', stage: 'source', error: error instanceof Error ? error : new Error(String(error)), bytes };
  }

  if (refusal !== null) return { kind: 'refused', reason: refusal, bytes };
  const lateVerdict = opts.inspector?.end() ?? null;
  if (lateVerdict !== null) {
    refuse();
    return { kind: 'refused', reason: lateVerdict, bytes };
  }
  const receivedSha256 = hash ? hash.digest('hex') : null;
  if (!streaming) return receiveHeld(held.length === 1 ? held[0]! : Buffer.concat(held), opts, bytes, receivedSha256);
  if (streaming.failures.length) {
    streaming.abort();
    const first = streaming.failures[0]!;
    return { kind: 'failed', stage: first.stage, error: first.error, bytes };
  }
  return streaming.finish(bytes, receivedSha256);
}
