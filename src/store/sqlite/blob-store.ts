import { createHash } from 'node:crypto';
import { mkdir, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import type { BlobRef } from '../../events/types.js';
import type { BlobStore } from '../port.js';
import { GroupSync } from './group-sync.js';

export const BLOBS_SCHEMA = `
  CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    pack   INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size   INTEGER NOT NULL
  );`;

/** File name of pack `n` under the blobs folder (backups list packs by it). */
export const packFileName = (n: number): string => `pack-${String(n).padStart(6, '0')}`;

/** A pack is closed for appends past this size and the next one started. */
const PACK_LIMIT = 1024 ** 3;

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

interface Pack {
  number: number;
  handle: FileHandle;
  /** Bytes reserved so far: the next blob starts here. */
  size: number;
  sync: GroupSync;
}

/**
 * Content-addressed blobs in append-only pack files under `<dir>/pack-NNNNNN`, indexed by sha256
 * in the store's SQLite database. Concurrent puts write at reserved offsets and share one
 * fdatasync of the pack (group commit): one fsync'd file per blob would cap throughput at what
 * the disk does per fsync. Order of durability: bytes fsync'd, then the index row committed; the
 * index row is fsync'd with the WAL by the event append that references the blob, and the WAL
 * is sequential, so no event can survive a crash that its blob's index row did not.
 */
export class PackBlobStore implements BlobStore {
  private current: Pack | null = null;
  private readonly packs = new Map<number, Pack>();
  private readonly inflight = new Map<string, Promise<BlobRef>>();
  /** Index rows of the puts of one tick, committed in one transaction. */
  private pendingRows: { row: [string, number, number, number]; done: (error?: unknown) => void }[] = [];
  private readonly stmt;

  constructor(
    private readonly dir: string,
    private readonly db: Database.Database,
    /** fdatasync packs before a put resolves (false: fast, may lose recent blobs on power loss). */
    private readonly durable: boolean,
  ) {
    this.stmt = {
      find: db.prepare<[string], { pack: number; offset: number; size: number }>('SELECT pack, offset, size FROM blobs WHERE sha256 = ?'),
      index: db.prepare('INSERT OR IGNORE INTO blobs (sha256, pack, offset, size) VALUES (?, ?, ?, ?)'),
    };
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const numbers = (await readdir(this.dir)).map((f) => /^pack-(\d{6})$/.exec(f)?.[1]).filter((n): n is string => n !== undefined).map(Number);
    this.current = await this.openPack(numbers.length ? Math.max(...numbers) : 1);
  }

  private packPath(n: number): string {
    return path.join(this.dir, packFileName(n));
  }

  private async openPack(number: number): Promise<Pack> {
    const file = this.packPath(number);
    const handle = await open(file, 'a+').then(async (h) => {
      // 'a+' only to create it; positional writes need a handle without O_APPEND.
      await h.close();
      return open(file, 'r+');
    });
    await fsyncDir(this.dir);
    const pack = { number, handle, size: (await stat(file)).size, sync: new GroupSync(file) };
    this.packs.set(number, pack);
    return pack;
  }

  private async reserve(size: number): Promise<{ pack: Pack; offset: number }> {
    let pack = this.current!;
    if (pack.size > 0 && pack.size + size > PACK_LIMIT) {
      pack = await this.openPack(pack.number + 1);
      this.current = pack;
    }
    const offset = pack.size;
    pack.size += size;
    return { pack, offset };
  }

  async put(data: Buffer | Readable): Promise<BlobRef> {
    const bytes = Buffer.isBuffer(data) ? data : await collect(data);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const pending = this.inflight.get(sha256);
    if (pending) return pending;
    if (this.stmt.find.get(sha256)) return { sha256, size: bytes.length };
    const write = (async (): Promise<BlobRef> => {
      const { pack, offset } = await this.reserve(bytes.length);
      await pack.handle.write(bytes, 0, bytes.length, offset);
      if (this.durable) await pack.sync.sync();
      await this.indexRow([sha256, pack.number, offset, bytes.length]);
      return { sha256, size: bytes.length };
    })();
    this.inflight.set(sha256, write);
    try {
      return await write;
    } finally {
      this.inflight.delete(sha256);
    }
  }

  private indexRow(row: [string, number, number, number]): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.pendingRows.length === 0) setImmediate(() => this.flushRows());
      this.pendingRows.push({ row, done: (error) => (error ? reject(error) : resolve()) });
    });
  }

  private flushRows(): void {
    const batch = this.pendingRows;
    this.pendingRows = [];
    try {
      this.db.transaction(() => batch.forEach((p) => this.stmt.index.run(...p.row))).immediate();
      batch.forEach((p) => p.done());
    } catch (error) {
      batch.forEach((p) => p.done(error));
    }
  }

  async get(sha256: string): Promise<Buffer> {
    const row = this.stmt.find.get(sha256);
    if (!row) throw Object.assign(new Error(`no blob ${sha256}`), { code: 'ENOENT' });
    const pack = this.packs.get(row.pack) ?? (await this.openPack(row.pack));
    const out = Buffer.allocUnsafe(row.size);
    const { bytesRead } = await pack.handle.read(out, 0, row.size, row.offset);
    if (bytesRead !== row.size) throw new Error(`blob ${sha256} is truncated in pack ${row.pack}`);
    return out;
  }

  async has(sha256: string): Promise<boolean> {
    return this.stmt.find.get(sha256) !== undefined;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.inflight.values());
    for (const pack of this.packs.values()) {
      await pack.sync.close();
      await pack.handle.close();
    }
    this.packs.clear();
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}
