/**
 * npm run backup -- --out <file.tar.gz>
 * A consistent backup of the embedded store (event log, blobs) in one file, taken while the server
 * runs. Restore it with npm run restore. On MongoDB, says how to use mongodump instead.
 */
import { Progress } from '../src/cli/progress.js';
import { parseFlags, runWithoutStore, UsageError } from '../src/cli/run.js';
import { writeBackup } from '../src/ops/backup.js';
import { mongoBackupHint } from '../src/ops/command.js';

const USAGE = 'npm run backup -- --out <file.tar.gz>';

await runWithoutStore('backup', async ({ config, args }) => {
  const { out } = parseFlags(args, ['out'], USAGE);
  if (!out) throw new UsageError(`--out is required\nusage: ${USAGE}`);
  if (config.MONGODB_URI) throw new UsageError(mongoBackupHint(config.MONGODB_DB));
  console.error(`backing up ${config.DATA_DIR} to ${out}`);
  const started = Date.now();
  const bar = new Progress('backup');
  const result = await writeBackup(config.DATA_DIR, out, (done, total) => bar.update(done, total));
  bar.done();
  console.log(`backup:   ${out} (${(result.bytes / 1024 ** 2).toFixed(1)} MiB)`);
  console.log(`events:   ${result.events} (up to position ${result.head})`);
  console.log(`blobs:    ${result.blobs} in ${result.files.length - 1} pack(s)`);
  console.log(`seconds:  ${((Date.now() - started) / 1000).toFixed(2)}`);
});
