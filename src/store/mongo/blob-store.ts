import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Collection, Db } from 'mongodb';
import type { BlobRef } from '../../events/types.js';
import type { BlobStore } from '../port.js';
import { ignoreDuplicates, isDuplicateKey } from './errors.js';

/** Fixed: every put of the same bytes must cut them into the same chunks (see put). */
const CHUNK_SIZE = 255 * 1024;

interface FileDoc {
  _id: string;
  length: number;
  chunkSize: number;
  uploadDate: Date;
  filename: string;
}

interface ChunkDoc {
  files_id: string;
  n: number;
  data: Buffer;
}

/**
 * Blobs in the GridFS layout of bucket `blobs` (`blobs.files` and `blobs.chunks`, `_id` = sha256
 * hex), so GridFS tools can read them. Written directly rather than through an upload stream: the
 * chunks of the same bytes are identical, so a chunk that is already there (a concurrent put, or one
 * that died before writing its files document) is simply skipped. An upload stream fails on such a
 * chunk, and a dead put's chunks would then block that blob forever.
 */
export class MongoBlobStore implements BlobStore {
  private constructor(
    private readonly files: Collection<FileDoc>,
    private readonly chunks: Collection<ChunkDoc>,
  ) {}

  static async open(db: Db): Promise<MongoBlobStore> {
    const store = new MongoBlobStore(db.collection('blobs.files'), db.collection('blobs.chunks'));
    // GridFS's own indexes; the unique one is what makes a repeated chunk a no-op.
    await store.chunks.createIndex({ files_id: 1, n: 1 }, { unique: true });
    await store.files.createIndex({ filename: 1, uploadDate: 1 });
    return store;
  }

  async put(data: Buffer | Readable): Promise<BlobRef> {
    // Mail is at most a few tens of MiB: hashing in memory is simpler than a temp file.
    const bytes = Buffer.isBuffer(data) ? data : await readFully(data);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const ref = { sha256, size: bytes.length };
    const existing = await this.files.findOne({ _id: sha256 }, { projection: { length: 1 } });
    if (existing) {
      if (existing.length !== bytes.length) throw new Error(`blob ${sha256} is stored with ${existing.length} bytes, not ${bytes.length}`);
      return ref;
    }
    const chunks: ChunkDoc[] = [];
    for (let n = 0; n * CHUNK_SIZE < bytes.length; n++) {
      chunks.push({ files_id: sha256, n, data: bytes.subarray(n * CHUNK_SIZE, (n + 1) * CHUNK_SIZE) });
    }
    if (chunks.length > 0) {
      try {
        await this.chunks.insertMany(chunks, { ordered: false });
      } catch (err) {
        ignoreDuplicates(err);
      }
    }
    // Last, as GridFS does: the files document says every chunk is there.
    try {
      await this.files.insertOne({ _id: sha256, length: bytes.length, chunkSize: CHUNK_SIZE, uploadDate: new Date(), filename: sha256 });
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    return ref;
  }

  async get(sha256: string): Promise<Buffer> {
    const file = await this.files.findOne({ _id: sha256 });
    if (!file) throw new Error(`blob ${sha256} not found`);
    const chunks = await this.chunks.find({ files_id: sha256 }, { sort: { n: 1 }, promoteBuffers: true }).toArray();
    const bytes = Buffer.concat(chunks.map((c) => c.data));
    if (bytes.length !== file.length) throw new Error(`blob ${sha256} has ${bytes.length} of its ${file.length} bytes`);
    return bytes;
  }

  async has(sha256: string): Promise<boolean> {
    return (await this.files.countDocuments({ _id: sha256 }, { limit: 1 })) > 0;
  }
}

async function readFully(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.isBuffer(part) ? part : Buffer.from(part));
  return Buffer.concat(parts);
}
