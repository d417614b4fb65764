import 'dotenv/config';
import { ConfigError, loadConfig, type Config } from '../config.js';

/**
 * `runCommand` (src/cli/run.ts) for the commands that must not open the configured store: backup
 * and restore work on the files themselves (opening the store would create an empty one where
 * DATA_DIR is wrong), the DNS commands need no store at all. Same messages, same exit code.
 */
export async function runWithoutStore(name: string, main: (ctx: { config: Config; args: string[] }) => Promise<void>): Promise<void> {
  try {
    await main({ config: loadConfig(), args: process.argv.slice(2) });
  } catch (error) {
    if (error instanceof ConfigError) console.error(`${name}: ${error.message}\nFix the variables above (see .env.example).`);
    else console.error(`${name}: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  }
}

/** What backup and restore say when the server runs on MongoDB, which they do not cover. */
export function mongoBackupHint(db: string): string {
  const dump = (collection: string): string => `  mongodump --uri "$MONGODB_URI" --db ${db} --collection ${collection} --gzip --archive=${collection}.gz`;
  return [
    'MONGODB_URI is set, and this command covers the embedded store only. On MongoDB, back up with',
    'mongodump, in this order (each one then covers everything the ones before it refer to):',
    ...['events', 'counters', 'blobs.files', 'blobs.chunks'].map(dump),
    'restore the four with mongorestore --gzip --archive=<file>, then rebuild the views: npm run replay',
    '(docs/operations.md, "Backup and restore on MongoDB").',
  ].join('\n');
}
