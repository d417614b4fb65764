/**
 * Mail ids are derived from what makes two deliveries the same message and are kept in the log:
 * a change of how they are computed would store a retried message twice. These are the ids of
 * mailtrail's first release.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inboundMailId, sentMailId } from '../src/mail/ids.js';

test('mail ids stay what they were', () => {
  assert.equal(inboundMailId('0190a1b2-0000-7000-8000-000000000001', '<a@example.org>', 'ab'.repeat(32)), 'c29ba8b8-6587-59cb-a50c-d51f0eec6ff1');
  assert.equal(inboundMailId('m', null, 'cd'.repeat(32)), 'a40992a9-4a6c-5cce-95f7-a5f0f36c2bdc');
  assert.equal(sentMailId('m', '<1@2>', 'ef'.repeat(32), ['B@x.example', 'a@y.example', 'b@x.example']), '91d57380-8999-5f37-be61-bb4267e39cef');
});
