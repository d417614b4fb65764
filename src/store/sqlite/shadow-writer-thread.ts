/** The worker thread of SqliteShadowWriter: writes serialized shadow commits in order. */
import { parentPort, workerData } from 'node:worker_threads';
import { openDatabase } from './database.js';
import type { ShadowWriteReply, ShadowWriteRequest } from './shadow-writer.js';
import { SqliteViewStore } from './view-store.js';

const port = parentPort!;
const views = new SqliteViewStore(openDatabase((workerData as { file: string }).file));

port.on('message', ({ n, commit }: ShadowWriteRequest) => {
  let reply: ShadowWriteReply = { n };
  try {
    views.commitSerialized(commit);
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    reply = { n, error: { name: e.name, message: e.message } };
  }
  port.postMessage(reply);
});
