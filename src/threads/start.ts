import { Worker } from 'node:worker_threads';

/**
 * A worker thread running one of mailtrail's TypeScript modules. Worker threads do not get the tsx
 * loader from `--import tsx` (privatenumber/tsx#354): the thread registers it before importing
 * the module.
 */
export function startModuleThread(moduleUrl: string, workerData: unknown): Worker {
  const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(moduleUrl)}); })`;
  return new Worker(boot, { eval: true, workerData });
}
