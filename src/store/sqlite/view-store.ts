import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { LeaseLostError, type Lease, type ListQuery, type ShadowWriter, type ViewCommit, type ViewDoc, type ViewSpec, type ViewStore } from '../port.js';
import { SqliteShadowWriter } from './shadow-writer.js';

/** A handoff request older than this is from a requester that died; it no longer blocks others. */
const REQUEST_STALE_MS = 60_000;
/** Ids per `IN (…)` lookup: well under SQLite's limit on bound parameters. */
const LOAD_CHUNK = 500;

export const VIEWS_SCHEMA = `
  CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    requested_by TEXT, requested_at INTEGER
  );`;

const ident = (name: string): string => {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`invalid view or field name: ${name}`);
  return `"${name}"`;
};
const table = (view: string): string => ident(`view_${view}`);
const column = (field: string): string => ident(`f_${field}`);

/** A document row: id, position, JSON text (null: tombstone), then the indexed fields' values. */
export type SerializedRow = [id: string, position: number, doc: string | null, ...values: (string | number | null)[]];
export interface SerializedCommit {
  view: string;
  rows: SerializedRow[];
  checkpoint: { name: string; position: number };
  lease: Lease;
}

type LeaseRow = { owner: string; token: number; expires_at: number; requested_by: string | null; requested_at: number | null };

/**
 * Views as tables of JSON documents, one row per document, with the fields queries filter and
 * sort on copied into indexed columns. A row keeps the position of the event that last changed
 * it; writes only ever move it forward, which makes every batch safe to apply twice.
 */
export class SqliteViewStore implements ViewStore {
  /** Indexed fields of each view this process has ensured (their columns must be written too). */
  private readonly fields = new Map<string, string[]>();

  /** Prepared statements by SQL text: preparing costs more than running most of them. */
  private readonly statements = new Map<string, Database.Statement>();

  /** Commits waiting for the next flush: those that arrive in the same tick share one transaction. */
  private pending: { commit: ViewCommit; resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(private readonly db: Database.Database) {}

  private prepare<P extends unknown[], R>(sql: string): Database.Statement<P, R> {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt as unknown as Database.Statement<P, R>;
  }

  private fieldsOf(view: string): string[] {
    const known = this.fields.get(view);
    if (known) return known;
    // A view created by another process (e.g. the replay script's shadow): read its columns.
    const cols = this.prepare<[], { name: string }>(`PRAGMA table_info(${table(view)})`).all();
    if (cols.length === 0) throw new Error(`view ${view} does not exist`);
    const fields = cols.filter((c) => c.name.startsWith('f_')).map((c) => c.name.slice(2));
    this.fields.set(view, fields);
    return fields;
  }

  async ensure(spec: ViewSpec): Promise<void> {
    this.ensureSync(spec);
  }

  private ensureSync(spec: ViewSpec): void {
    const cols = spec.indexed.map((f) => `${column(f)} ANY`).join(', ');
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS ${table(spec.name)} (id TEXT PRIMARY KEY, position INTEGER NOT NULL, doc TEXT${cols ? `, ${cols}` : ''})`,
    );
    // Indexes are matched by their columns, not by name: a shadow swapped in keeps the indexes (and
    // names) it was built with, so the swap need not build them again. A fresh name per index
    // keeps the next shadow's from colliding with them.
    const existing = new Set(
      this.prepare<[string], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?")
        .all(`view_${spec.name}`)
        .map(({ name }) => this.prepare<[string], { name: string }>('SELECT name FROM pragma_index_info(?) ORDER BY seqno').all(name).map((c) => c.name).join(',')),
    );
    for (const fields of spec.indexes) {
      if (existing.has([...fields.map((f) => `f_${f}`), 'id'].join(','))) continue;
      const name = ident(`view_${spec.name}_${randomBytes(4).toString('hex')}`);
      this.db.exec(`CREATE INDEX ${name} ON ${table(spec.name)} (${fields.map(column).join(', ')}, id)`);
    }
    this.fields.set(spec.name, spec.indexed);
  }

  async load(view: string, ids: string[]): Promise<Map<string, { doc: ViewDoc | null; position: number }>> {
    const out = new Map<string, { doc: ViewDoc | null; position: number }>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += LOAD_CHUNK) {
      const chunk = unique.slice(i, i + LOAD_CHUNK);
      const rows = this.prepare<string[], { id: string; position: number; doc: string | null }>(
          `SELECT id, position, doc FROM ${table(view)} WHERE id IN (${chunk.map(() => '?').join(', ')})`,
        )
        .all(...chunk);
      for (const row of rows) out.set(row.id, { doc: row.doc === null ? null : (JSON.parse(row.doc) as ViewDoc), position: row.position });
    }
    return out;
  }

  private holds(lease: Lease): boolean {
    return this.prepare<[string, string, number], { token: number }>('SELECT token FROM leases WHERE name = ? AND owner = ? AND token = ?')
      .get(lease.name, lease.owner, lease.token) !== undefined;
  }

  /**
   * Commits that arrive in the same tick (the projectors of a process woken by the same append,
   * the views of a replay batch) are written in one transaction; each is still fenced by its own
   * lease.
   */
  async commit(c: ViewCommit): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ commit: c, resolve, reject });
      if (this.pending.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    const serialized: SerializedCommit[] = [];
    const waiting: typeof batch = [];
    for (const p of batch) {
      try {
        serialized.push(this.serialize(p.commit));
        waiting.push(p);
      } catch (error) {
        // A view that does not exist: refused alone.
        p.reject(error);
      }
    }
    let outcomes: (Error | null)[];
    try {
      outcomes = this.writeFenced(serialized);
    } catch (error) {
      for (const p of waiting) p.reject(error);
      return;
    }
    waiting.forEach((p, i) => {
      const error = outcomes[i];
      if (error) p.reject(error);
      else p.resolve();
    });
  }

  /**
   * Writes serialized commits in one transaction, each fenced by its lease in a savepoint of its
   * own, so one that fails (a lost lease, a missing view) is refused alone: its error is in the
   * result, in its place. View rows and checkpoints commit together: a crash leaves both before or
   * both after. One transaction for many commits also writes a page they all touch (an index's
   * upper levels, a mailbox's row) to the WAL once, not once per commit.
   */
  writeFenced(commits: SerializedCommit[]): (Error | null)[] {
    const writeOne = this.db.transaction((s: SerializedCommit) => {
      if (!this.holds(s.lease)) throw new LeaseLostError(s.lease);
      this.write(s);
    });
    return this.db
      .transaction(() =>
        commits.map((s) => {
          try {
            writeOne(s);
            return null;
          } catch (error) {
            return error instanceof Error ? error : new Error(String(error));
          }
        }),
      )
      .immediate();
  }

  /** A commit as rows ready to write: documents as JSON text, indexed fields as column values. */
  serialize(c: ViewCommit): SerializedCommit {
    const fields = this.fieldsOf(c.view);
    const rows = c.docs.map(({ id, doc, position }): SerializedRow => [id, position, doc ? JSON.stringify(doc) : null, ...fields.map((f) => (doc ? indexValue(doc[f]) : null))]);
    return { view: c.view, rows, checkpoint: c.checkpoint, lease: c.lease };
  }

  shadowWriter(): ShadowWriter {
    return new SqliteShadowWriter(this, this.db.name);
  }

  private write(s: SerializedCommit): void {
    const cols = this.fieldsOf(s.view).map(column);
    const upsert = this.prepare(
      `INSERT INTO ${table(s.view)} (id, position, doc${cols.map((x) => `, ${x}`).join('')})
       VALUES (?, ?, ?${cols.map(() => ', ?').join('')})
       ON CONFLICT (id) DO UPDATE SET position = excluded.position, doc = excluded.doc${cols.map((x) => `, ${x} = excluded.${x}`).join('')}
       WHERE excluded.position > position`,
    );
    for (const row of s.rows) upsert.run(...row);
    this
      .prepare(
        `INSERT INTO checkpoints (name, position) VALUES (?, ?)
         ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)`,
      )
      .run(s.checkpoint.name, s.checkpoint.position);
  }

  async get(view: string, id: string): Promise<ViewDoc | null> {
    const row = this.prepare<[string], { doc: string | null }>(`SELECT doc FROM ${table(view)} WHERE id = ?`).get(id);
    return row?.doc ? (JSON.parse(row.doc) as ViewDoc) : null;
  }

  async list(view: string, q: ListQuery): Promise<ViewDoc[]> {
    const where = Object.keys(q.where).map((f) => `${column(f)} = ?`);
    const params: unknown[] = Object.values(q.where);
    const order = column(q.orderBy.field);
    const cmp = q.orderBy.direction === 'desc' ? '<' : '>';
    if (q.after) {
      // A row value lets SQLite seek the index to the cursor instead of scanning from the start.
      where.push(`(${order}, id) ${cmp} (?, ?)`);
      params.push(q.after.value, q.after.id);
    }
    where.push('doc IS NOT NULL');
    const dir = q.orderBy.direction === 'desc' ? 'DESC' : 'ASC';
    const rows = this.prepare<unknown[], { doc: string }>(
        `SELECT doc FROM ${table(view)} WHERE ${where.join(' AND ')} ORDER BY ${order} ${dir}, id ${dir} LIMIT ?`,
      )
      .all(...params, q.limit);
    return rows.map((r) => JSON.parse(r.doc) as ViewDoc);
  }

  async count(view: string, where: Record<string, string | number>): Promise<number> {
    const conditions = [...Object.keys(where).map((f) => `${column(f)} = ?`), 'doc IS NOT NULL'];
    const row = this.prepare<unknown[], { n: number }>(`SELECT count(*) AS n FROM ${table(view)} WHERE ${conditions.join(' AND ')}`).get(...Object.values(where));
    return row?.n ?? 0;
  }

  async all(view: string): Promise<ViewDoc[]> {
    return this.prepare<[], { doc: string }>(`SELECT doc FROM ${table(view)} WHERE doc IS NOT NULL ORDER BY id`)
      .all()
      .map((r) => JSON.parse(r.doc) as ViewDoc);
  }

  async checkpoint(name: string): Promise<number> {
    return this.prepare<[string], { position: number }>('SELECT position FROM checkpoints WHERE name = ?').get(name)?.position ?? 0;
  }

  async resetCheckpoint(name: string, position: number, lease: Lease): Promise<void> {
    this.db
      .transaction(() => {
        if (!this.holds(lease)) throw new LeaseLostError(lease);
        this.prepare('INSERT INTO checkpoints (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position').run(name, position);
      })
      .immediate();
  }

  async swap(spec: ViewSpec, shadow: string, checkpointName: string, position: number, lease: Lease): Promise<void> {
    this.db
      .transaction(() => {
        if (!this.holds(lease)) throw new LeaseLostError(lease);
        this.db.exec(`DROP TABLE IF EXISTS ${table(spec.name)}`);
        this.db.exec(`ALTER TABLE ${table(shadow)} RENAME TO ${table(spec.name)}`);
        // Builds only the indexes the shadow lacks (none, if the rebuild ensured them on the shadow first).
        this.ensureSync(spec);
        this
          .prepare('INSERT INTO checkpoints (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position')
          .run(checkpointName, position);
      })
      .immediate();
    this.fields.delete(shadow);
  }

  async drop(view: string): Promise<void> {
    this.db.exec(`DROP TABLE IF EXISTS ${table(view)}`);
    this.fields.delete(view);
  }

  async acquireLease(name: string, owner: string, ttlMs: number): Promise<Lease | null> {
    return this.db
      .transaction((): Lease | null => {
        const now = Date.now();
        const row = this.prepare<[string], LeaseRow>('SELECT * FROM leases WHERE name = ?').get(name);
        if (!row) {
          this.prepare('INSERT INTO leases (name, owner, token, expires_at) VALUES (?, ?, 1, ?)').run(name, owner, now + ttlMs);
          return { name, owner, token: 1 };
        }
        if (row.owner === owner && row.expires_at > now) {
          this.prepare('UPDATE leases SET expires_at = ? WHERE name = ?').run(now + ttlMs, name);
          return { name, owner, token: row.token };
        }
        const requestedByOther = row.requested_by !== null && row.requested_by !== owner && (row.requested_at ?? 0) > now - REQUEST_STALE_MS;
        if (row.expires_at > now || requestedByOther) return null;
        const token = row.token + 1;
        this
          .prepare('UPDATE leases SET owner = ?, token = ?, expires_at = ?, requested_by = NULL, requested_at = NULL WHERE name = ?')
          .run(owner, token, now + ttlMs, name);
        return { name, owner, token };
      })
      .immediate();
  }

  async requestLease(name: string, owner: string): Promise<void> {
    this.prepare('UPDATE leases SET requested_by = ?, requested_at = ? WHERE name = ?').run(owner, Date.now(), name);
  }

  async withdrawRequest(name: string, owner: string): Promise<void> {
    this.prepare('UPDATE leases SET requested_by = NULL, requested_at = NULL WHERE name = ? AND requested_by = ?').run(name, owner);
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<boolean> {
    return this.db
      .transaction((): boolean => {
        const row = this.prepare<[string], LeaseRow>('SELECT * FROM leases WHERE name = ?').get(lease.name);
        if (!row || row.owner !== lease.owner || row.token !== lease.token) return false;
        const now = Date.now();
        if (row.requested_by !== null && row.requested_by !== lease.owner && (row.requested_at ?? 0) > now - REQUEST_STALE_MS) {
          this.prepare('UPDATE leases SET expires_at = 0 WHERE name = ?').run(lease.name);
          return false;
        }
        this.prepare('UPDATE leases SET expires_at = ? WHERE name = ?').run(now + ttlMs, lease.name);
        return true;
      })
      .immediate();
  }

  async pruneLeases(prefix: string): Promise<number> {
    return this.prepare('DELETE FROM leases WHERE substr(name, 1, ?) = ? AND expires_at <= ?').run(prefix.length, prefix, Date.now()).changes;
  }

  async releaseLease(lease: Lease): Promise<void> {
    this.prepare('UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ? AND token = ?').run(lease.name, lease.owner, lease.token);
  }
}

function indexValue(v: unknown): string | number | null {
  if (typeof v === 'string' || typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  return null;
}
