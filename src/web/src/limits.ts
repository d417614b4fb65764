/**
 * The largest attachment the server takes (per file): MAX_ATTACHMENT_SIZE's default. The API does
 * not publish the configured value yet; the server checks it anyway and its refusal names the limit.
 */
export const MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024;
