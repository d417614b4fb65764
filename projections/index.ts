import type { Projection } from '../src/projection/projection.js';
import { aliases } from './aliases.js';
import { domains } from './domains.js';
import { mailboxes } from './mailboxes.js';
import { mails } from './mails.js';
import { mtaSts } from './mta-sts.js';
import { outbox } from './outbox.js';
import { users } from './users.js';

export { aliases, domains, mailboxes, mails, mtaSts, outbox, users };

/** Every read model the server keeps; `npm run replay` rebuilds them from the log. */
export const allProjections: Projection[] = [users, mailboxes, mails, domains, outbox, mtaSts, aliases];
