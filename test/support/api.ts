import assert from 'node:assert/strict';
import { TRPCClientError } from '@trpc/client';

/** Asserts that a call to the API fails with the tRPC error `code` (and a message matching `message`). */
export async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof TRPCClientError, `expected a tRPC error, got ${String(err)}`);
    assert.equal(err.data?.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}
