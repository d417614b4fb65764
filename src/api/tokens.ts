import { createHash } from 'node:crypto';
import { errors, jwtVerify, SignJWT } from 'jose';
import type { Store } from '../store/port.js';
import type { UserDoc } from '../../projections/users.js';

export interface AuthUser {
  id: string;
  email: string;
  name: string;
  role: 'user' | 'admin';
}

const ISSUER = 'mailtrail';

export function effectiveRole(user: Pick<UserDoc, 'role' | 'emailKey'>, adminEmails: string[]): 'user' | 'admin' {
  return user.role === 'admin' || adminEmails.includes(user.emailKey) ? 'admin' : 'user';
}

/**
 * A short fingerprint of the password hash a token was issued under: a password change (or reset by
 * an admin) gives the account a new hash, which ends every session signed in with the old one.
 */
const credentialsTag = (passwordHash: string): string => createHash('sha256').update(passwordHash).digest('base64url').slice(0, 16);

/** `expiresIn`: a duration such as "24h", or the expiry time in seconds since the epoch. */
export function signToken(user: AuthUser & Pick<UserDoc, 'passwordHash'>, secret: Uint8Array, expiresIn: string | number): Promise<string> {
  return new SignJWT({ email: user.email, pwd: credentialsTag(user.passwordHash) })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(user.id)
    .setIssuer(ISSUER)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(secret);
}

/**
 * The user a bearer token stands for, or null: wrong key, `alg: none`, a tampered payload, an
 * expired token, a user since disabled, or a password changed since the token was issued all give
 * null. The user is read from the view on every request, so either takes effect at once.
 */
export async function userFromToken(store: Store, token: string, secret: Uint8Array, adminEmails: string[]): Promise<AuthUser | null> {
  try {
    const { payload } = await jwtVerify(token, secret, { algorithms: ['HS256'], issuer: ISSUER });
    if (!payload.sub) return null;
    const user = (await store.views.get('users', payload.sub)) as UserDoc | null;
    if (!user || user.disabled || payload.pwd !== credentialsTag(user.passwordHash)) return null;
    return { id: user.id, email: user.email, name: user.name, role: effectiveRole(user, adminEmails) };
  } catch (error) {
    if (error instanceof errors.JOSEError) return null;
    throw error;
  }
}
