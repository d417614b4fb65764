import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline as pipelineCb, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip, constants as zlib } from 'node:zlib';
import Database from 'better-sqlite3';
import { z } from 'zod';
import type { Projection } from '../projection/projection.js';
import { rebuild, type RebuildProgress, type RebuildResult } from '../projection/rebuild.js';
import { fsyncDir, packFileName } from '../store/sqlite/blob-store.js';
import { openAlone, StoreInUseError } from '../store/sqlite/database.js';
import { dropLegacyViews, LOG_FILE, openSqliteStore, RESTORE_STAGING_PREFIX, VIEWS_FILE } from '../store/sqlite/index.js';
import { requireEventLog, requireOutputFolder } from './paths.js';
import { readTar, TAR_END, tarHeader, TarFormatError, tarPadding } from './tar.js';

/**
 * Backup and restore of the embedded store. A backup is one .tar.gz holding a consistent snapshot
 * of the SQLite database (event log, blob index with the small blobs kept in it, views), the blob
 * packs up to what that snapshot indexes, and a manifest with each file's sha256. It is taken
 * online: the server keeps running.
 */

const MANIFEST = 'manifest.json';
/** The names a backup may contain; anything else means it is not one (and keeps paths inside the target). */
const ENTRY = /^(mailtrail\.db|manifest\.json|blobs\/pack-\d{6,})$/;
/** As PackBlobStore names its pack files. */

const Manifest = z.object({
  format: z.literal('mailtrail-backup'),
  version: z.literal(1),
  createdAt: z.string(),
  /** Events in the log and the last position. */
  events: z.number().int(),
  head: z.number().int(),
  blobs: z.number().int(),
  files: z.array(z.object({ name: z.string(), size: z.number().int(), sha256: z.string() })),
});
export type BackupManifest = z.infer<typeof Manifest>;

type Progress = (done: number, total: number) => void;

interface Entry {
  name: string;
  path: string;
  /** Bytes to copy from the start of the file. */
  size: number;
}

/**
 * The database as of one instant, while the server keeps writing. The copy runs as one step, that
 * is one read transaction: copied in several steps, SQLite restarts the copy whenever another
 * connection commits in between, and a busy server could keep it from ever finishing.
 */
async function snapshotDatabase(dbFile: string, dest: string): Promise<void> {
  const db = new Database(dbFile, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 10000');
    await db.backup(dest, { progress: () => 0x7fffffff });
  } finally {
    db.close();
  }
}

/** What the snapshot holds, and how much of each pack its blob index reaches into. */
function describeSnapshot(file: string): { events: number; head: number; blobs: number; packs: { pack: number; end: number }[] } {
  const db = new Database(file);
  try {
    // Out of WAL mode, so the snapshot is one self-contained file.
    db.pragma('journal_mode = DELETE');
    const log = db.prepare<[], { events: number; head: number }>('SELECT count(*) AS events, coalesce(max(position), 0) AS head FROM events').get()!;
    const blobs = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM blobs').get()!.n;
    const packs = db.prepare<[], { pack: number; end: number }>('SELECT pack, max(offset + size) AS end FROM blobs WHERE pack > 0 GROUP BY pack ORDER BY pack').all();
    return { ...log, blobs, packs };
  } finally {
    db.close();
  }
}

/**
 * The tar stream: every entry with its sha256 computed on the way, then the manifest listing them
 * (handed to `onManifest` too).
 */
async function* archive(
  entries: Entry[],
  summary: Omit<BackupManifest, 'files'>,
  on: { bytes: (n: number) => void; manifest: (m: BackupManifest) => void },
): AsyncGenerator<Buffer> {
  const files: BackupManifest['files'] = [];
  for (const entry of entries) {
    yield tarHeader(entry.name, entry.size);
    const hash = createHash('sha256');
    let copied = 0;
    if (entry.size > 0) {
      for await (const chunk of createReadStream(entry.path, { start: 0, end: entry.size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        copied += chunk.length;
        on.bytes(chunk.length);
        yield chunk;
      }
    }
    if (copied !== entry.size) throw new Error(`${entry.path} is shorter than its index says (${copied} of ${entry.size} bytes); the data folder is damaged`);
    yield tarPadding(entry.size);
    files.push({ name: entry.name, size: entry.size, sha256: hash.digest('hex') });
  }
  const manifest: BackupManifest = { ...summary, files };
  on.manifest(manifest);
  const bytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
  yield tarHeader(MANIFEST, bytes.length);
  yield bytes;
  yield tarPadding(bytes.length);
  yield TAR_END;
}

/**
 * Writes a backup of the embedded store in `dataDir` to `out` (a new file). Safe while the server
 * runs. The database is snapshotted first, the packs copied after: packs are append-only and a
 * blob's bytes are written before its index row commits, so every blob the snapshot indexes is
 * already in the pack when it is copied. Bytes appended later are left out.
 */
export async function writeBackup(dataDir: string, out: string, onProgress?: Progress): Promise<BackupManifest & { bytes: number }> {
  const dbFile = requireEventLog(dataDir);
  if (existsSync(out)) throw new Error(`${out} exists; a backup never overwrites a file: give --out a new name`);
  requireOutputFolder(out);
  // Open (and read once) until the packs are copied: blobs:gc, which rewrites packs, cannot start meanwhile.
  const guard = new Database(dbFile, { fileMustExist: true, readonly: true, timeout: 2000 });
  let work: string | null = null;
  try {
    try {
      guard.prepare('SELECT count(*) FROM sqlite_master').get();
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new Error(`${dbFile} is held by npm run blobs:gc; back up once it has finished`);
      throw error;
    }
    // Work next to the output: same file system for the final rename, and no surprise in a small /tmp.
    work = await mkdtemp(path.join(path.dirname(path.resolve(out)), '.mailtrail-backup-'));
    const snapshot = path.join(work, LOG_FILE);
    const takenAt = new Date().toISOString();
    await snapshotDatabase(dbFile, snapshot);
    const { packs, ...counts } = describeSnapshot(snapshot);
    const entries: Entry[] = [
      { name: LOG_FILE, path: snapshot, size: statSync(snapshot).size },
      ...packs.map((p) => ({ name: `blobs/${packFileName(p.pack)}`, path: path.join(dataDir, 'blobs', packFileName(p.pack)), size: p.end })),
    ];
    const total = entries.reduce((sum, e) => sum + e.size, 0);
    let done = 0;
    const written: { manifest?: BackupManifest } = {};
    const summary = { format: 'mailtrail-backup' as const, version: 1 as const, createdAt: takenAt, ...counts };
    const partial = path.join(work, 'backup.tar.gz');
    const tar = archive(entries, summary, { bytes: (n) => onProgress?.((done += n), total), manifest: (m) => (written.manifest = m) });
    // Fastest gzip level: mail compresses well enough at it, and a large store is not held up by the CPU.
    // Owner-only: a backup holds every mail and every password hash.
    await pipeline(Readable.from(tar, { objectMode: false }), createGzip({ level: zlib.Z_BEST_SPEED }), createWriteStream(partial, { flags: 'wx', mode: 0o600 }));
    const fh = await open(partial, 'r');
    await fh.sync();
    await fh.close();
    await rename(partial, out);
    await fsyncDir(path.dirname(path.resolve(out)));
    return { ...written.manifest!, bytes: statSync(out).size };
  } finally {
    if (work) await rm(work, { recursive: true, force: true });
    guard.close();
  }
}

/** Fails if another process (a running server, replay, audit) has the database open. */
function assertNotInUse(dbFile: string): void {
  try {
    openAlone(dbFile).close();
  } catch (error) {
    // Anything else (say, a damaged file) does not mean it is in use, and --force replaces it anyway.
    if (error instanceof StoreInUseError) throw error;
  }
}

export interface RestoreResult {
  manifest: BackupManifest;
  replay: RebuildResult;
}

/**
 * Restores a backup into `dataDir` and rebuilds `projections` from the restored log. A non-empty
 * `dataDir` is refused unless `force`, which replaces its event log and blobs (other files, such
 * as the generated TLS certificate, stay). Everything is unpacked and checked against the
 * manifest in a staging folder first, so a damaged backup leaves `dataDir` as it was.
 */
export async function restoreBackup(
  from: string,
  dataDir: string,
  opts: { force: boolean; projections: Projection[]; onExtract?: Progress; onReplay?: (p: RebuildProgress) => void },
): Promise<RestoreResult> {
  if (!existsSync(from)) throw new Error(`no backup file ${from}; give --from the file npm run backup wrote`);
  const present = existsSync(dataDir) ? readdirSync(dataDir) : [];
  if (present.length > 0 && !opts.force) {
    throw new Error(`${dataDir} is not empty (${present.slice(0, 5).join(', ')}${present.length > 5 ? ', …' : ''}); restore into a new folder, or add --force true to replace its event log and blobs`);
  }
  const dbFile = path.join(dataDir, LOG_FILE);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // Inside dataDir: the final renames stay on one file system even when dataDir is a mount point.
  // Made before the check below: blobs:gc refuses to start while it exists.
  const staging = await mkdtemp(path.join(dataDir, RESTORE_STAGING_PREFIX));
  try {
    if (existsSync(dbFile)) assertNotInUse(dbFile);
    const manifest = await unpack(from, staging, opts.onExtract);
    // Backups from before views.db carry views and leases (naming processes of the machine the
    // backup came from, which would make this folder's projectors wait): the views are rebuilt anyway.
    const db = new Database(path.join(staging, LOG_FILE), { fileMustExist: true });
    dropLegacyViews(db);
    db.close();

    if (opts.force) {
      // The views go too: they were built from the log being replaced.
      for (const f of [LOG_FILE, VIEWS_FILE]) for (const suffix of ['', '-wal', '-shm']) await rm(path.join(dataDir, `${f}${suffix}`), { force: true });
      await rm(path.join(dataDir, 'blobs'), { recursive: true, force: true });
    }
    await rename(path.join(staging, LOG_FILE), dbFile);
    await mkdir(path.join(staging, 'blobs'), { recursive: true, mode: 0o700 });
    await rename(path.join(staging, 'blobs'), path.join(dataDir, 'blobs'));
    await fsyncDir(dataDir);

    const store = await openSqliteStore({ dataDir });
    try {
      const head = await store.events.head();
      if (head !== manifest.head) throw new Error(`the restored log ends at position ${head}, the manifest says ${manifest.head}; the backup is damaged`);
      const replay = await rebuild(store, opts.projections, opts.onReplay ? { onProgress: opts.onReplay } : {});
      return { manifest, replay };
    } finally {
      await store.close();
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

function parseManifest(bytes: Buffer): BackupManifest | null {
  try {
    return Manifest.parse(JSON.parse(bytes.toString()));
  } catch {
    return null;
  }
}

/** Unpacks a backup into `dir`, checking every file against the manifest. */
async function unpack(from: string, dir: string, onProgress?: Progress): Promise<BackupManifest> {
  const total = statSync(from).size;
  const compressed = createReadStream(from);
  // Errors of the file and of gunzip both surface when the archive is read.
  const archived = pipelineCb(compressed, createGunzip(), () => undefined);
  const unpacked = new Map<string, { size: number; sha256: string }>();
  const found: { manifest: Buffer | null } = { manifest: null };
  try {
    await readTar(archived, async (name, size, body) => {
      if (!ENTRY.test(name) || unpacked.has(name)) throw new TarFormatError(`unexpected entry ${name}`);
      if (name === MANIFEST) {
        const chunks: Buffer[] = [];
        for await (const chunk of body) chunks.push(chunk);
        found.manifest = Buffer.concat(chunks);
        return;
      }
      const target = path.join(dir, name);
      await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      // Owner-only, as the service's UMask=0077 creates them.
      const fh = await open(target, 'wx', 0o600);
      const hash = createHash('sha256');
      try {
        for await (const chunk of body) {
          hash.update(chunk);
          await fh.write(chunk);
          // The file is read ahead of the entries: 100 % only once everything is unpacked and checked.
          onProgress?.(Math.min(compressed.bytesRead, total - 1), total);
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      unpacked.set(name, { size, sha256: hash.digest('hex') });
    });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (error instanceof TarFormatError || code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR') {
      throw new Error(`${from} is not a mailtrail backup, or it is damaged (${(error as Error).message}); use a file written by npm run backup`);
    }
    throw error;
  }
  if (!found.manifest) throw new Error(`${from} has no ${MANIFEST}: not a mailtrail backup, or a truncated one`);
  const manifest = parseManifest(found.manifest);
  if (!manifest) throw new Error(`${MANIFEST} in ${from} is not one npm run backup writes: the backup is damaged, or from a newer mailtrail`);
  const listed = new Set(manifest.files.map((f) => f.name));
  for (const f of manifest.files) {
    const got = unpacked.get(f.name);
    if (!got || got.size !== f.size || got.sha256 !== f.sha256) throw new Error(`${f.name} in ${from} does not match its manifest entry; the backup is damaged, use another one`);
  }
  const extra = [...unpacked.keys()].find((n) => !listed.has(n));
  if (extra !== undefined || !listed.has(LOG_FILE)) throw new Error(`${from} does not match its manifest (${extra ?? `no ${LOG_FILE}`}); the backup is damaged, use another one`);
  onProgress?.(total, total);
  return manifest;
}
