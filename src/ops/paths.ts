import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { LOG_FILE } from '../store/sqlite/index.js';

/**
 * Checks shared by the operator commands, so that a wrong path is a message saying what to do,
 * not a stack trace or an empty store created where DATA_DIR points by mistake.
 */

/** The embedded store's event log in `dataDir`; throws when there is none. */
export function requireEventLog(dataDir: string): string {
  const log = path.join(dataDir, LOG_FILE);
  if (!existsSync(log)) throw new Error(`no event log at ${log}; set DATA_DIR to the server's data folder (the one holding ${LOG_FILE} and blobs/)`);
  return log;
}

/** Throws unless the folder that will hold `out` exists. */
export function requireOutputFolder(out: string): void {
  const folder = path.dirname(path.resolve(out));
  if (!existsSync(folder) || !statSync(folder).isDirectory()) throw new Error(`${folder} is not a folder; create it first (writable by this user) or give --out a path in an existing folder`);
}
