import { z } from 'zod';

/** Zod types for environment variables, shared by every settings schema. */

export const port = z.coerce.number().int().min(0).max(65535);
export const positiveInt = z.coerce.number().int().min(1);

/** true/false/1/0 (any case); anything else is an error naming the variable. */
export const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0'].includes(v), { message: 'must be true, false, 1 or 0' })
  .transform((v) => v === 'true' || v === '1');

export const hostName = z.string().regex(/^[A-Za-z0-9.-]+$/, 'must be a host name such as mail.example.com');
