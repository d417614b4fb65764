/**
 * The little of the tar format (POSIX ustar) that backups need: regular files, written and read as
 * streams. A backup is a standard .tar.gz, so `tar -tzvf` lists it and `tar -xzf` unpacks it
 * without mailtrail; writing it ourselves lets the backup copy each blob pack up to a length it
 * chooses while the server keeps appending to it, which the tar binary would not.
 */

const BLOCK = 512;
/** Largest size the ustar octal field holds (8 GiB); larger files use GNU's base-256 form. */
const OCTAL_SIZE_LIMIT = 8 ** 11;

const octal = (n: number, digits: number): string => n.toString(8).padStart(digits, '0');

export function tarHeader(name: string, size: number, mtime: Date = new Date()): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar entry name longer than 100 bytes: ${name}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write('0000600\0', 100, 'ascii'); // mode: owner-only, like the data files
  h.write('0000000\0', 108, 'ascii'); // uid
  h.write('0000000\0', 116, 'ascii'); // gid
  if (size < OCTAL_SIZE_LIMIT) h.write(`${octal(size, 11)}\0`, 124, 'ascii');
  else {
    h[124] = 0x80;
    h.writeBigUInt64BE(BigInt(size), 128);
  }
  h.write(`${octal(Math.floor(mtime.getTime() / 1000), 11)}\0`, 136, 'ascii');
  h.write('0', 156, 'ascii'); // regular file
  h.write('ustar\x0000', 257, 'ascii');
  h.write(`${octal(checksum(h), 6)}\0 `, 148, 'ascii');
  return h;
}

/** Sum of the header's bytes with the checksum field counted as spaces. */
function checksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum;
}

/** Zero bytes that pad an entry of `size` bytes to a whole block. */
export const tarPadding = (size: number): Buffer => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** Two zero blocks end an archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

export class TarFormatError extends Error {}

function parseHeader(h: Buffer): { name: string; size: number; type: string } {
  const field = (start: number, length: number): string => h.subarray(start, start + length).toString('utf8').replace(/\0[\s\S]*$/, '');
  if (parseInt(field(148, 8).trim(), 8) !== checksum(h)) throw new TarFormatError('bad tar header checksum');
  const size = h[124]! & 0x80 ? Number(h.readBigUInt64BE(128)) : parseInt(field(124, 12).trim() || '0', 8);
  return { name: field(0, 100), size, type: field(156, 1) };
}

/** Pulls exact byte counts out of a stream of chunks. */
class ChunkReader {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly chunks: AsyncIterator<Buffer>;

  constructor(input: AsyncIterable<Buffer>) {
    this.chunks = input[Symbol.asyncIterator]();
  }

  /** Between 1 and `max` bytes; null at the end of the input. */
  async upTo(max: number): Promise<Buffer | null> {
    if (this.buffered.length === 0) {
      const next = await this.chunks.next();
      if (next.done) return null;
      this.buffered = next.value;
    }
    const out = this.buffered.subarray(0, max);
    this.buffered = this.buffered.subarray(out.length);
    return out;
  }

  async exactly(n: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (let got = 0; got < n; ) {
      const part = await this.upTo(n - got);
      if (!part) throw new TarFormatError('the archive ends in the middle of an entry (truncated file?)');
      parts.push(part);
      got += part.length;
    }
    return Buffer.concat(parts);
  }
}

/**
 * Calls `onEntry` for every regular file in the archive, in order, with its body as chunks. The
 * body must be consumed before `onEntry` resolves. Other entry types are a TarFormatError.
 */
export async function readTar(
  input: AsyncIterable<Buffer>,
  onEntry: (name: string, size: number, body: AsyncIterable<Buffer>) => Promise<void>,
): Promise<void> {
  const reader = new ChunkReader(input);
  for (;;) {
    const header = await reader.exactly(BLOCK);
    if (header.every((b) => b === 0)) return;
    const { name, size, type } = parseHeader(header);
    if (type !== '0' && type !== '') throw new TarFormatError(`unexpected tar entry ${name} (type ${type})`);
    let left = size;
    const body = (async function* () {
      while (left > 0) {
        const chunk = await reader.upTo(left);
        if (!chunk) throw new TarFormatError(`the archive ends inside ${name} (truncated file?)`);
        left -= chunk.length;
        yield chunk;
      }
    })();
    await onEntry(name, size, body);
    if (left > 0) throw new Error(`readTar: the handler of ${name} left ${left} bytes unread`);
    await reader.exactly(tarPadding(size).length);
  }
}
