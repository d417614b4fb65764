/**
 * npm run alias:add -- --address info@example.com --mailbox ann@example.com
 * npm run alias:remove -- --address info@example.com
 * npm run alias:list
 * Aliases from the shell, as events in the log (the API's aliases.add/remove/list do the same).
 */
import { v7 as uuidv7 } from 'uuid';
import { aliases as aliasesView, type AliasDoc } from '../projections/aliases.js';
import { domains } from '../projections/domains.js';
import { mailboxes, type MailboxDoc } from '../projections/mailboxes.js';
import { addAlias, removeAlias } from '../src/accounts/aliases.js';
import { parseFlags, runCommand, UsageError } from '../src/cli/run.js';
import { CommandError } from '../src/compose/decide.js';
import type { Meta } from '../src/events/envelope.js';
import { catchUpViews } from '../src/projection/catch-up.js';

const action = process.argv[2];
const USAGE = {
  add: 'npm run alias:add -- --address <alias> --mailbox <address of the mailbox>',
  remove: 'npm run alias:remove -- --address <alias>',
  list: 'npm run alias:list',
}[action ?? ''];

process.argv.splice(2, 1);
await runCommand(`alias:${action}`, async ({ config, store, args }) => {
  if (!USAGE) throw new UsageError('usage: npm run alias:add | alias:remove | alias:list -- …');
  const flags = parseFlags(args, { add: ['address', 'mailbox'], remove: ['address'], list: [] }[action as 'add'], USAGE);
  const meta: Meta = { correlationId: uuidv7(), causationId: null, actor: { kind: 'system', id: `cli:${process.env.USER ?? 'operator'}` } };
  // The commands read these views: with the server stopped they may lag the log (a user:add just now).
  await catchUpViews(store, [mailboxes, domains, aliasesView]);
  try {
    if (action === 'list') {
      const aliases = (await store.views.all('aliases')) as AliasDoc[];
      if (aliases.length === 0) console.log('no aliases');
      for (const a of aliases) console.log(`${a.address} -> ${((await store.views.get('mailboxes', a.mailboxId)) as MailboxDoc | null)?.address ?? a.mailboxId}`);
      return;
    }
    if (!flags.address) throw new UsageError(`--address is required\nusage: ${USAGE}`);
    if (action === 'add') {
      if (!flags.mailbox) throw new UsageError(`--mailbox is required\nusage: ${USAGE}`);
      const { alias } = await addAlias(store, config.DEFAULT_DOMAIN, { address: flags.address, mailbox: flags.mailbox }, meta);
      console.log(`${alias.address} now leads to ${alias.mailbox}`);
    } else {
      await removeAlias(store, flags.address, meta);
      console.log(`${flags.address} removed`);
    }
  } catch (error) {
    if (error instanceof CommandError) throw new UsageError(error.message);
    throw error;
  }
});
