/**
 * npm run user:add -- --email a@example.com --name "A" [--password …] [--admin true]
 * npm run user:passwd -- --email a@example.com [--password …]
 * npm run user:disable -- --email a@example.com
 * Account changes from the shell, as events in the log (reserved addresses such as postmaster@
 * are created this way). Without --password the password is read from standard input.
 */
import { createInterface } from 'node:readline/promises';
import { v7 as uuidv7 } from 'uuid';
import { AddressTakenError, changePassword, disableAccount, NoSuchUserError, PLAIN_ADDRESS, registerAccount } from '../src/accounts/accounts.js';
import { isLocalDomain } from '../src/accounts/domains.js';
import { parseFlags, runCommand, UsageError } from '../src/cli/run.js';
import type { Meta } from '../src/events/envelope.js';

const action = process.argv[2];
const USAGE = {
  add: 'npm run user:add -- --email <address> --name <name> [--password <password>] [--admin true]',
  passwd: 'npm run user:passwd -- --email <address> [--password <password>]',
  disable: 'npm run user:disable -- --email <address>',
}[action ?? ''];

/** A line typed at a terminal without echoing it (nor leaving it in the scrollback); null if cancelled with Ctrl-C. */
function readHiddenLine(): Promise<string | null> {
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  let typed = '';
  return new Promise((resolve) => {
    const done = (line: string | null): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      resolve(line);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done(typed);
        if (ch === '\u0003') return done(null);
        typed = ch === '\u007f' || ch === '\b' ? typed.slice(0, -1) : typed + ch;
      }
    };
    stdin.on('data', onData);
  });
}

async function readPassword(given: string | undefined): Promise<string> {
  let password = given;
  if (password === undefined) {
    process.stderr.write('password: ');
    if (process.stdin.isTTY) {
      const typed = await readHiddenLine();
      if (typed === null) throw new UsageError('cancelled');
      password = typed;
    } else {
      const rl = createInterface({ input: process.stdin, terminal: false });
      password = (await rl[Symbol.asyncIterator]().next()).value as string | undefined;
      rl.close();
    }
  }
  if (!password || password.length < 8 || Buffer.byteLength(password) > 72) throw new UsageError('the password must be 8 to 72 bytes long');
  return password;
}

process.argv.splice(2, 1);
await runCommand(`user:${action}`, async ({ config, store, args }) => {
  if (!USAGE) throw new UsageError('usage: npm run user:add | user:passwd | user:disable -- --email <address> …');
  const flags = parseFlags(args, { add: ['email', 'name', 'password', 'admin'], passwd: ['email', 'password'], disable: ['email'] }[action as 'add'], USAGE);
  if (flags.admin !== undefined && flags.admin !== 'true' && flags.admin !== 'false') throw new UsageError(`--admin must be true or false\nusage: ${USAGE}`);
  const email = flags.email;
  if (!email || !PLAIN_ADDRESS.test(email)) throw new UsageError(`--email must be a plain address\nusage: ${USAGE}`);
  const meta: Meta = { correlationId: uuidv7(), causationId: null, actor: { kind: 'system', id: `cli:${process.env.USER ?? 'operator'}` } };
  try {
    if (action === 'add') {
      if (!flags.name) throw new UsageError(`--name is required\nusage: ${USAGE}`);
      if (!(await isLocalDomain(store, config.DEFAULT_DOMAIN, email.split('@')[1]!))) {
        throw new UsageError(`${email.split('@')[1]} is not a local domain; use DEFAULT_DOMAIN or add it with domains.add first`);
      }
      const password = await readPassword(flags.password);
      const account = await registerAccount(store, { email, name: flags.name, password, role: flags.admin === 'true' ? 'admin' : 'user' }, { bcryptCost: config.BCRYPT_COST, meta });
      console.log(`created ${email} (user ${account.user.id}, mailbox ${account.mailboxId}${account.user.role === 'admin' ? ', admin' : ''})`);
    } else if (action === 'passwd') {
      await changePassword(store, email, await readPassword(flags.password), { bcryptCost: config.BCRYPT_COST, meta });
      console.log(`password of ${email} changed`);
    } else {
      const position = await disableAccount(store, email, meta);
      console.log(position === null ? `${email} was disabled already` : `${email} disabled: it can no longer log in or submit mail`);
    }
  } catch (error) {
    if (error instanceof AddressTakenError || error instanceof NoSuchUserError) throw new UsageError(error.message);
    throw error;
  }
});
