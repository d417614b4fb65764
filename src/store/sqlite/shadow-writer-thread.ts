/** The worker thread of SqliteShadowWriter: writes serialized shadow commits in order. */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { openDatabase } from './database.js';
import type { ShadowWriteReply, ShadowWriteRequest } from './shadow-writer.js';
import { SqliteViewStore } from './view-store.js';

const port = parentPort!;
const views = new SqliteViewStore(openDatabase((workerData as { file: string }).file));

port.on('message', (first: ShadowWriteRequest) => {
  // Every commit already queued goes into the same transaction: far fewer WAL writes of the pages
  // that each commit touches again, and the order is kept.
  const requests = [first];
  for (let next = receiveMessageOnPort(port); next; next = receiveMessageOnPort(port)) requests.push(next.message as ShadowWriteRequest);
  let outcomes: (Error | null)[];
  try {
    outcomes = views.writeFenced(requests.map((r) => r.commit));
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    outcomes = requests.map(() => e);
  }
  requests.forEach(({ n }, i) => {
    const e = outcomes[i];
    const reply: ShadowWriteReply = e ? { n, error: { name: e.name, message: e.message } } : { n };
    port.postMessage(reply);
  });
});
