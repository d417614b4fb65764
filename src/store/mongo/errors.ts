import { MongoBulkWriteError, MongoServerError } from 'mongodb';

export interface IndexRef {
  name: string;
  key: Record<string, 1>;
}

const ID_INDEX: IndexRef = { name: '_id_', key: { _id: 1 } };

/**
 * True if `err` is a duplicate-key error (E11000), on `index` if given. mongo-java-server's E11000
 * has no keyPattern, but it and MongoDB both name the index in the message.
 */
export function isDuplicateKey(err: unknown, index?: IndexRef): boolean {
  if (!(err instanceof MongoServerError) || err.code !== 11000) return false;
  if (!index) return true;
  const named = /index: (\S+) dup key/.exec(err.message)?.[1];
  if (named !== undefined) return named === index.name;
  return Object.keys(err.keyPattern ?? {}).join() === Object.keys(index.key).join();
}

/** Rethrows a bulk write error unless every write that failed did so on a duplicate key (and all were durable). */
export function ignoreDuplicates(err: unknown): void {
  if (err instanceof MongoBulkWriteError && !err.result.getWriteConcernError()) {
    const failed = [err.writeErrors].flat();
    if (failed.length > 0 && failed.every((e) => e.code === 11000)) return;
  }
  throw err;
}

/** Runs an upsert again if it lost the race to insert the same `_id` (older servers don't retry that). */
export async function upsertRetry<T>(upsert: () => Promise<T>): Promise<T> {
  try {
    return await upsert();
  } catch (err) {
    if (!isDuplicateKey(err, ID_INDEX)) throw err;
    return upsert();
  }
}

/** Creating a collection that exists. */
export function isNamespaceExists(err: unknown): boolean {
  return err instanceof MongoServerError && err.code === 48;
}

/** Dropping or renaming a collection that does not exist (code 26; mongo-java-server sends no code). */
export function isNamespaceNotFound(err: unknown): boolean {
  return err instanceof MongoServerError && (err.code === 26 || err.message === 'ns not found');
}
