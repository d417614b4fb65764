import 'dotenv/config';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { requireEventLog } from '../ops/paths.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/port.js';

export class UsageError extends Error {}

// `npm run audit … | head`: the reader has gone, which is no failure of the command.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

/**
 * Runs an operator command with the server's configuration and store; turns failures into a
 * short message that says what to do next, and an exit code. `existingStore`: a command that
 * reads what the server stored refuses a DATA_DIR without an event log rather than create an
 * empty store there (a typo in DATA_DIR would otherwise answer "nothing found").
 */
export async function runCommand(
  name: string,
  main: (ctx: { config: Config; store: Store; args: string[] }) => Promise<void>,
  opts: { existingStore?: boolean } = {},
): Promise<void> {
  let store: Store | null = null;
  try {
    const config = loadConfig();
    if (opts.existingStore && !config.MONGODB_URI) requireEventLog(config.DATA_DIR);
    store = await openStore(config);
    await main({ config, store, args: process.argv.slice(2) });
  } catch (error) {
    reportFailure(name, error);
  } finally {
    await store?.close();
  }
}

/**
 * `runCommand` for commands that must not open the configured store: backup and restore work on
 * the files themselves (opening the store would create an empty one where DATA_DIR is wrong), the
 * DNS commands need no store at all.
 */
export async function runWithoutStore(name: string, main: (ctx: { config: Config; args: string[] }) => Promise<void>): Promise<void> {
  try {
    await main({ config: loadConfig(), args: process.argv.slice(2) });
  } catch (error) {
    reportFailure(name, error);
  }
}

function reportFailure(name: string, error: unknown): void {
  if (error instanceof ConfigError) console.error(`${name}: ${error.message}\nFix the variables above (see .env.example).`);
  else if (error instanceof UsageError) console.error(`${name}: ${error.message}`);
  else console.error(`${name}: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}

/** `--key value` pairs; unknown keys are a usage error. */
export function parseFlags(args: string[], known: string[], usage: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const key = arg.startsWith('--') ? arg.slice(2) : null;
    const value = args[i + 1];
    if (key === null || !known.includes(key) || value === undefined || value.startsWith('--')) {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}\nusage: ${usage}`);
    }
    out[key] = value;
    i++;
  }
  return out;
}

/** `parseFlags` for scripts outside `runCommand` (benchmarks): a usage error ends the process with exit code 2. */
export function parseFlagsOrExit(args: string[], known: string[], usage: string): Record<string, string> {
  try {
    return parseFlags(args, known, usage);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    process.exit(2);
  }
}
