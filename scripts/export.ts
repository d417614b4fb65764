/**
 * npm run export -- --mailbox <address> --format mbox|eml --out <path>
 * A mailbox's mails as raw MIME, for leaving or migrating: one mbox file (mboxrd), or a folder
 * with one .eml file per mail. Reads the mails view: run it on a server whose views are caught up.
 */
import { findMailboxByAddress } from '../src/accounts/accounts.js';
import { Progress } from '../src/cli/progress.js';
import { parseFlags, runCommand, UsageError } from '../src/cli/run.js';
import { exportMailbox } from '../src/ops/export.js';

const USAGE = 'npm run export -- --mailbox <address> --format mbox|eml --out <file or folder>';

await runCommand('export', async ({ store, args }) => {
  const flags = parseFlags(args, ['mailbox', 'format', 'out'], USAGE);
  if (!flags.mailbox || !flags.out) throw new UsageError(`--mailbox and --out are required\nusage: ${USAGE}`);
  const format = flags.format ?? 'mbox';
  if (format !== 'mbox' && format !== 'eml') throw new UsageError(`--format is mbox or eml, not ${JSON.stringify(format)}\nusage: ${USAGE}`);
  const mailbox = await findMailboxByAddress(store, flags.mailbox);
  if (!mailbox) throw new UsageError(`no mailbox ${flags.mailbox}; check the address (case does not matter), or run npm run replay if the views are behind`);
  console.error(`exporting ${mailbox.address} as ${format} to ${flags.out}`);
  const bar = new Progress('export');
  const result = await exportMailbox(store, mailbox, format, flags.out, (done, total) => bar.update(done, total));
  bar.done();
  console.log(`exported: ${result.mails} mails (${(result.bytes / 1024 ** 2).toFixed(1)} MiB) to ${flags.out}`);
  if (result.drafts > 0) console.log(`skipped:  ${result.drafts} drafts (a draft has no MIME message until it is sent)`);
}, { existingStore: true });
