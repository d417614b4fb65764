import type { Collection, Db, Filter, Sort } from 'mongodb';
import { LeaseLostError, type Lease, type ListQuery, type ViewCommit, type ViewDoc, type ViewSpec, type ViewStore } from '../port.js';
import { ignoreDuplicates, isDuplicateKey, isNamespaceExists, isNamespaceNotFound, upsertRetry } from './errors.js';

/** A handoff request older than this is from a requester that died; it no longer blocks others. */
const REQUEST_STALE_MS = 60_000;

/** One view document; `doc` null is a tombstone. Indexes and queries use `doc.<field>` itself, so commit() needs no spec. */
interface ViewRow {
  _id: string;
  position: number;
  doc: ViewDoc | null;
}

interface LeaseDoc {
  _id: string;
  owner: string;
  token: number;
  /** Epoch ms, from the app's clock: mongo-java-server has no `$$NOW` in updates. */
  expiresAt: number;
  requestedBy?: string | null;
  requestedAt?: number | null;
}

const collectionOf = (view: string): string => `view_${view}`;
const field = (name: string): string => `doc.${name}`;

/** Matches leases that nobody but `owner` has asked for in the last REQUEST_STALE_MS. */
const noRivalRequest = (owner: string, now: number): Filter<LeaseDoc> => ({
  $or: [{ requestedBy: { $in: [null, owner] } }, { requestedAt: { $lt: now - REQUEST_STALE_MS } }],
});

/**
 * Views as collections `view_<name>` of `{ _id, position, doc }`. A document keeps the position of
 * the event that last changed it and is only replaced by a later one, so every batch is safe to
 * apply twice; that is what stands in for a transaction around documents and checkpoint.
 */
export class MongoViewStore implements ViewStore {
  private readonly leases: Collection<LeaseDoc>;
  private readonly checkpoints: Collection<{ _id: string; position: number }>;

  constructor(private readonly db: Db) {
    this.leases = db.collection('leases');
    this.checkpoints = db.collection('checkpoints');
  }

  private view(name: string): Collection<ViewRow> {
    return this.db.collection(collectionOf(name));
  }

  async ensure(spec: ViewSpec): Promise<void> {
    try {
      await this.db.createCollection(collectionOf(spec.name));
    } catch (err) {
      if (!isNamespaceExists(err)) throw err;
    }
    if (spec.indexes.length === 0) return;
    await this.view(spec.name).createIndexes(
      spec.indexes.map((fields) => ({ key: { ...Object.fromEntries(fields.map((f) => [field(f), 1])), _id: 1 } })),
    );
  }

  async load(view: string, ids: string[]): Promise<Map<string, { doc: ViewDoc | null; position: number }>> {
    const rows = await this.view(view).find({ _id: { $in: [...new Set(ids)] } }).toArray();
    return new Map(rows.map((r) => [r._id, { doc: r.doc, position: r.position }]));
  }

  async commit(c: ViewCommit): Promise<void> {
    await this.assertLease(c.lease);
    if (c.docs.length > 0) {
      try {
        await this.view(c.view).bulkWrite(
          c.docs.map(({ id, doc, position }) => ({
            replaceOne: { filter: { _id: id, position: { $lt: position } }, replacement: { position, doc }, upsert: true },
          })),
          { ordered: false },
        );
      } catch (err) {
        // The filter missed an existing document, so the upsert collided on _id: it is already at or past this position.
        ignoreDuplicates(err);
      }
    }
    await upsertRetry(() =>
      this.checkpoints.updateOne({ _id: c.checkpoint.name }, { $max: { position: c.checkpoint.position } }, { upsert: true }),
    );
  }

  async get(view: string, id: string): Promise<ViewDoc | null> {
    return (await this.view(view).findOne({ _id: id }))?.doc ?? null;
  }

  async list(view: string, q: ListQuery): Promise<ViewDoc[]> {
    if (q.limit <= 0) return []; // a Mongo limit of 0 means none
    const order = field(q.orderBy.field);
    const dir = q.orderBy.direction === 'desc' ? -1 : 1;
    const past = dir === -1 ? '$lt' : '$gt';
    const filter: Filter<ViewRow> = { doc: { $ne: null } };
    for (const [f, value] of Object.entries(q.where)) filter[field(f)] = value;
    if (q.after) filter.$or = [{ [order]: { [past]: q.after.value } }, { [order]: q.after.value, _id: { [past]: q.after.id } }];
    const sort: Sort = { [order]: dir, _id: dir };
    const rows = await this.view(view).find(filter, { sort, limit: q.limit }).toArray();
    return rows.flatMap((r) => r.doc ?? []);
  }

  async count(view: string, where: Record<string, string | number>): Promise<number> {
    const filter: Filter<ViewRow> = { doc: { $ne: null } };
    for (const [f, value] of Object.entries(where)) filter[field(f)] = value;
    return this.view(view).countDocuments(filter);
  }

  async all(view: string): Promise<ViewDoc[]> {
    const rows = await this.view(view).find({ doc: { $ne: null } }, { sort: { _id: 1 } }).toArray();
    return rows.flatMap((r) => r.doc ?? []);
  }

  async checkpoint(name: string): Promise<number> {
    return (await this.checkpoints.findOne({ _id: name }))?.position ?? 0;
  }

  async resetCheckpoint(name: string, position: number, lease: Lease): Promise<void> {
    await this.assertLease(lease);
    await upsertRetry(() => this.checkpoints.updateOne({ _id: name }, { $set: { position } }, { upsert: true }));
  }

  async swap(spec: ViewSpec, shadow: string, checkpointName: string, position: number, lease: Lease): Promise<void> {
    await this.assertLease(lease);
    await this.db.renameCollection(collectionOf(shadow), collectionOf(spec.name), { dropTarget: true });
    await this.ensure(spec);
    // After the rename: a crash in between leaves the old checkpoint, and replaying from it changes nothing.
    await upsertRetry(() => this.checkpoints.updateOne({ _id: checkpointName }, { $set: { position } }, { upsert: true }));
  }

  async drop(view: string): Promise<void> {
    try {
      await this.view(view).drop();
    } catch (err) {
      if (!isNamespaceNotFound(err)) throw err;
    }
  }

  async acquireLease(name: string, owner: string, ttlMs: number): Promise<Lease | null> {
    const now = Date.now();
    // Always returnDocument 'before': mongo-java-server's 'after' may already show a concurrent update.
    const renewed = await this.leases.findOneAndUpdate(
      { _id: name, owner, expiresAt: { $gt: now } },
      { $set: { expiresAt: now + ttlMs } },
      { returnDocument: 'before' },
    );
    if (renewed) return { name, owner, token: renewed.token };
    try {
      // Free or expired (a handoff sets it to expired), and not promised to someone else.
      const before = await this.leases.findOneAndUpdate(
        { _id: name, expiresAt: { $lte: now }, ...noRivalRequest(owner, now) },
        { $set: { owner, expiresAt: now + ttlMs, requestedBy: null, requestedAt: null }, $inc: { token: 1 } },
        { upsert: true, returnDocument: 'before' },
      );
      return { name, owner, token: (before?.token ?? 0) + 1 };
    } catch (err) {
      // The filter missed an existing lease, so the upsert collided on _id: someone else holds it.
      if (isDuplicateKey(err)) return null;
      throw err;
    }
  }

  async requestLease(name: string, owner: string): Promise<void> {
    await this.leases.updateOne({ _id: name }, { $set: { requestedBy: owner, requestedAt: Date.now() } });
  }

  async withdrawRequest(name: string, owner: string): Promise<void> {
    await this.leases.updateOne({ _id: name, requestedBy: owner }, { $set: { requestedBy: null, requestedAt: null } });
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const held = { _id: lease.name, owner: lease.owner, token: lease.token };
    const renewed = await this.leases.updateOne({ ...held, ...noRivalRequest(lease.owner, now) }, { $set: { expiresAt: now + ttlMs } });
    if (renewed.matchedCount === 1) return true;
    // Lost, or asked for: hand it over (a no-op if it is no longer ours).
    await this.leases.updateOne(held, { $set: { expiresAt: 0 } });
    return false;
  }

  async pruneLeases(prefix: string): Promise<number> {
    const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    return (await this.leases.deleteMany({ _id: { $regex: `^${escaped}` }, expiresAt: { $lte: Date.now() } })).deletedCount;
  }

  async releaseLease(lease: Lease): Promise<void> {
    await this.leases.updateOne({ _id: lease.name, owner: lease.owner, token: lease.token }, { $set: { expiresAt: 0 } });
  }

  private async assertLease(lease: Lease): Promise<void> {
    const held = await this.leases.findOne({ _id: lease.name, owner: lease.owner, token: lease.token }, { projection: { _id: 1 } });
    if (!held) throw new LeaseLostError(lease);
  }
}
