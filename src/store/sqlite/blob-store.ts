import { createHash } from 'node:crypto';
import { mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
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

const PACK_NAME = /^pack-(\d{6,})$/;

/**
 * Content-addressed blobs in append-only pack files under `<dir>/pack-NNNNNN`, indexed by sha256
 * in the store's SQLite database. Concurrent puts write at reserved offsets and share one
 * fdatasync of the pack (group commit): one fsync'd file per blob would cap throughput at what
 * the disk does per fsync. Order of durability: bytes fsync'd, then the index row committed; the
 * index row is fsync'd with the WAL by the event append that references the blob, and the WAL
 * is sequential, so no event can survive a crash that its blob's index row did not.
 *
 * A process only ever appends to packs it created itself (exclusively, on its first put), so two
 * processes on one DATA_DIR can never write over each other's blobs.
 */
export class PackBlobStore implements BlobStore {
  /** The pack this process appends to, created on the first put. */
  private writable: Promise<Pack> | null = null;
  /** Read handles by pack number (any process's packs). */
  private readonly readers = new Map<number, FileHandle>();
  private readonly owned: Pack[] = [];
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
  }

  private packPath(n: number): string {
    return path.join(this.dir, packFileName(n));
  }

  /** A new pack after the highest one in the folder; O_EXCL makes it this process's alone. */
  private async createPack(): Promise<Pack> {
    for (;;) {
      const numbers = (await readdir(this.dir)).map((f) => PACK_NAME.exec(f)?.[1]).filter((n): n is string => n !== undefined).map(Number);
      const number = numbers.length ? Math.max(...numbers) + 1 : 1;
      const file = this.packPath(number);
      let handle: FileHandle;
      try {
        handle = await open(file, 'wx');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue; // another process took this number
        throw error;
      }
      await fsyncDir(this.dir);
      const pack = { number, handle, size: 0, sync: new GroupSync(file) };
      this.owned.push(pack);
      return pack;
    }
  }

  private async reserve(size: number): Promise<{ pack: Pack; offset: number }> {
    let pending = (this.writable ??= this.createPack());
    let pack = await pending;
    while (pack.size > 0 && pack.size + size > PACK_LIMIT) {
      // Full: the first put to notice starts the next pack, the others wait for the same one.
      if (this.writable === pending) this.writable = this.createPack();
      pending = this.writable;
      pack = await pending;
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
    let reader = this.readers.get(row.pack);
    if (!reader) {
      reader = await open(this.packPath(row.pack), 'r');
      this.readers.set(row.pack, reader);
    }
    const out = Buffer.allocUnsafe(row.size);
    const { bytesRead } = await reader.read(out, 0, row.size, row.offset);
    if (bytesRead !== row.size) throw new Error(`blob ${sha256} is truncated in pack ${row.pack}`);
    return out;
  }

  async has(sha256: string): Promise<boolean> {
    return this.stmt.find.get(sha256) !== undefined;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.inflight.values());
    for (const pack of this.owned) {
      await pack.sync.close();
      await pack.handle.close();
    }
    for (const reader of this.readers.values()) await reader.close();
    this.owned.length = 0;
    this.readers.clear();
    this.writable = null;
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}
