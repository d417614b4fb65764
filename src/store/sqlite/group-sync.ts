import { open, type FileHandle } from 'node:fs/promises';

/**
 * Group fsync of one file. Every caller that wrote before calling `sync()` is answered after an
 * fdatasync that started after its write; callers that arrive while one is running share the
 * next one. The fsync runs on libuv's thread pool, so the event loop keeps serving sessions
 * (and committing the next batch) meanwhile.
 */
export class GroupSync {
  private handle: FileHandle | null = null;
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(private readonly path: string) {}

  sync(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.running) return this.start();
    // The running fsync may have started before the caller's write: it needs the next one.
    this.queued = this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<void> {
    const run = (async () => {
      this.handle ??= await open(this.path, 'r+');
      await this.handle.datasync();
    })();
    this.running = run.finally(() => {
      if (this.running === tracked) this.running = null;
    });
    const tracked = this.running;
    return tracked;
  }

  async close(): Promise<void> {
    await this.queued?.catch(() => undefined);
    await this.running?.catch(() => undefined);
    await this.handle?.close();
    this.handle = null;
  }
}
