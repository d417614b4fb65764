/**
 * A second process writing blobs into a DATA_DIR (for the two-writers durability test): puts
 * `count` × 3 blobs and prints each sha256 once it is stored.
 */
import { openSqliteStore } from '../../src/store/sqlite/index.js';

const [dataDir, tag, count] = process.argv.slice(2) as [string, string, string];
const store = await openSqliteStore({ dataDir });
for (let i = 0; i < Number(count); i++) {
  // One small blob (kept in the index row) and two past INLINE_MAX (in this process's pack).
  const refs = await Promise.all([0, 1, 2].map((k) => store.blobs.put(Buffer.from(`${tag} blob ${i}.${k} `.repeat(k === 0 ? 50 + i : 2100 + i)))));
  process.stdout.write(refs.map((r) => `${r.sha256}\n`).join(''));
}
await store.close();
