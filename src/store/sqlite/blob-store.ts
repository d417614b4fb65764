import { createHash } from 'node:crypto';
import { mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import type { BlobRef } from '../../events/types.js';
import type { BlobStore } from '../port.js';
import type { SqliteEventStore, StagedRows } from './event-store.js';
import { GroupSync } from './group-sync.js';

export const BLOBS_SCHEMA = `
  CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    pack   INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size   INTEGER NOT NULL,
    data   BLOB
  );`;

/** Adds the column of inline blobs to a blob index made before they existed. */
export function ensureInlineBlobs(db: Database.Database): void {
  // Under the write lock: two processes opening an old file at once must not both add it.
  db.transaction(() => {
    const columns = db.prepare<[], { name: string }>('PRAGMA table_info(blobs)').all();
    if (!columns.some((c) => c.name === 'data')) db.exec('ALTER TABLE blobs ADD COLUMN data BLOB');
  }).immediate();
}

/**
 * Blobs up to this size live in their index row (pack 0), not in a pack: most mail. They are
 * written with the log's next transaction, so the fsync of the WAL that makes an event naming them
 * durable makes them durable too: one fsync per message instead of a pack's and then the WAL's,
 * and no pack write. Larger blobs go to the packs, written once instead of twice (WAL and database).
 */
export const INLINE_MAX = 32 * 1024;

/** File name of pack `n` under the blobs folder (backups list packs by it). */
export const packFileName = (n: number): string => `pack-${String(n).padStart(6, '0')}`;

/** A pack is closed for appends past this size and the next one started. */
export const PACK_LIMIT = 1024 ** 3;

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
  /** Blobs reserved in this tick, written together (one writev, one thread-pool round trip). */
  queued: { bytes: Buffer; offset: number }[];
  /** The write of the queued blobs, once started. */
  writing: Promise<void> | null;
}

/** A pack's file name; the group is its number. */
export const PACK_NAME = /^pack-(\d{6,})$/;

export type IndexRow = { pack: number; offset: number; size: number };

/** Pack number of a blob kept in its index row. */
const INLINE = 0;

/** An index row waiting for the log's next transaction; an inline one carries its bytes and its put. */
type StagedRow = IndexRow & { data?: Buffer; put?: { resolve: () => void; reject: (e: Error) => void } };

/** Locations learned from another thread's puts (see `remember`), at most. */
const REMEMBERED = 10_000;

/** A rollback this long ago or less: the staged index rows wait this long before the next try. */
const RETRY_MS = 100;

/**
 * Content-addressed blobs indexed by sha256 in the store's SQLite database: small ones (up to
 * INLINE_MAX) in their index row, the others in append-only pack files under
 * `<dir>/pack-NNNNNN`. A pack put writes its bytes at a reserved offset (the puts of a tick in one
 * writev) and shares one fdatasync of the pack with every put in flight (group commit): one
 * fsync'd file per blob would cap throughput at what the disk does per fsync.
 *
 * Order of durability: a pack blob's bytes are fsync'd, then the put resolves and its index row is
 * staged; an inline blob's row (bytes and all) is staged at once and its put resolves when the
 * row has committed. Staged rows are written in the log's next transaction (the one of the
 * appends of the same tick, see StagedRows), before any event of that transaction, and are
 * fsync'd with the WAL, which is sequential: no event can survive a crash that the index rows of
 * its blobs did not. Until a pack blob's row has committed, this process finds the blob through
 * the staged rows; an inline blob, and any blob in other processes, is found once its row has
 * committed (within the tick, and always before an event naming it).
 *
 * A process only ever appends to packs it created itself (exclusively, on its first put), so two
 * processes on one DATA_DIR can never write over each other's blobs.
 */
export class PackBlobStore implements BlobStore, StagedRows {
  /** The pack this process appends to, created on the first put. */
  private writable: Promise<Pack> | null = null;
  /** Read handles by pack number (any process's packs). */
  private readonly readers = new Map<number, FileHandle>();
  private readonly owned: Pack[] = [];
  private readonly inflight = new Map<string, Promise<BlobRef>>();
  /** Index rows not yet committed (of durable pack blobs, or inline blobs with their bytes), by sha256. */
  private staged = new Map<string, StagedRow>();
  /** The rows the transaction in progress writes. */
  private writing: Map<string, StagedRow> | null = null;
  /** Blobs another thread of this process put, whose index rows may not have committed yet. */
  private readonly remembered = new Map<string, IndexRow>();
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly stmt;

  constructor(
    private readonly dir: string,
    private readonly db: Database.Database,
    /** fdatasync packs before a put resolves (false: fast, may lose recent blobs on power loss). */
    private readonly durable: boolean,
    /** The log's append batches, which write the staged index rows. */
    private readonly log: SqliteEventStore,
  ) {
    this.stmt = {
      find: db.prepare<[string], IndexRow>('SELECT pack, offset, size FROM blobs WHERE sha256 = ?'),
      inline: db.prepare<[string], { data: Buffer | null }>('SELECT data FROM blobs WHERE sha256 = ?'),
      index: db.prepare('INSERT OR IGNORE INTO blobs (sha256, pack, offset, size, data) VALUES (?, ?, ?, ?, ?)'),
    };
    log.writeWith(this);
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
      const pack: Pack = { number, handle, size: 0, sync: new GroupSync(file), queued: [], writing: null };
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

  /**
   * Writes `bytes` at `offset` together with every other blob reserved in the same tick: they are
   * contiguous, so one writev. Not in the event loop: a write to a file being fdatasync'd can
   * wait for the sync.
   */
  private write(pack: Pack, bytes: Buffer, offset: number): Promise<void> {
    if (pack.queued.length === 0) {
      pack.writing = new Promise<void>((resolve, reject) =>
        setImmediate(() => {
          const batch = pack.queued;
          pack.queued = [];
          writeAll(pack.handle, batch.map((q) => q.bytes), batch[0]!.offset).then(resolve, reject);
        }),
      );
    }
    pack.queued.push({ bytes, offset });
    return pack.writing!;
  }

  /** Where a blob is: staged here, being written, learned from another thread, or in the index. */
  locate(sha256: string): IndexRow | undefined {
    const pending = this.staged.get(sha256) ?? this.writing?.get(sha256);
    // An inline blob is there once its row has committed (its put resolves then), not before.
    if (pending && !pending.put) return { pack: pending.pack, offset: pending.offset, size: pending.size };
    return this.remembered.get(sha256) ?? this.stmt.find.get(sha256);
  }

  /**
   * A blob the log writer thread has put (stored, its index row staged or committed there): readable here at
   * once. Locations never change while the store is open (blobs:gc, which moves blobs, runs alone), so a remembered one stays right; the oldest are forgotten, by
   * then their rows have long committed.
   */
  remember(sha256: string, row: IndexRow): void {
    this.remembered.set(sha256, row);
    if (this.remembered.size > REMEMBERED) this.remembered.delete(this.remembered.keys().next().value!);
  }

  async put(data: Buffer | Readable): Promise<BlobRef> {
    const bytes = Buffer.isBuffer(data) ? data : await collect(data);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const pending = this.inflight.get(sha256);
    if (pending) return pending;
    if (this.locate(sha256)) return { sha256, size: bytes.length };
    const write =
      bytes.length <= INLINE_MAX
        ? new Promise<BlobRef>((resolve, reject) => {
            const put = { resolve: () => resolve({ sha256, size: bytes.length }), reject };
            this.staged.set(sha256, { pack: INLINE, offset: 0, size: bytes.length, data: bytes, put });
            this.log.schedule();
          })
        : this.putInPack(sha256, bytes);
    this.inflight.set(sha256, write);
    try {
      return await write;
    } finally {
      this.inflight.delete(sha256);
    }
  }

  private putInPack(sha256: string, bytes: Buffer): Promise<BlobRef> {
    return (async (): Promise<BlobRef> => {
      const { pack, offset } = await this.reserve(bytes.length);
      await this.write(pack, bytes, offset);
      if (this.durable) await pack.sync.sync();
      this.staged.set(sha256, { pack: pack.number, offset, size: bytes.length });
      this.log.schedule();
      return { sha256, size: bytes.length };
    })();
  }

  get hasStaged(): boolean {
    return this.staged.size > 0;
  }

  writeStaged(): void {
    if (this.staged.size === 0) return;
    this.writing = this.staged;
    this.staged = new Map();
    for (const [sha256, row] of this.writing) this.stmt.index.run(sha256, row.pack, row.offset, row.size, row.data ?? null);
  }

  settle(failure: unknown): void {
    // A transaction that failed before it wrote the staged rows (BEGIN refused: the write lock held
    // past busy_timeout, an I/O error) fails them just the same.
    const written = this.writing ?? (failure === null ? null : this.staged);
    this.writing = null;
    if (!written) return;
    if (written === this.staged) this.staged = new Map();
    for (const [sha256, row] of written) {
      if (failure === null) row.put?.resolve();
      // An inline put fails with its transaction (its bytes were only in the row; nothing names it
      // yet): the caller answers, instead of waiting for the disk to recover.
      else if (row.put) row.put.reject(failure instanceof Error ? failure : new Error(String(failure)));
      // A pack blob's row waits for the next transaction: its put has resolved, a later event may name it.
      else if (!this.staged.has(sha256)) this.staged.set(sha256, row);
    }
    if (failure === null || this.closed) return; // the store's last flush: nothing retries on a closed database
    this.retry ??= setTimeout(() => {
      this.retry = null;
      this.log.schedule();
    }, RETRY_MS);
  }

  async get(sha256: string): Promise<Buffer> {
    const row = this.locate(sha256);
    if (!row) throw Object.assign(new Error(`no blob ${sha256}`), { code: 'ENOENT' });
    if (row.pack === INLINE) {
      const data = this.stmt.inline.get(sha256)?.data;
      if (!data) throw new Error(`blob ${sha256} is missing from the blob index`);
      return data;
    }
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
    return this.locate(sha256) !== undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.inflight.values());
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
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

/** writev until every byte is written (a write may be short). */
async function writeAll(handle: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let rest = buffers;
  let at = position;
  while (rest.length) {
    const { bytesWritten } = await handle.writev(rest, at);
    at += bytesWritten;
    let skip = bytesWritten;
    while (rest.length && skip >= rest[0]!.length) skip -= rest.shift()!.length;
    if (skip > 0) rest = [rest[0]!.subarray(skip), ...rest.slice(1)];
  }
}

export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}
