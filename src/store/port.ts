import type { Readable } from 'node:stream';
import type { Meta, NewEvent, StoredEvent } from '../events/envelope.js';
import type { BlobRef } from '../events/types.js';

/**
 * The one contract both stores (embedded SQLite, MongoDB) implement. `test/contract.test.ts`
 * runs the same suite against each.
 */

/** `number` = the stream must be at exactly this version (0 = no stream). */
export type ExpectedVersion = number | 'any' | 'no_stream';

export interface AppendResult {
  /** Stream version of the last appended event. */
  version: number;
  /** Global position of the first and last appended event. */
  firstPosition: number;
  lastPosition: number;
}

export class WrongExpectedVersionError extends Error {
  constructor(
    readonly streamId: string,
    readonly expected: ExpectedVersion,
    readonly actual: number,
  ) {
    super(`stream ${streamId} is at version ${actual}, expected ${expected === 'no_stream' ? 'no stream' : expected}`);
    this.name = 'WrongExpectedVersionError';
  }
}

export interface EventStore {
  /** Atomic per call; resolves only when every event is durable. */
  append(streamId: string, events: NewEvent[], opts: { expectedVersion: ExpectedVersion; meta: Meta }): Promise<AppendResult>;
  readStream(streamId: string): Promise<StoredEvent[]>;
  /** Events with position > `after`, in global order, gap-free: no reader ever sees a later event before an earlier one. */
  readAll(opts: { after: number; limit: number }): Promise<StoredEvent[]>;
  /** The highest position a reader can see now. */
  head(): Promise<number>;
  /** Resolves when an event past `after` may exist, after `maxWaitMs`, or when `signal` aborts. A wake-up hint only. */
  waitForAppend(after: number, maxWaitMs: number, signal?: AbortSignal): Promise<void>;
  /** Another process appended (e.g. an SMTP worker said so): wakes this process's waiters now, not at their next poll. */
  wake(): void;
}

export interface BlobStore {
  /**
   * Stores bytes under their sha256; resolves once they can be read in this process and will be
   * durable no later than the next append that follows the put (MongoDB: durable on resolve; the
   * embedded store: a large blob's bytes are fsync'd before it resolves, and its index entry, with
   * a small blob's bytes in it, commits with that append). Storing the same bytes twice is a no-op.
   * A blob named by a durable event is always there (until only mail deleted for good names it and
   * `npm run blobs:gc` frees it); one that no event names yet may be gone after a crash, as if it
   * had not been stored.
   */
  put(data: Buffer | Readable): Promise<BlobRef>;
  get(sha256: string): Promise<Buffer>;
  has(sha256: string): Promise<boolean>;
}

/** A read-model document. `id` is its key; other fields are the view's own. */
export type ViewDoc = { id: string } & Record<string, unknown>;

export interface ViewSpec {
  /** Table / collection name of the live view. */
  name: string;
  /** Fields copied into indexed columns (SQLite) / indexed (MongoDB) for `list`. Values must be strings or numbers. */
  indexed: string[];
  /** Compound indexes over `indexed` fields, for the queries the API makes. */
  indexes: string[][];
}

export interface ListQuery {
  where: Record<string, string | number>;
  /** Newest-first listing by `field`, tie-broken by id; `after` continues from a previous page. */
  orderBy: { field: string; direction: 'asc' | 'desc' };
  after?: { value: string | number; id: string };
  limit: number;
}

export interface Lease {
  name: string;
  owner: string;
  /** Fencing token: grows on every change of owner; writes carry it so a stale owner cannot write. */
  token: number;
}

export class LeaseLostError extends Error {
  constructor(readonly lease: Lease) {
    super(`lease ${lease.name} is no longer held by ${lease.owner} (token ${lease.token})`);
    this.name = 'LeaseLostError';
  }
}

/** What one projector batch writes: documents, each stamped with the position that last changed it, and the checkpoint. */
export interface ViewCommit {
  view: string;
  /** `null` doc = the document was deleted (kept as a tombstone so an old event cannot resurrect it). */
  docs: { id: string; doc: ViewDoc | null; position: number }[];
  checkpoint: { name: string; position: number };
  lease: Lease;
}

export interface ViewStore {
  /** Creates the view's table/collection and indexes if missing. */
  ensure(spec: ViewSpec): Promise<void>;
  /** Current documents with the position that last changed them (tombstones included, as doc null). */
  load(view: string, ids: string[]): Promise<Map<string, { doc: ViewDoc | null; position: number }>>;
  /**
   * Writes a batch and advances the checkpoint, fenced by the lease. Documents whose stored
   * position is already >= the new one are left alone, so replaying a batch changes nothing.
   * Throws LeaseLostError if the lease moved to someone else.
   */
  commit(c: ViewCommit): Promise<void>;
  get(view: string, id: string): Promise<ViewDoc | null>;
  list(view: string, q: ListQuery): Promise<ViewDoc[]>;
  /** Live documents matching `where` (equality on indexed fields). */
  count(view: string, where: Record<string, string | number>): Promise<number>;
  /** Every live document, ordered by id; used to compare a rebuild with the live view. */
  all(view: string): Promise<ViewDoc[]>;
  checkpoint(name: string): Promise<number>;
  /**
   * Sets checkpoint `name` to `position`, backwards too (commits only ever move a checkpoint
   * forward): for a follower whose checkpoint is past the log's head because the log lost its
   * tail. Fenced by the lease like a commit; throws LeaseLostError.
   */
  resetCheckpoint(name: string, position: number, lease: Lease): Promise<void>;
  /** Replaces `spec.name` by `shadow` atomically and sets checkpoint `name` to `position`. */
  swap(spec: ViewSpec, shadow: string, checkpointName: string, position: number, lease: Lease): Promise<void>;
  drop(view: string): Promise<void>;

  /** Takes the lease if free, expired, or already ours; renews it if ours. null = someone else holds it. */
  acquireLease(name: string, owner: string, ttlMs: number): Promise<Lease | null>;
  /** Asks the current holder to hand the lease over (it sees this on its next renewal and releases). */
  requestLease(name: string, owner: string): Promise<void>;
  /** Takes back `owner`'s request (a requester that gives up must not keep the holder from renewing). */
  withdrawRequest(name: string, owner: string): Promise<void>;
  /** Renews; returns false if the lease was lost or handed over on request. */
  renewLease(lease: Lease, ttlMs: number): Promise<boolean>;
  releaseLease(lease: Lease): Promise<void>;
  /** Deletes the leases named `prefix…` that nobody holds (released or expired); returns how many. */
  pruneLeases(prefix: string): Promise<number>;
  /** A writer for the shadows of a rebuild that writes behind, off the caller's thread; absent: the rebuild writes through `commit`. */
  shadowWriter?(): ShadowWriter;
}

/**
 * The loads and commits of a rebuild. `commit` may resolve before the batch is written (later
 * loads still see it); `flush` resolves once everything committed so far is written, and throws
 * the first failure (a lost lease, a full disk).
 */
export interface ShadowWriter extends Pick<ViewStore, 'load' | 'commit'> {
  /**
   * true: the writes run beside the fold (another thread), so maintaining the shadows' indexes
   * row by row costs the rebuild nothing; false: indexes are built once after the bulk load.
   */
  readonly indexesAsRowsArrive: boolean;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** One store: the log, its blobs and the views built from it. */
export interface Store {
  readonly kind: 'sqlite' | 'mongo';
  events: EventStore;
  blobs: BlobStore;
  views: ViewStore;
  close(): Promise<void>;
}
