// Test harness: an in-memory mongo-java-server (oplog enabled, so collection-level change streams work),
// or a real MongoDB when MONGODB_URI is set. Build the launcher first: bash test/mongo-java-server/build.sh
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface MongoHandle {
  uri: string;
  /** true when MONGODB_URI points at a real server; use uniqueDbName() so runs don't collide. */
  real: boolean;
  stop(): Promise<void>;
}

const SERVER_DIR = fileURLToPath(new URL('../mongo-java-server/', import.meta.url));
const LAUNCHER_CLASS = fileURLToPath(
  new URL('../mongo-java-server/target/classes/MongoJavaServerLauncher.class', import.meta.url),
);
const BUILD_HINT = 'run `bash test/mongo-java-server/build.sh` (needs java and mvn) to fetch the jars and compile the launcher';
const READY_TIMEOUT_MS = 30_000;

/** A database name that is unique per call: `<prefix>_<time>_<random>` (≤ 63 chars, safe characters). */
export function uniqueDbName(prefix: string): string {
  const safe = prefix.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40);
  return `${safe}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

export async function startMongo(): Promise<MongoHandle> {
  const external = process.env.MONGODB_URI;
  if (external) return { uri: external, real: true, stop: async () => {} };

  if (!existsSync(LAUNCHER_CLASS)) {
    throw new Error(`mongo-java-server launcher not built (${LAUNCHER_CLASS} missing): ${BUILD_HINT}`);
  }
  const child = spawn(
    'java',
    ['-Xmx512m', '-cp', 'target/lib/*:target/classes', 'MongoJavaServerLauncher', '127.0.0.1', '0'],
    { cwd: SERVER_DIR, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  // 'exit' may not fire when the spawn itself fails, so also settle on 'error'.
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000); // keep draining; remember the tail for error messages
  });

  let port: number;
  try {
    port = await waitForReady(child, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }

  // Don't let a forgotten stop() keep the test process alive. When this process exits, the JVM's
  // stdin closes and the launcher exits too.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as Socket).unref();

  let stopping: Promise<void> | undefined;
  return {
    uri: `mongodb://127.0.0.1:${port}/?directConnection=true`,
    real: false,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const force = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(force);
        }
      })();
      return stopping;
    },
  };
}

function waitForReady(child: ChildProcessWithoutNullStreams, stderr: () => string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let out = '';
    const fail = (msg: string): void => {
      cleanup();
      const tail = stderr().trim();
      reject(new Error(`mongo-java-server: ${msg}. If the jars or classes are missing, ${BUILD_HINT}.` +
        (tail ? `\nJVM stderr:\n${tail}` : '')));
    };
    const onData = (chunk: string): void => {
      out += chunk;
      const m = /^READY (\d+)\r?$/m.exec(out);
      if (m) {
        cleanup();
        resolve(Number(m[1]));
      }
    };
    const onError = (err: Error): void => fail(`could not start java (${err.message})`);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      fail(`JVM exited before READY (code ${code}, signal ${signal})`);
    const timer = setTimeout(() => fail(`no "READY <port>" line within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.off('error', onError);
      child.off('exit', onExit);
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('error', onError);
    child.once('exit', onExit);
  });
}
