import type { ChunkInspector } from '../mail/intake.js';
import { replies, type Reply } from './policy.js';

/**
 * Watches the DATA bytes (after smtp-server removed the dot-stuffing and the final CRLF.CRLF) and
 * refuses a message that:
 *
 * - grows past the size limit (checked on every chunk, so nothing past it is written anywhere);
 * - contains a NUL byte;
 * - contains a line made of a lone dot whose line ending on either side is a bare CR or a bare LF
 *   (`\n.\n`, `\r\n.\n`, `\n.\r\n`, `\r.\r`, `\r\n.\r`, ...). smtp-server only ends DATA on
 *   CRLF.CRLF, so these never end our message early; but another server that accepts them as the
 *   end of data would, on relay, read what follows as a second transaction (SMTP smuggling). Such
 *   a message has no legitimate use, so it is refused rather than stored or passed on. A lone dot
 *   between proper CRLFs (sent dot-stuffed as `..`) is ordinary content.
 *
 * The dot check needs two bytes on each side of a dot; the last bytes of a chunk are kept so a
 * pattern split over chunks is still seen.
 */
export class DataGuard implements ChunkInspector<Reply> {
  private bytes = 0;
  /** The last up to 4 bytes already seen. */
  private tail: Buffer = Buffer.alloc(0);
  /** Stream offset from which dots have not been judged yet (they lacked look-ahead). */
  private judgedUpTo = 0;

  constructor(private readonly maxBytes: number) {}

  get size(): number {
    return this.bytes;
  }

  feed(chunk: Buffer): Reply | null {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) return replies.messageTooBig(this.maxBytes);
    if (chunk.includes(0)) return replies.nulBytes();
    return this.scan(chunk, false) ? replies.smuggling() : null;
  }

  end(): Reply | null {
    return this.scan(Buffer.alloc(0), true) ? replies.smuggling() : null;
  }

  /** True when a suspicious lone-dot line is found. */
  private scan(chunk: Buffer, final: boolean): boolean {
    const tail = this.tail;
    const base = this.bytes - chunk.length - tail.length; // stream offset of window index 0
    const length = tail.length + chunk.length;
    const at = (i: number): number => {
      if (i < 0) return base + i === -1 ? START : NONE;
      if (i >= length) return final ? END : NONE;
      return i < tail.length ? tail[i]! : chunk[i - tail.length]!;
    };
    const limit = final ? length : length - 2; // a dot needs two bytes of look-ahead to be judged
    let i = Math.max(0, this.judgedUpTo - base);
    while (i < limit) {
      // find the next dot in the window
      let dot = -1;
      for (let k = i; k < Math.min(tail.length, limit); k++) {
        if (tail[k] === DOT) {
          dot = k;
          break;
        }
      }
      if (dot === -1) {
        const from = Math.max(i, tail.length) - tail.length;
        const found = chunk.indexOf(DOT, from);
        dot = found === -1 ? -1 : found + tail.length;
      }
      if (dot === -1 || dot >= limit) break;
      if (suspicious(at(dot - 2), at(dot - 1), at(dot + 1), at(dot + 2))) return true;
      i = dot + 1;
    }
    this.judgedUpTo = base + Math.max(limit, 0);
    const window = tail.length + chunk.length;
    if (chunk.length >= 4) this.tail = chunk.subarray(chunk.length - 4);
    else this.tail = Buffer.concat([tail, chunk]).subarray(Math.max(0, window - 4));
    return false;
  }
}

const DOT = 0x2e;
const CR = 0x0d;
const LF = 0x0a;
const START = -1;
const END = -2;
const NONE = -3;

/** b2 b1 . a1 a2 - is this dot alone on a line with a bare CR or LF around it? */
function suspicious(b2: number, b1: number, a1: number, a2: number): boolean {
  const atLineStart = b1 === START || b1 === LF || b1 === CR;
  const atLineEnd = a1 === CR || a1 === LF || a1 === END;
  if (!atLineStart || !atLineEnd) return false;
  const properStart = b1 === START || (b1 === LF && b2 === CR);
  const properEnd = a1 === CR && a2 === LF;
  return !(properStart && properEnd);
}
