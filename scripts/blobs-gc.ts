/**
 * npm run blobs:gc [-- [--dry-run true] [--vacuum true]]
 * Frees the disk space of mail deleted for good: the blobs (raw message, bodies, attachments) that
 * only deleted mails and drafts name. Runs with the server stopped; embedded store only.
 */
import { Progress } from '../src/cli/progress.js';
import { parseFlags, runWithoutStore, UsageError } from '../src/cli/run.js';
import { requireEventLog } from '../src/ops/paths.js';
import { collectBlobs } from '../src/store/sqlite/blob-gc.js';

const USAGE = 'npm run blobs:gc [-- [--dry-run true] [--vacuum true]]';
const MiB = (bytes: number): string => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;

function yes(flags: Record<string, string>, name: string): boolean {
  const value = flags[name];
  if (value === undefined || value === 'false') return false;
  if (value === 'true') return true;
  throw new UsageError(`--${name} takes true or false\nusage: ${USAGE}`);
}

await runWithoutStore('blobs:gc', async ({ config, args }) => {
  const flags = parseFlags(args, ['dry-run', 'vacuum'], USAGE);
  const dryRun = yes(flags, 'dry-run');
  const vacuum = yes(flags, 'vacuum');
  if (config.MONGODB_URI) {
    throw new UsageError('blobs:gc works on the embedded store only; on MongoDB the blobs of deleted mail stay (see Known gaps in the README)');
  }
  requireEventLog(config.DATA_DIR);
  console.error(`${dryRun ? 'looking for' : 'freeing'} the blobs of mail deleted for good in ${config.DATA_DIR}`);
  const started = Date.now();
  const bars = new Map<string, Progress>();
  const result = collectBlobs(config.DATA_DIR, {
    dryRun,
    vacuum,
    onProgress: (phase, done, total) => {
      let bar = bars.get(phase);
      if (!bar) bars.set(phase, (bar = new Progress(phase)));
      bar.update(done, total);
    },
  });
  for (const bar of bars.values()) bar.done();
  const verb = dryRun ? 'would free' : 'freed';
  console.log(`deleted:  ${result.deletedMails} mails and drafts${result.pendingDeliveries ? ` (${result.pendingDeliveries} more kept: still to be delivered, by the relay or as local copies)` : ''}`);
  console.log(`blobs:    ${verb} ${result.blobs} (${MiB(result.inlineBytes)} in the database, ${MiB(result.packBytes)} in packs)`);
  if (!dryRun) console.log(`packs:    ${result.packsBefore.files} (${MiB(result.packsBefore.bytes)}) -> ${result.packsAfter.files} (${MiB(result.packsAfter.bytes)})`);
  console.log(`database: ${MiB(result.freeBytes)} of free pages${vacuum ? '' : ', reused by new mail (--vacuum true gives them back to the file system)'}`);
  console.log(`seconds:  ${((Date.now() - started) / 1000).toFixed(2)}`);
  if (dryRun) console.log('nothing was changed (--dry-run)');
});
