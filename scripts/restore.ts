/**
 * npm run restore -- --from <file.tar.gz> [--data-dir <folder>] [--force true]
 * Rebuilds a data folder of the embedded store from a backup and replays every view. The folder
 * (default DATA_DIR) must be empty or new unless --force true; stop the server that uses it first.
 */
import path from 'node:path';
import { allProjections } from '../projections/index.js';
import { Progress } from '../src/cli/progress.js';
import { parseFlags, runWithoutStore, UsageError } from '../src/cli/run.js';
import { restoreBackup } from '../src/ops/backup.js';
import { mongoBackupHint } from '../src/ops/command.js';

const USAGE = 'npm run restore -- --from <file.tar.gz> [--data-dir <folder>] [--force true]';

await runWithoutStore('restore', async ({ config, args }) => {
  const flags = parseFlags(args, ['from', 'data-dir', 'force'], USAGE);
  if (!flags.from) throw new UsageError(`--from is required\nusage: ${USAGE}`);
  if (flags.force !== undefined && flags.force !== 'true' && flags.force !== 'false') throw new UsageError(`--force takes true or false\nusage: ${USAGE}`);
  if (config.MONGODB_URI) throw new UsageError(mongoBackupHint(config.MONGODB_DB));
  const dataDir = path.resolve(flags['data-dir'] ?? config.DATA_DIR);
  console.error(`restoring ${flags.from} into ${dataDir}`);
  const unpacking = new Progress('unpack');
  const replaying = new Progress('replay');
  const result = await restoreBackup(flags.from, dataDir, {
    force: flags.force === 'true',
    projections: allProjections,
    onExtract: (done, total) => {
      unpacking.update(done, total);
      if (done === total) unpacking.done();
    },
    onReplay: ({ position, head }) => replaying.update(position, head),
  });
  replaying.update(result.replay.position, result.replay.position);
  replaying.done();
  console.log(`restored: ${dataDir}`);
  console.log(`backup:   taken ${result.manifest.createdAt}`);
  console.log(`events:   ${result.manifest.events} (up to position ${result.manifest.head})`);
  console.log(`blobs:    ${result.manifest.blobs}`);
  console.log(`views:    ${result.replay.views.join(', ')} (replayed in ${(result.replay.ms / 1000).toFixed(2)} s)`);
  console.log(`next:     start mailtrail with DATA_DIR=${dataDir}`);
});
